"""Scene authoring: edits keep the YAML's comments, are validated, and an authored scene (incl. an
imported scan) builds, simulates and previews."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import SpecError
from scenes.authoring import add_object, import_scan, new_scene, set_camera
from scenes.spec import load_scene_spec


def _scan_ply(path, seed=0):
    """A coloured point cloud of a 30 x 20 x 8 cm box standing on the table, with sensor noise."""
    import open3d as o3d
    import trimesh

    mesh = trimesh.creation.box(extents=(0.3, 0.2, 0.08))
    pts, _ = trimesh.sample.sample_surface(mesh, 6000, seed=seed)
    pts = pts + np.random.default_rng(seed).normal(0, 0.001, pts.shape) + np.array([0.55, -0.2, 0.04])
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.colors = o3d.utility.Vector3dVector(np.tile([0.2, 0.3, 0.8], (len(pts), 1)))
    o3d.io.write_point_cloud(str(path), pcd)


def test_new_add_set_camera_round_trip(tmp_path):
    p = tmp_path / "my_scene.yaml"
    new_scene("my_scene", p)
    text = p.read_text()
    assert text.startswith("# my_scene: authored")
    add_object(
        p, "cube", "box", size=[0.05, 0.05, 0.05], pos=[0.5, 0.1, 0.025], color=[0.9, 0.1, 0.1], mass=0.2
    )
    add_object(p, "ball", "sphere", size=[0.03], pos=[0.45, -0.1, 0.03])
    with pytest.raises(SpecError, match="camera up is parallel to its viewing direction"):
        set_camera(p, "top", pos=[0.5, 0.0, 1.2], lookat=[0.5, 0.0, 0.0])
    spec = set_camera(
        p, "top", pos=[0.5, 0.0, 1.2], lookat=[0.5, 0.0, 0.0], up=[1, 0, 0], fov=60, resolution=[96, 64]
    )
    assert [o.name for o in spec.objects] == ["cube", "ball"]
    assert spec.object("cube").mass == 0.2 and spec.camera("top").resolution == (96, 64)
    set_camera(p, "top", fov=40)
    spec = load_scene_spec(p)
    assert spec.camera("top").fov == 40 and spec.camera("top").pos == (0.5, 0.0, 1.2)
    assert p.read_text().startswith("# my_scene: authored")  # comments survive edits
    assert "size: [0.05, 0.05, 0.05]" in p.read_text()  # readable inline lists


def test_bad_edits_are_rejected_and_leave_the_file_alone(tmp_path):
    p = tmp_path / "s.yaml"
    new_scene("s", p)
    before = p.read_text()
    with pytest.raises(SpecError, match="size for a box needs 3"):
        add_object(p, "cube", "box", size=[0.05, 0.05])
    with pytest.raises(SpecError, match="--file is required"):
        add_object(p, "mug", "mesh")
    with pytest.raises(SpecError, match=r"resolution: .*positive"):
        set_camera(p, "side", resolution=[0, 64])
    with pytest.raises(SpecError, match="already exists"):
        new_scene("s", p)
    assert p.read_text() == before
    add_object(p, "cube", "box", size=[0.05, 0.05, 0.05])
    after_cube = p.read_text()
    with pytest.raises(SpecError, match="an object named 'cube' already exists"):
        add_object(p, "cube", "sphere", size=[0.02])
    assert p.read_text() == after_cube


def test_import_scan_makes_a_mesh_and_appearance(tmp_path):
    p = tmp_path / "scan_scene.yaml"
    new_scene("scan_scene", p)
    scan = tmp_path / "box_scan.ply"
    _scan_ply(scan)
    spec = import_scan(p, scan, "crate", voxel=0.01)
    obj = spec.object("crate")
    assert obj.shape == "mesh" and obj.fixed and obj.appearance.kind == "point_cloud"
    np.testing.assert_allclose(obj.pose.pos, [0.55, -0.2, 0.04], atol=0.01)
    import trimesh

    mesh = trimesh.load(obj.mesh, force="mesh")
    np.testing.assert_allclose(mesh.extents, [0.3, 0.2, 0.08], atol=0.02)
    np.testing.assert_allclose(mesh.bounds.mean(0), 0, atol=0.01)


@pytest.mark.sim
@pytest.mark.slow
def test_authored_scan_scene_builds_simulates_and_previews(tmp_path):
    from scenes.twin import DigitalTwin

    p = tmp_path / "scan_scene.yaml"
    new_scene("scan_scene", p)
    _scan_ply(tmp_path / "box_scan.ply")
    import_scan(p, tmp_path / "box_scan.ply", "crate", voxel=0.01)
    spec = add_object(
        p, "cube", "box", size=[0.05, 0.05, 0.05], pos=[0.55, -0.2, 0.2]
    )  # dropped onto the crate
    twin = DigitalTwin(spec, render=True)
    obs = twin.reset(0)
    result = twin.step(np.zeros((15, 4), np.float32))
    cube_z = result.info["object_poses"]["cube"]["pos"][2]
    assert cube_z == pytest.approx(0.08 + 0.025, abs=0.015)  # resting on the scanned crate's top
    genesis, splat = twin.render("genesis")["side"], twin.render("splat")["side"]
    assert genesis.shape == splat.shape == obs.images["side"].shape
    blue = (splat[..., 2].astype(int) - splat[..., 0]) > 60  # the crate's scanned colour is visible
    assert blue.sum() > 50
