"""Smoke runs of every speed and fidelity benchmark at a tiny size: each writes its result envelope and
sane figures to a temporary directory (never over the committed results)."""

from __future__ import annotations

import argparse
import math

import pytest
import yaml

from tests.benchmarks.conftest import read_checked, run_script
from tests.conftest import ROOT


def test_splat_render(tmp_path, monkeypatch):
    args = ["--counts", "300", "--sizes", "32", "--repeats", "1", "--results-dir", str(tmp_path)]
    run_script("benchmarks.splat_render", args, monkeypatch)
    r = read_checked(tmp_path / "splat_render.json", "benchmarks/splat_render.py", args)
    assert r["threads"] >= 1
    assert {(x["impl"], x["pass"]) for x in r["results"]} == {
        ("torch", "fwd"),
        ("torch", "fwd+bwd"),
        ("torch_autograd", "fwd"),
        ("baseline", "fwd"),
        ("baseline", "fwd+bwd"),
    }
    assert all(x["fps"] > 0 and x["size"] == 32 and x["gaussians"] == 300 for x in r["results"])


@pytest.mark.sim
@pytest.mark.slow
def test_twin_speed(tmp_path, monkeypatch, genesis_kernel_cache):
    args = [
        "--no-cold",
        "--steps",
        "3",
        "--variants",
        "none",
        "--name",
        "twin",
        "--results-dir",
        str(tmp_path),
    ]
    run_script("benchmarks.twin_speed", args, monkeypatch)
    r = read_checked(tmp_path / "twin.json", "benchmarks/twin_speed.py", args)
    assert "cold_build_s" not in r and r["warm_build_s"] > 0
    assert list(r["runs"]) == ["none"] and r["runs"]["none"]["steps"] == 3
    assert r["runs"]["none"]["steps_per_s"] > 0


@pytest.mark.sim
@pytest.mark.slow
def test_datagen_speed(tmp_path, monkeypatch, genesis_kernel_cache):
    args = ["--episodes", "2", "--workers", "1", "--results-dir", str(tmp_path)]
    run_script("benchmarks.datagen_speed", args, monkeypatch)
    r = read_checked(tmp_path / "datagen_speed.json", "benchmarks/datagen_speed.py", args)
    (row,) = r["results"]
    assert row["workers"] == 1 and row["episodes"] == 2 and row["frames"] > 2
    assert row["episodes_per_min"] > 0 and row["bytes"] > 0 and 0 <= row["success_rate"] <= 1


def test_sampler_codes():
    from benchmarks.evaluator_fidelity import parse_sampler

    assert parse_sampler("4x1") == (4, 1, "diffusers", "float32")
    assert parse_sampler("3x2u") == (3, 2, "uniform", "float32")
    assert parse_sampler("2x1U-BF16") == (2, 1, "uniform", "bfloat16")
    for bad in ("4", "4x1-fp8", "0x1", "ux1"):
        with pytest.raises(argparse.ArgumentTypeError, match="--sampler"):
            parse_sampler(bad)


@pytest.mark.sim
def test_evaluator_fidelity(tmp_path, monkeypatch, genesis_kernel_cache):
    """Two scripted policies, one seed each, in the twin and the shipped world model at two sampler settings
    (the second with uniform spacing in bfloat16), one episode a forward pass;
    then a report range that overlaps the chosen one is refused."""
    cfg = yaml.safe_load((ROOT / "configs/eval/demo.yaml").read_text())
    cfg.update(policies=["image_expert", "image_severe"])
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump(cfg))
    args = [
        "--purpose",
        "choose",
        "--episodes",
        "1",
        "--config",
        str(config),
        "--runs",
        str(tmp_path / "runs"),
    ]
    args += [
        "--sampler",
        "1x1",
        "--sampler",
        "2x1u-bf16",
        "--twin-workers",
        "1",
        "--batch-size",
        "1",
        "--results-dir",
        str(tmp_path),
    ]
    run_script("benchmarks.evaluator_fidelity", args, monkeypatch)
    r = read_checked(tmp_path / "evaluator_fidelity_choose.json", "benchmarks/evaluator_fidelity.py", args)
    assert r["purpose"] == "choose" and r["seeds"] == [2000, 2000] and r["episodes_per_policy"] == 1
    assert (
        set(r["twin"]["policies"]) == {"image_expert", "image_severe"}
        and r["twin"]["speed"]["steps_per_s"] > 0
    )
    assert [w["sampler"] for w in r["worldmodel"]] == ["1x1", "2x1u-bf16"]
    assert [w["sampler_spacing"] for w in r["worldmodel"]] == ["diffusers", "uniform"]
    assert [w["sampler_precision"] for w in r["worldmodel"]] == ["float32", "bfloat16"]
    assert [w["batch_size"] for w in r["worldmodel"]] == [1, 1]
    for w in r["worldmodel"]:
        assert set(w["metrics"]) == {"pearson", "spearman", "kendall", "mmrv", "mae"}
        assert 0 <= w["metrics"]["mae"]["value"] <= 1 and w["speed"]["steps_per_s"] > 0
        assert w["speedup"] == pytest.approx(w["speed"]["steps_per_s"] / r["twin"]["speed"]["steps_per_s"])
    overlap = ["--purpose", "report", "--seed", "2000", "--episodes", "1", "--results-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="overlap the choose range"):
        run_script("benchmarks.evaluator_fidelity", overlap, monkeypatch)


@pytest.mark.sim
def test_worldmodel_fidelity(tmp_path, monkeypatch, tiny_world_model):
    data, model, _ = tiny_world_model
    args = ["--model", str(model), "--data", str(data), "--episodes", "1", "--horizon", "2"]
    args += ["--stride", "20", "--twin-steps", "2", "--results-dir", str(tmp_path)]
    run_script("benchmarks.worldmodel_fidelity", args, monkeypatch)
    r = read_checked(tmp_path / "worldmodel_fidelity.json", "benchmarks/worldmodel_fidelity.py", args)
    assert r["held_out_episodes"] == [9] and r["horizon"] == 2  # the first of the 3 held out
    assert len(r["open_loop"]["psnr"]) == 2 and all(math.isfinite(p) for p in r["open_loop"]["psnr"])
    assert r["success_judge"]["episodes"] == 1 and 0 <= r["success_judge"]["predicate_accuracy"] <= 1
    assert r["speed"]["twin_steps_per_s"] > 0 and r["speed"]["imagined_steps_per_s_batched"] > 0


@pytest.mark.sim
@pytest.mark.slow
def test_perturbation_agreement(tmp_path, monkeypatch, genesis_kernel_cache):
    """Two axes, one seed, two policies: the sweep in the twin and in the shipped world model."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "scene": str(ROOT / "configs/scenes/push_cube.yaml"),
                "scene_overrides": {"cameras.0.resolution": [64, 64]},
                "policies": ["image_expert", "bc_final"],
                "videos": False,
                "sampler_steps": 2,
                "samples": 1,
                "axes": {
                    "light": {"type": "light_intensity", "levels": {"dim": {"scale": 0.3}}},
                    "latency": {"type": "action_latency", "levels": {"two": {"steps": 2}}},
                },
            }
        )
    )
    args = ["--config", str(sweep), "--episodes", "1", "--seed", "7000", "--runs", str(tmp_path / "runs")]
    args += ["--results-dir", str(tmp_path)]
    run_script("benchmarks.perturbation_agreement", args, monkeypatch)
    r = read_checked(tmp_path / "perturbation_agreement.json", "benchmarks/perturbation_agreement.py", args)
    assert r["seeds"] == [7000, 7000]
    assert set(r["per_axis"]["twin"]) == set(r["per_axis"]["worldmodel"]) == {"light", "latency"}
    assert r["per_axis"]["twin"]["light"]["bc_final"].keys() == {"control", "dim"}
    a = r["agreement"]
    assert a["n"] == 4 and 0 <= a["sign_agreement"] <= 1
    assert all(-1 <= p["twin"] <= 1 and -1 <= p["imagined"] <= 1 for p in a["pairs"])


@pytest.mark.sim
def test_pgd_synthesis(tmp_path, monkeypatch, tiny_pgd_models):
    """Two coefficients, 6 windows each, 4 transitions replayed in the twin a source, each moving as its
    history has it; a dataset of episodes as the world model's rollouts."""
    from benchmarks.pgd_synthesis import IMAGINED, POSED, WINDOWS

    data, model, policy = tiny_pgd_models
    args = ["--data", str(data), "--trajectory", str(model), "--policy", str(policy), "--coeffs", "0,0.5"]
    args += ["--windows", "6", "--checked", "4", "--reset", "history", "--results-dir", str(tmp_path)]
    args += ["--imagined", str(data)]  # any dataset of episodes stands in for a world model's rollouts
    run_script("benchmarks.pgd_synthesis", args, monkeypatch)
    r = read_checked(tmp_path / "pgd_synthesis.json", "benchmarks/pgd_synthesis.py", args)
    assert set(r["on_policy"]) == {
        "0",
        "0.5",
        "ensemble rollouts (sampled)",
        "ensemble rollouts (elites' mean)",
        "dataset",
        IMAGINED,
        WINDOWS,
        POSED,
    }
    assert set(r["dynamics_error"]) == {
        "unguided diffusion",
        "PGD 0.5",
        "ensemble rollouts (sampled)",
        "ensemble rollouts (elites' mean)",
        "dataset",
        IMAGINED,
        WINDOWS,
        POSED,
    }
    for e in r["dynamics_error"].values():
        assert 1 <= e["transitions"] <= 4 and 0 <= e["ee_cm"] and math.isfinite(e["positions_cm"])
        ratio = e["vs_sampled_ensemble"]
        assert ratio["low"] <= ratio["value"] <= ratio["high"]
    sampled = r["dynamics_error"]["ensemble rollouts (sampled)"]
    assert sampled["vs_sampled_ensemble"]["value"] == pytest.approx(1.0)
    posed = r["dynamics_error"][POSED]
    assert posed["vs_posed_ensemble"]["value"] == pytest.approx(1.0)
    # the sampled ensemble's states contradict themselves; posed by the end effector, as the synthetic
    # states are, they agree with their joints
    assert sampled["ee_vs_joints_cm"] > 0.1 and posed["ee_vs_joints_cm"] < 0.05
    assert r["dynamics_error"]["PGD 0.5"]["ee_vs_joints_cm"] < 0.05
    # the twin's own states agree with their joints
    dataset = r["dynamics_error"]["dataset"]
    assert dataset["positions_kinematic_cm"] == pytest.approx(dataset["positions_cm"], abs=1e-3)
    # reset with the history's velocities and controller target, the twin replays its own data closely
    assert r["reset"] == "history" and r["dynamics_error"]["dataset"]["ee_cm"] < 0.5
    # windows cut from the recorded episodes carry their recorded history: they replay as closely
    assert r["dynamics_error"][WINDOWS]["ee_cm"] < 0.5
    # the same episodes, cut at the model's horizon, replay as the dataset's own do
    assert r["dynamics_error"][IMAGINED]["ee_cm"] < 0.5
    # the ensemble rolls out the target policy's own actions
    assert r["on_policy"]["ensemble rollouts (elites' mean)"]["action_distance"] < 1e-5


def test_a_replayed_row_starts_at_rest_or_with_the_target_it_carries():
    """`replay_rows`: a row's first step has no previous state; its controller target is the hand itself
    (a row that starts at rest) or the one given (a row that starts in motion), then rebuilt through the
    actions."""
    import numpy as np

    from benchmarks.pgd_synthesis import replay_rows
    from scenes.spec import load_scene_spec

    spec = load_scene_spec(ROOT / "configs/scenes/push_cube.yaml")
    rng = np.random.default_rng(0)
    states = rng.normal(0.4, 0.05, (2, 5, 18)).astype(np.float32)
    actions = rng.uniform(-0.02, 0.02, (2, 5, 4)).astype(np.float32)
    rest = replay_rows(spec, states, actions, [3, 0])  # the second row is solved at once: no transitions
    assert len(rest.s) == 3 and rest.has_prev.tolist() == [False, True, True]
    np.testing.assert_allclose(rest.target[0], states[0, 0, :3], atol=1e-6)
    np.testing.assert_array_equal(rest.prev[1:], states[0, :2])
    np.testing.assert_array_equal(rest.n, states[0, 1:4])
    target = rng.normal(0.4, 0.05, (2, 3))
    moving = replay_rows(spec, states, actions, [3, 2], target)
    assert len(moving.s) == 5 and moving.has_prev.tolist() == [False, True, True, False, True]
    np.testing.assert_allclose(moving.target[[0, 3]], target)
    np.testing.assert_allclose(
        moving.target[:3], spec.control.targets(states[0, :3, :3], actions[0, :3, :3], target[0])
    )
