"""3DGS PLY round trip, Gaussians from meshes and point clouds, and one-line errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from common.errors import SpecError
from scenes.splat.gaussians import Gaussians, load_splat_ply, read_ply_vertices, save_splat_ply
from scenes.splat.sample import gaussians_from_mesh, gaussians_from_point_cloud, load_mesh, primitive_mesh


def _random_gaussians(n=50, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    return Gaussians(
        torch.randn(n, 3, generator=g),
        torch.randn(n, 4, generator=g),
        torch.randn(n, 3, generator=g),
        torch.randn(n, generator=g),
        torch.randn(n, k, 3, generator=g),
    )


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip_is_bit_exact(tmp_path, degree):
    g = _random_gaussians(degree=degree)
    p = tmp_path / "s.ply"
    save_splat_ply(g, p)
    back = load_splat_ply(p)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        assert torch.equal(getattr(back, name), getattr(g, name)), name
    save_splat_ply(back, tmp_path / "t.ply")
    assert (tmp_path / "t.ply").read_bytes() == p.read_bytes()


def test_ply_layout_is_the_standard_3dgs_one(tmp_path):
    g = _random_gaussians(n=3, degree=1)
    save_splat_ply(g, tmp_path / "s.ply")
    v = read_ply_vertices(tmp_path / "s.ply")
    assert list(v)[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert [k for k in v if k.startswith("f_rest")] == [f"f_rest_{i}" for i in range(9)]
    # f_rest is channel-major: the first three are the red channel's three degree-1 coefficients
    np.testing.assert_array_equal(v["f_rest_1"], g.sh[:, 2, 0].numpy())
    np.testing.assert_array_equal(v["f_rest_3"], g.sh[:, 1, 1].numpy())
    assert list(v)[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def test_broken_plys_give_one_line_errors(tmp_path):
    good = tmp_path / "g.ply"
    save_splat_ply(_random_gaussians(n=10), good)
    data = good.read_bytes()
    cases = {
        "truncated.ply": (data[: len(data) - 40], "truncated"),
        "nomagic.ply": (b"plx" + data[3:], "not a PLY file"),
        "badprop.ply": (
            data.replace(b"property float opacity", b"property flaot opacity"),
            "bad property line",
        ),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SpecError, match=match) as e:
            load_splat_ply(tmp_path / name)
        assert "\n" not in str(e.value) and name in str(e.value)
    pc = tmp_path / "cloud.ply"
    pc.write_text(
        "ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n"
    )
    with pytest.raises(SpecError, match="not a 3D Gaussian Splatting PLY: missing"):
        load_splat_ply(pc)


def test_splat_with_nans_is_rejected(tmp_path):
    g = _random_gaussians(n=10)
    g.log_scales[4, 1] = float("nan")
    save_splat_ply(g, tmp_path / "nan.ply")
    with pytest.raises(SpecError, match=r"nan\.ply: log_scales contains NaN/inf \(first at Gaussian 4\)"):
        load_splat_ply(tmp_path / "nan.ply")


def test_mesh_without_faces_is_rejected(tmp_path):
    p = tmp_path / "points.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(p)
    with pytest.raises(SpecError, match="has no faces"):
        load_mesh(p)
    with pytest.raises(SpecError, match="no faces"):
        gaussians_from_mesh(trimesh.Trimesh(vertices=np.zeros((3, 3)), faces=np.zeros((0, 3), int)))


def test_mesh_gaussians_cover_the_surface_with_its_colours():
    mesh = primitive_mesh("box", (0.1, 0.2, 0.05))
    mesh.visual.face_colors = np.tile([255, 0, 0, 255], (len(mesh.faces), 1))
    g = gaussians_from_mesh(mesh, spacing=0.01)
    assert abs(g.n - mesh.area / 0.01**2) <= 1
    pts = g.means.numpy()
    # on the surface: at least one coordinate at the box's half-extent
    half = np.array([0.05, 0.1, 0.025])
    assert np.all(np.min(np.abs(np.abs(pts) - half), axis=1) < 1e-3)  # within 1 mm (centroid shift)
    np.testing.assert_allclose(pts.mean(0), 0, atol=1e-6)
    rgb = g.sh[:, 0] * 0.28209479177387814 + 0.5
    torch.testing.assert_close(rgb, torch.tensor([[1.0, 0, 0]]).expand_as(rgb), atol=1e-5, rtol=0)
    # thin axis along the face normal
    from scenes.splat.render import quat_to_rotmat

    normal_axis = quat_to_rotmat(g.quats)[:, :, 2].numpy()
    on_top = (np.abs(pts[:, 2] - 0.025) < 1e-3) & (np.abs(pts[:, 0]) < 0.045) & (np.abs(pts[:, 1]) < 0.095)
    np.testing.assert_allclose(np.abs(normal_axis[on_top, 2]), 1, atol=1e-5)


def test_point_cloud_gaussians_keep_points_and_colours():
    pts = np.random.default_rng(1).random((100, 3))
    cols = np.random.default_rng(2).integers(0, 256, (100, 3))
    g = gaussians_from_point_cloud(pts, cols)
    np.testing.assert_allclose(g.means.numpy(), pts, atol=1e-6)
    np.testing.assert_allclose((g.sh[:, 0] * 0.28209479177387814 + 0.5).numpy(), cols / 255, atol=1e-5)
