"""A camera mounted on the hand (a wrist camera): posed in the hand's frame, moving with it, in both renderers."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import SpecError
from scenes.spec import CameraSpec, load_scene_spec
from tests.conftest import PUSH

WRIST = {
    "name": "wrist",
    "attach": "hand",
    "pos": [0.08, 0.0, 0.0],
    "lookat": [0.0, 0.0, 0.3],
    "up": [1.0, 0.0, 0.0],
    "fov": 70,
    "resolution": [64, 64],
}
TWO_VIEWS = {"cameras.0.resolution": [64, 64], "cameras.1": WRIST}


def test_a_mounted_camera_is_posed_in_its_links_frame():
    cam = CameraSpec(**WRIST)
    same = cam.in_world(np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]))
    assert same.attach is None and same.pos == (0.08, 0.0, 0.0) and same.lookat == (0.0, 0.0, 0.3)
    # the hand 0.5 m up, turned half a turn about x (pointing down): its z axis is the world's -z
    w = cam.in_world(np.array([0.4, 0.1, 0.5]), np.array([0.0, 1.0, 0.0, 0.0]))
    assert np.allclose(w.pos, [0.48, 0.1, 0.5]) and np.allclose(w.lookat, [0.4, 0.1, 0.2])
    assert np.allclose(w.up, [1.0, 0.0, 0.0])
    fixed = CameraSpec(name="side", pos=(0.6, 0.8, 0.6), lookat=(0.5, 0.0, 0.0))
    assert fixed.in_world(np.ones(3), np.array([0.0, 1.0, 0.0, 0.0])) is fixed


def test_overrides_append_a_camera_and_refuse_a_gap():
    spec = load_scene_spec(PUSH, TWO_VIEWS)
    assert [c.name for c in spec.cameras] == ["side", "wrist"] and spec.camera("wrist").attach == "hand"
    with pytest.raises(SpecError, match=r"cameras.3.*list of 1"):
        load_scene_spec(PUSH, {"cameras.3": WRIST})
    with pytest.raises(SpecError, match="attach"):
        load_scene_spec(PUSH, {"cameras.1": {**WRIST, "attach": "elbow"}})


@pytest.fixture(scope="module")
def wrist_twin(genesis_kernel_cache):
    from scenes.twin import DigitalTwin

    return DigitalTwin(load_scene_spec(PUSH, TWO_VIEWS))


def _robot_mask(twin, camera: str) -> np.ndarray:
    _, seg = twin.render_genesis(segmentation=True)[camera]
    robot = [
        k
        for k, v in twin.scene.segmentation_idx_dict.items()
        if (v[0] if isinstance(v, tuple) else v) == twin.robot.idx
    ]
    return np.isin(seg, robot)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.sim
def test_the_wrist_camera_moves_with_the_hand(wrist_twin):
    t = wrist_twin
    t.reset(3)
    before = {c.name: c for c in t.camera_specs()}
    masks0 = {c: _robot_mask(t, c) for c in ("side", "wrist")}
    rgb0 = t.render()
    with t.rendering(False):
        t.step(np.tile([0.02, 0.03, 0.0, 0.0], (5, 1)).astype(np.float32))
    after = {c.name: c for c in t.camera_specs()}
    masks1 = {c: _robot_mask(t, c) for c in ("side", "wrist")}
    rgb1 = t.render()

    assert after["side"] == before["side"] == t.spec.camera("side")  # the fixed camera stays
    moved = np.subtract(after["wrist"].pos, before["wrist"].pos)
    # a translation: the point it looks at moved with it (the hand turns by a fraction of a degree)
    assert np.allclose(moved, np.subtract(after["wrist"].lookat, before["wrist"].lookat), atol=6e-3)
    assert 0.1 < np.linalg.norm(moved) < 0.25  # it went where the hand went (5 steps of 3.6 cm)
    # the hand is fixed in the wrist camera's view, not in the side camera's
    assert masks0["wrist"].sum() > 20 and _iou(masks0["wrist"], masks1["wrist"]) > 0.9
    assert _iou(masks0["side"], masks1["side"]) < 0.8
    assert np.abs(rgb0["wrist"].astype(int) - rgb1["wrist"].astype(int)).mean() > 3  # the table moved past


def _red_centroid(img: np.ndarray) -> np.ndarray:
    r, g, b = (img[..., k].astype(int) for k in range(3))
    ys, xs = np.nonzero((r > 120) & (r - g > 60) & (r - b > 60))
    assert len(ys) > 3, "the red cube is not in view"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.sim
def test_the_splat_renderer_poses_the_wrist_camera_too(wrist_twin):
    """Both renderers put the cube at the same place in the wrist view, at two poses of the hand (the
    splat render of the hand itself, a few centimetres from the lens, is a blurred blob: not compared)."""
    t = wrist_twin
    t.reset(3)
    seen = []
    for step in range(2):
        if step:
            with t.rendering(False):
                t.step(np.tile([0.0, 0.02, 0.0, 0.0], (3, 1)).astype(np.float32))
        genesis, splat = (
            _red_centroid(t.render("genesis")["wrist"]),
            _red_centroid(t.render("splat")["wrist"]),
        )
        assert np.linalg.norm(genesis - splat) < 2.5, (step, genesis, splat)
        seen.append(genesis)
    assert np.linalg.norm(seen[1] - seen[0]) > 5  # and the cube moved across the view
