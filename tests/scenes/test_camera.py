"""Pinhole camera: projection and back-projection are inverses; geometry matches the spec."""

from __future__ import annotations

import numpy as np
import pytest

from scenes.camera import PinholeCamera
from scenes.spec import CameraSpec


def _cam(**kw) -> PinholeCamera:
    base = dict(name="c", pos=(1.0, 0.2, 0.8), lookat=(0.5, 0.0, 0.0), fov=50, resolution=(160, 120))
    base.update(kw)
    return PinholeCamera.from_spec(CameraSpec(**base))


def test_lookat_point_projects_to_image_centre():
    cam = _cam()
    uv, depth = cam.project(np.array([[0.5, 0.0, 0.0]]))
    np.testing.assert_allclose(uv[0], [80.0, 60.0], atol=1e-9)
    assert depth[0] == pytest.approx(np.linalg.norm(np.subtract((1.0, 0.2, 0.8), (0.5, 0.0, 0.0))))


def test_vertical_fov_spans_the_image_height():
    cam = _cam(pos=(0, 0, 1), lookat=(0, 0, 0), up=(1, 0, 0), fov=90, resolution=(100, 100))
    # at distance 1 a 90 degree vertical fov covers +-1 m: the image's top edge row v=0
    uv, _ = cam.project(np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(sorted(uv[:, 1]), [0.0, 100.0], atol=1e-9)


def test_backprojection_inverts_projection():
    cam = _cam()
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(0.3, 0.7, 20), rng.uniform(-0.2, 0.2, 20), np.full(20, 0.025)])
    uv, _ = cam.project(pts)
    back = cam.backproject_to_plane(uv, 0.025)
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_image_right_is_camera_x_and_down_is_y():
    cam = _cam(pos=(0, 0, 1), lookat=(0, 0, 0), up=(0, 1, 0), resolution=(64, 64))
    uv, _ = cam.project(np.array([[0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]))
    # a map view from above with world +y up the image: +y goes to smaller v, +x to larger u
    assert uv[1, 1] < 32 and uv[0, 0] > 32
