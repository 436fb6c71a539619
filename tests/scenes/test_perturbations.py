"""Perturbations of a scene: each axis changes what it declares (in the spec, and in a rendered frame),
draws ranges per seed from its own stream (matched seeds), and bad sweep files fail in one line."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import SpecError
from scenes.perturbations import Perturbation
from scenes.spec import sample_initial_poses
from tests.conftest import PUSH, ROOT


def P(axis: str, **change) -> Perturbation:
    return Perturbation(axis=axis, level="l", change=change)


def test_fixed_values_and_ranges(push_spec):
    fixed, _ = P("li", type="light_intensity", scale=0.5).apply(push_spec, 3)
    assert fixed.lights[0].intensity == pytest.approx(push_spec.lights[0].intensity * 0.5)
    ranged = P("li", type="light_intensity", scale=[1.5, 2.5])
    draws = [ranged.apply(push_spec, s)[1]["light.intensity_scale"] for s in range(20)]
    assert all(1.5 <= d <= 2.5 for d in draws) and np.std(draws) > 0.1
    assert draws == [ranged.apply(push_spec, s)[1]["light.intensity_scale"] for s in range(20)]  # per seed
    other_axis = Perturbation(
        axis="other", level="l", change={"type": "light_intensity", "scale": [1.5, 2.5]}
    )
    assert draws != [other_axis.apply(push_spec, s)[1]["light.intensity_scale"] for s in range(20)]


def test_each_spec_axis_changes_what_it_declares(push_spec):
    s = push_spec
    v, _ = P("a", type="light_direction", tilt_deg=30, azimuth_deg=90).apply(s, 0)
    d0, d1 = np.asarray(s.lights[0].dir), np.asarray(v.lights[0].dir)
    angle = np.degrees(np.arccos(d0 @ d1 / np.linalg.norm(d0) / np.linalg.norm(d1)))
    assert angle == pytest.approx(30, abs=1e-6) and np.linalg.norm(d1) == pytest.approx(np.linalg.norm(d0))
    v, _ = P("a", type="light_color", color=[1.0, 0.5, 0.25]).apply(s, 0)
    assert v.lights[0].color == pytest.approx((1.0, 0.5, 0.25))
    v, _ = P("a", type="camera_pose", x=0.1, z=-0.05).apply(s, 0)
    assert np.subtract(v.cameras[0].pos, s.cameras[0].pos) == pytest.approx([0.1, 0, -0.05])
    assert np.subtract(v.cameras[0].lookat, s.cameras[0].lookat) == pytest.approx([0.1, 0, -0.05])
    v, _ = P("a", type="camera_pose", yaw=0.2).apply(s, 0)
    f0 = np.subtract(s.cameras[0].lookat, s.cameras[0].pos)
    f1 = np.subtract(v.cameras[0].lookat, v.cameras[0].pos)
    turn = np.arctan2(f1[1], f1[0]) - np.arctan2(f0[1], f0[0])
    assert turn == pytest.approx(0.2) and v.cameras[0].pos == s.cameras[0].pos
    v, _ = P("a", type="camera_pose", roll=0.3).apply(s, 0)
    assert v.cameras[0].lookat == pytest.approx(s.cameras[0].lookat)
    assert (
        np.degrees(np.arccos(np.clip(np.dot(v.cameras[0].up, [0, 0, 1]), -1, 1))) > 5
    )  # the up vector rolled
    v, _ = P("a", type="table_color", color=[0.2, 0.3, 0.4]).apply(s, 0)
    assert v.table.color == (0.2, 0.3, 0.4)
    v, _ = P("a", type="object_color", object="cube", value_scale=0.5).apply(s, 0)
    assert max(v.object("cube").color) == pytest.approx(max(s.object("cube").color) * 0.5)
    v, _ = P("a", type="friction", scale=2.0, objects=["cube"]).apply(s, 0)
    assert v.object("cube").friction == pytest.approx(2 * s.object("cube").friction)
    assert v.table.friction == s.table.friction
    v, _ = P("a", type="mass", scale=3.0).apply(s, 0)
    assert v.object("cube").mass == pytest.approx(3 * s.object("cube").mass)


def test_matched_seeds_keep_the_episode_draws(push_spec):
    """Only the perturbed factor differs: the cube starts where the control's cube starts on every seed
    (distractors come after the scene's objects; their draws use the perturbation's own stream)."""
    dis = P("d", type="distractors", count=2, x=[0.3, 0.7], y=[-0.3, 0.3])
    structure = dis.structure(push_spec)
    assert [o.name for o in structure.objects] == ["cube", "distractor0", "distractor1"]
    for seed in range(10):
        v, params = dis.apply(structure, seed)
        cube = sample_initial_poses(v, seed)["cube"][0]
        assert cube == pytest.approx(sample_initial_poses(push_spec, seed)["cube"][0])
        d = [sample_initial_poses(v, seed)[f"distractor{i}"][0] for i in range(2)]
        assert all(np.linalg.norm(x[:2] - cube[:2]) > 0.05 for x in d)  # clear of the cube
        assert np.linalg.norm(d[0][:2] - d[1][:2]) > 0.04
        assert params["distractor0.x"] == pytest.approx(d[0][0])


def test_object_pose_moves_the_region_with_the_same_draw(push_spec):
    wide = P("p", type="object_pose", object="cube", x=[-0.1, 0.1], y=[-0.08, 0.08])
    nominal = push_spec.object("cube").pose.pos
    for seed in range(5):
        v, params = wide.apply(push_spec, seed)
        base = sample_initial_poses(push_spec, seed)["cube"][0] - nominal
        moved = sample_initial_poses(v, seed)["cube"][0] - nominal
        assert moved[0] == pytest.approx(base[0] * 2) and moved[1] == pytest.approx(
            base[1] * 2
        )  # ±5 -> ±10 cm
        assert params["cube.x"] == pytest.approx(moved[0] + nominal[0])


@pytest.mark.sim
def test_each_axis_changes_the_rendered_frame(push_twin, push_spec):
    """Render seed 0 nominal and under each appearance axis in the twin: the change is where it is declared."""
    from scenes.twin import DigitalTwin

    def frame(spec, twin=push_twin):
        twin.set_variant(spec)
        return twin.reset(0).images["side"].astype(np.float32)

    base = frame(push_spec)
    dim = frame(P("a", type="light_intensity", scale=0.3).apply(push_spec, 0)[0])
    assert dim.mean() < base.mean() - 10
    warm = frame(P("a", type="light_color", color=[1.0, 0.6, 0.3]).apply(push_spec, 0)[0])
    assert (warm[..., 0] - warm[..., 2]).mean() > (base[..., 0] - base[..., 2]).mean() + 10
    tilted = frame(P("a", type="light_direction", tilt_deg=50, azimuth_deg=0).apply(push_spec, 0)[0])
    assert np.abs(tilted - base).mean() > 2  # the table and cube faces are lit differently
    moved = frame(P("a", type="camera_pose", x=0.1, yaw=0.1).apply(push_spec, 0)[0])
    assert np.abs(moved - base).mean() > 5
    centroid = lambda img: np.argwhere((img[..., 0] > 120) & (img[..., 1] < 80)).mean(0)  # noqa: E731  the red cube
    assert np.linalg.norm(centroid(moved) - centroid(base)) > 3  # pixels
    table = frame(P("a", type="table_color", color=[0.1, 0.1, 0.6]).apply(push_spec, 0)[0])
    assert (table[..., 2] - table[..., 0]).mean() > (base[..., 2] - base[..., 0]).mean() + 20  # bluer table
    red = (base[..., 0] > 120) & (base[..., 1] < 80)
    assert red.sum() > 5  # the red cube is visible
    green = frame(P("a", type="object_color", object="cube", color=[0.1, 0.8, 0.1]).apply(push_spec, 0)[0])
    assert ((green[..., 0] > 120) & (green[..., 1] < 80)).sum() < red.sum() / 4  # no longer red
    frame(push_spec)  # leave the shared twin nominal

    dis = P("d", type="distractors", count=1, color=[0.1, 0.2, 0.9], x=[0.35, 0.65], y=[-0.25, 0.25])
    structure = dis.structure(push_spec)
    twin = DigitalTwin(structure, render=True)
    img = frame(dis.apply(structure, 0)[0], twin)
    blue = (img[..., 2] > 120) & (img[..., 0] < 80)
    assert blue.sum() > 5 and ((base[..., 2] > 120) & (base[..., 0] < 80)).sum() < 3


def _write(tmp_path, axes: str):
    p = tmp_path / "sweep.yaml"
    p.write_text(f"scene: {PUSH}\npolicies: [expert]\naxes:\n{axes}")
    return p


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ("  a: {type: wind, levels: {x: {speed: 1}}}\n", r"sweep.yaml: axes.a.type: .*'light_intensity'"),
        (
            "  a: {type: light_intensity, levels: {x: {scale: 12}}}\n",
            r"axes.a.levels.x.light_intensity.scale: .*\[0.0, 10.0\]",
        ),
        (
            "  a: {type: light_intensity, levels: {x: {scale: [2, 1]}}}\n",
            r"axes.a.levels.x.*low must be <= high",
        ),
        (
            "  a: {type: object_color, levels: {x: {object: ball, hue_deg: 10}}}\n",
            r"sweep.yaml: axes.a.levels.x.object: scene 'push_cube' has no object 'ball'",
        ),
        (
            "  a: {type: camera_pose, levels: {x: {camera: wrist, x: 0.1}}}\n",
            r"axes.a.levels.x.camera: .*no camera 'wrist'",
        ),
        (
            "  a: {type: friction, levels: {x: {scale: 2, surface: ice}}}\n",
            r"axes.a.levels.x.friction.surface: unknown key",
        ),
        ("  a: {type: action_latency, levels: {x: {steps: 20}}}\n", r"axes.a.levels.x.action_latency.steps"),
        ("  a: {type: friction, levels: {}}\n", r"axes.a.levels"),
    ],
)
def test_bad_sweep_files_fail_in_one_line_naming_file_and_key(tmp_path, axes, message):
    from policy_eval.perturb import load_perturb_config

    with pytest.raises(SpecError, match=message) as e:
        load_perturb_config(_write(tmp_path, axes))
    assert "\n" not in str(e.value)


def test_shipped_sweeps_load():
    from policy_eval.perturb import PerturbConfig, load_perturb_config

    for path in sorted((ROOT / "configs/perturbations").glob("*.yaml")):
        cfg = load_perturb_config(path)
        assert len(cfg.axes) >= 6 and all(len(a.levels) >= 2 for a in cfg.axes.values()), path
        assert PerturbConfig.model_validate_json(cfg.model_dump_json()) == cfg  # as sweep workers receive it
