"""SceneSpec: strict loading, one-line errors naming file and key, sampling from the seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from common.errors import SpecError
from scenes.spec import euler_deg_to_quat, load_scene_spec, sample_initial_poses

ROOT = Path(__file__).resolve().parents[2]
PUSH = ROOT / "configs/scenes/push_cube.yaml"
LIFT = ROOT / "configs/scenes/lift_cube.yaml"


def _write(tmp_path: Path, data: dict, name: str = "scene.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def _push_data() -> dict:
    return yaml.safe_load(PUSH.read_text())


def test_shipped_specs_load():
    push, lift = load_scene_spec(PUSH), load_scene_spec(LIFT)
    assert push.task.success.name == "object_in_region"
    assert lift.task.success.name == "object_lifted"
    assert lift.task.success.typed_params().height == pytest.approx(0.10)
    assert push.physics_steps_per_control() == 10
    assert push.hash() != lift.hash() and push.hash() == load_scene_spec(PUSH).hash()


def test_unknown_key_names_file_path_and_allowed_keys(tmp_path):
    data = _push_data()
    data["objects"][0]["colour"] = [1, 0, 0]
    path = _write(tmp_path, data)
    with pytest.raises(SpecError) as e:
        load_scene_spec(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg and "objects.0.colour: unknown key" in msg
    assert "allowed: name, shape, size, mesh, color" in msg


def test_unknown_top_level_key(tmp_path):
    data = _push_data()
    data["gravity"] = -9.8
    with pytest.raises(SpecError, match=r"gravity: unknown key; allowed: version, name, robot"):
        load_scene_spec(_write(tmp_path, data))


def test_missing_mesh_file_is_named(tmp_path):
    data = _push_data()
    data["objects"].append({"name": "mug", "shape": "mesh", "size": [1.0], "mesh": "meshes/mug.obj"})
    with pytest.raises(
        SpecError, match=r"objects\.1\.mesh: Value error, mesh file not found: .*meshes/mug\.obj"
    ):
        load_scene_spec(_write(tmp_path, data))


def test_mesh_path_resolves_relative_to_spec(tmp_path):
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes/mug.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    data = _push_data()
    data["objects"].append({"name": "mug", "shape": "mesh", "size": [0.1], "mesh": "meshes/mug.obj"})
    spec = load_scene_spec(_write(tmp_path, data))
    assert Path(spec.object("mug").mesh) == (tmp_path / "meshes/mug.obj").resolve()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["objects"][0].update(size=[0.05, 0.05]), r"objects\.0: .*size for a box needs 3"),
        (lambda d: d["objects"][0].update(color=[2, 0, 0]), r"objects\.0\.color: .*\[0, 1\]"),
        (lambda d: d["cameras"][0].update(resolution=[0, 64]), r"cameras\.0\.resolution: .*positive"),
        (
            lambda d: d["task"]["success"].update(name="object_flying"),
            r"unknown success predicate 'object_flying'",
        ),
        (
            lambda d: d["task"]["success"]["params"].update(radius=1),
            r"params\.radius: unknown key; allowed: object, center, size",
        ),
        (
            lambda d: d["task"]["success"]["params"].update(object="ball"),
            r"'ball' is not one of the scene's objects",
        ),
        (lambda d: d.update(version=2), r"version: Input should be 1"),
        (lambda d: d["control"].update(rate_hz=7), r"rate_hz \(7.0\) must divide"),
        (
            lambda d: d["objects"][0]["randomize"].update(x=[0.1, -0.1]),
            r"randomize\.x: .*low must be <= high",
        ),
    ],
)
def test_bad_values_give_one_line_errors(tmp_path, mutate, expected):
    data = _push_data()
    mutate(data)
    with pytest.raises(SpecError, match=expected) as e:
        load_scene_spec(_write(tmp_path, data))
    assert "\n" not in str(e.value)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: malformed YAML \(line"):
        load_scene_spec(bad)
    with pytest.raises(SpecError, match="file not found"):
        load_scene_spec(tmp_path / "nope.yaml")


def test_overrides_use_dotted_keys():
    spec = load_scene_spec(PUSH, {"task.max_steps": 7, "objects.0.mass": 0.2})
    assert spec.task.max_steps == 7 and spec.objects[0].mass == 0.2
    with pytest.raises(SpecError, match="task.max_stepz: unknown key"):
        load_scene_spec(PUSH, {"task.max_stepz": 7})


def test_initial_poses_come_from_the_seed_alone():
    spec = load_scene_spec(PUSH)
    a, b, c = sample_initial_poses(spec, 3), sample_initial_poses(spec, 3), sample_initial_poses(spec, 4)
    np.testing.assert_array_equal(a["cube"][0], b["cube"][0])
    assert not np.allclose(a["cube"][0], c["cube"][0])
    r = spec.object("cube").randomize
    base = np.asarray(spec.object("cube").pose.pos)
    for seed in range(50):
        pos, quat = sample_initial_poses(spec, seed)["cube"]
        assert r.x[0] <= pos[0] - base[0] <= r.x[1] and r.y[0] <= pos[1] - base[1] <= r.y[1]
        assert np.isclose(np.linalg.norm(quat), 1.0)
        yaw = np.degrees(2 * np.arctan2(quat[3], quat[0]))
        assert r.yaw_deg[0] - 1e-6 <= yaw <= r.yaw_deg[1] + 1e-6


def test_euler_to_quat_known_values():
    np.testing.assert_allclose(
        euler_deg_to_quat((0, 0, 90)), [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)], atol=1e-12
    )
    np.testing.assert_allclose(euler_deg_to_quat((180, 0, 0)), [0, 1, 0, 0], atol=1e-12)


def test_controller_targets_follow_the_actions_without_winding_up():
    """`ControlSpec.targets`: the target held in each state, from the hand at rest (or a given target)
    through the actions; a blocked hand's target stays within 2 x max_delta of it."""
    from scenes.spec import ControlSpec

    c = ControlSpec(max_delta=0.03)
    free = np.array([[0.5, 0.0, 0.2], [0.52, 0.0, 0.2], [0.545, 0.0, 0.2]])
    step = np.array([[0.03, 0.0, 0.0]] * 3)
    t = c.targets(free, step)
    np.testing.assert_allclose(t[0], free[0])  # after a reset the controller holds the hand
    np.testing.assert_allclose(t[1], [0.53, 0.0, 0.2])
    np.testing.assert_allclose(t[2], [0.56, 0.0, 0.2])  # the target leads the lagging hand
    started = c.targets(free, step, start=np.array([0.51, 0.0, 0.2]))
    np.testing.assert_allclose(started[:2], [[0.51, 0.0, 0.2], [0.54, 0.0, 0.2]])
    blocked = np.repeat(free[:1], 6, 0)
    wound = c.targets(blocked, np.array([[0.05, 0.0, 0.0]] * 6))  # beyond max_delta: scaled down
    np.testing.assert_allclose(wound[1:, 0] - 0.5, [0.03, 0.06, 0.06, 0.06, 0.06])
