"""Smoke runs of every research experiment at a tiny size (the session's small dataset and a world model
trained on it for a few steps): each writes its result envelope and sane figures to a temporary
directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.benchmarks.conftest import read_checked, run_script

ROOT = Path(__file__).resolve().parents[2]

HELD = [9, 10, 11]  # the tiny recipe holds out the last 3 of the dataset's 12 episodes


@pytest.mark.sim
def test_judge_ceiling(tmp_path, monkeypatch, tiny_world_model):
    data, model, _ = tiny_world_model
    args = ["--model", str(model), "--data", str(data), "--draws", "1", "--results-dir", str(tmp_path)]
    run_script("experiments.judge_ceiling", args, monkeypatch)
    r = read_checked(tmp_path / "judge_ceiling.json", "experiments/judge_ceiling.py", args)
    assert r["held_out_episodes"] == HELD and r["draws"] == 1
    assert r["replay_reproduces_outcome"] == 1.0  # a replay in the episode's own variant is exact
    assert 0.5 <= r["ceiling_accuracy"] <= 1
    assert set(r["judges"]) == {
        "majority of the hidden physics (best possible)",
        "world model, predicate",
        "world model, value",
    }
    best = r["value_threshold_best"]
    assert r["value_threshold"] == 0.5 and 0 <= best["accuracy"] <= 1
    # a range of episodes, judged at the threshold chosen above, scores that accuracy on the same episodes
    args = ["--model", str(model), "--data", str(data), "--draws", "1", "--results-dir", str(tmp_path)]
    args += ["--episodes", "9:12", "--value-threshold", str(best["threshold"]), "--name", "again"]
    run_script("experiments.judge_ceiling", args, monkeypatch)
    again = read_checked(tmp_path / "again.json", "experiments/judge_ceiling.py", args)
    assert again["held_out_episodes"] == HELD
    assert again["judges"]["world model, value"]["accuracy_on_recorded"] == pytest.approx(best["accuracy"])
    for bad in ("9-12", "9:99"):  # not a range; past the dataset's end
        with pytest.raises(SystemExit, match="--episodes"):
            run_script("experiments.judge_ceiling", args[:-6] + ["--episodes", bad], monkeypatch)


def test_best_threshold():
    from experiments.judge_ceiling import best_threshold

    # separable scores: a threshold between 0.3 and 0.6 is right on all four; the nearest 0.5 is the midpoint
    r = best_threshold([0.1, 0.3, 0.6, 0.9], [False, False, True, True])
    assert r["threshold"] == pytest.approx(0.45) and r["accuracy"] == 1.0
    r = best_threshold([0.2, 0.4, 0.45, 0.9], [False, True, True, True])
    assert r["accuracy"] == 1.0 and 0.2 < r["threshold"] < 0.4


@pytest.mark.sim
def test_judge_diagnosis(tmp_path, monkeypatch, tiny_world_model):
    data, model, _ = tiny_world_model
    args = ["--model", str(model), "--data", str(data), "--results-dir", str(tmp_path)]
    run_script("experiments.judge_diagnosis", args, monkeypatch)
    r = read_checked(tmp_path / "judge_diagnosis.json", "experiments/judge_diagnosis.py", args)
    assert r["held_out_episodes"] == HELD
    assert set(r["modes"]) == {"model", "recorded", "controller", "workspace"}
    assert all(0 <= m["predicate_accuracy"] <= 1 for m in r["modes"].values())
    assert r["onset"] is None or set(r["onset"]) == {"3mm", "10mm"}


@pytest.mark.sim
def test_state_stream(tmp_path, monkeypatch, tiny_world_model):
    data, model, _ = tiny_world_model
    args = ["--model", str(model), "--data", str(data), "--steps", "2", "--batch", "2"]
    args += ["--results-dir", str(tmp_path)]
    run_script("experiments.state_stream", args, monkeypatch)
    r = read_checked(tmp_path / "state_stream.json", "experiments/state_stream.py", args)
    assert r["held_out_episodes"] == HELD and r["state_stream_training"]["windows_seen"] == 4
    for name in ("shipped", "separate_state_stream"):
        assert 0 <= r[name]["predicate_accuracy"] <= 1 and len(r["per_episode"][name]) == 3


@pytest.mark.sim
@pytest.mark.slow
def test_worldmodel_variants(tmp_path, monkeypatch, tiny_world_model):
    """One variant trained (in a child process, as the script runs every variant) and judged."""
    data, _, recipe = tiny_world_model
    args = ["--config", str(recipe), "--data", str(data), "--runs", str(tmp_path / "runs")]
    args += ["--variant", "base sampler.steps=2", "--name", "variants", "--results-dir", str(tmp_path)]
    run_script("experiments.worldmodel_variants", args, monkeypatch)
    r = read_checked(tmp_path / "variants.json", "experiments/worldmodel_variants.py", args)
    (v,) = r["variants"]
    assert v["name"] == "base" and v["overrides"] == ["sampler.steps=2"]
    assert 0 <= v["judge"]["predicate_accuracy"] <= 1 and v["train_s"] > 0


@pytest.mark.sim
@pytest.mark.slow
def test_twin_determinism(tmp_path, monkeypatch):
    """One episode in a child process; a second run compares itself with the first one's hashes."""
    args = ["--policies", "image_mild", "--seeds", "1", "--variants", "reference"]
    run_script("experiments.twin_determinism", [*args, "--results-dir", str(tmp_path)], monkeypatch)
    first = read_checked(
        tmp_path / "twin_determinism.json",
        "experiments/twin_determinism.py",
        [*args, "--results-dir", str(tmp_path)],
    )
    (episode,) = first["reference_episodes"]
    assert episode["policy"] == "image_mild" and episode["seed"] == 1000
    assert (
        len(episode["frames"])
        == len(episode["physics"])
        == len(episode["actions"]) + 1
        == episode["length"] + 1
    )
    again = [*args, "--against", str(tmp_path / "twin_determinism.json"), "--name", "again"]
    run_script("experiments.twin_determinism", [*again, "--results-dir", str(tmp_path)], monkeypatch)
    second = read_checked(
        tmp_path / "again.json", "experiments/twin_determinism.py", [*again, "--results-dir", str(tmp_path)]
    )
    against = next(v for k, v in second["comparison"].items() if k.startswith("against "))
    assert against == {"episodes": 1, "outcomes_changed": 0, "trajectories_changed": 0, "diverged": []}


@pytest.mark.sim
def test_judge_margin(tmp_path, monkeypatch, genesis_kernel_cache):
    """Two policies, one seed in each range, the shipped world model, against recorded twin outcomes."""
    cfg = yaml.safe_load((ROOT / "configs/eval/demo.yaml").read_text())
    cfg.update(policies=["image_expert", "image_severe"])
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump(cfg))
    twins = {}
    for name, seed in (("choose", 2000), ("report", 4000)):
        twins[name] = tmp_path / name
        twins[name].mkdir()
        rows = [{"policy": p, "seed": seed, "success": p == "image_expert"} for p in cfg["policies"]]
        (twins[name] / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--model", str(ROOT / "assets/worldmodels/push_cube_tiny"), "--config", str(config)]
    args += ["--choose-episodes", "1", "--report-episodes", "1", "--margins-cm=-1:1:1"]
    args += ["--twin-choose", str(twins["choose"]), "--twin-report", str(twins["report"])]
    args += ["--results-dir", str(tmp_path)]
    run_script("experiments.judge_margin", args, monkeypatch)
    r = read_checked(tmp_path / "judge_margin.json", "experiments/judge_margin.py", args)
    sweep = r["choose_sweep"]
    assert [s["margin_m"] for s in sweep] == [-0.01, 0.0, 0.01] and r["chosen_margin_m"] in (-0.01, 0.0, 0.01)
    for p in cfg["policies"]:  # a stricter region never counts more successes
        rates = [s["imagined_success"][p] for s in sweep]
        assert rates == sorted(rates, reverse=True)
    assert r["report"]["no_margin"]["margin_m"] == 0.0 and r["twin_success"]["report"]["image_expert"] == 1.0


def _fake_twin_runs(root: Path, policies: list[str], ranges: dict[str, tuple[int, int]]) -> None:
    """Recorded twin outcomes for every (policy, seed) of each range, where experiments look for them."""
    for name, (seed, n) in ranges.items():
        d = root / f"{name}_{seed}_{n}" / "twin"
        d.mkdir(parents=True)
        rows = [
            {"policy": p, "seed": s, "success": (p == policies[0]) == (s % 2 == 0), "length": 10}
            for p in policies
            for s in range(seed, seed + n)
        ]
        (d / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.sim
def test_trust(tmp_path, monkeypatch, genesis_kernel_cache):
    """Two policies, two seeds in each range, the shipped world model and ensemble, recorded twin outcomes:
    features cached, a calibration fitted on the choose range and written, the report range scored."""
    cfg = yaml.safe_load((ROOT / "configs/eval/demo.yaml").read_text())
    cfg.update(policies=["image_expert", "image_severe"])
    config = tmp_path / "eval.yaml"
    config.write_text(yaml.safe_dump(cfg))
    _fake_twin_runs(tmp_path / "runs", cfg["policies"], {"choose": (2000, 2), "report": (4000, 2)})
    args = ["--ensemble", str(ROOT / "assets/worldmodels/push_cube_ensemble"), "--config", str(config)]
    args += ["--choose-episodes", "2", "--report-episodes", "2", "--runs", str(tmp_path / "runs")]
    (tmp_path / "model").mkdir()
    args += ["--write-calibration", str(tmp_path / "model" / "trust.json"), "--results-dir", str(tmp_path)]
    run_script("experiments.trust", args, monkeypatch)
    r = read_checked(tmp_path / "trust.json", "experiments/trust.py", args)
    assert r["choose"]["episodes"] == r["report"]["episodes"] == 4
    assert r["choose"]["feature_set"] in r["choose"]["cv_auroc"]
    from policy_eval.trust import load_calibration

    cal = load_calibration(tmp_path / "model" / "trust.json")
    assert cal.chosen_on["seeds"] == [2000, 2001] and set(cal.weights) == set(cal.scale)
    cached = (tmp_path / "runs" / "report_4000_2" / "trust_push_cube_tiny_4x1.jsonl").read_text().splitlines()
    assert len(cached) == 4 and "states" in json.loads(cached[0])


@pytest.mark.sim
def test_coplanner(tmp_path, monkeypatch, genesis_kernel_cache):
    """Model rollouts under the expert, plain and conservative, replayed in the twin; two seeds a range."""
    args = ["--ensemble", str(ROOT / "assets/worldmodels/push_cube_ensemble"), "--part", "rollouts"]
    args += [
        "--choose",
        "2000",
        "2",
        "--report",
        "4000",
        "2",
        "--rates",
        "30",
        "--ntraj",
        "3",
        "--runs",
        str(tmp_path / "runs"),
    ]
    args += ["--results-dir", str(tmp_path)]
    run_script("experiments.coplanner", args, monkeypatch)
    r = read_checked(tmp_path / "coplanner.json", "experiments/coplanner.py", args)["rollouts"]
    assert r["choose"]["chosen"] == {"rate": 30.0, "ntraj": 3, "horizon": 5}
    assert r["report"]["conservative"]["ntraj"] == 3
    for key in ("plain", "conservative"):
        errors = r["report"][key]["object_error_cm"]
        assert len(errors) == 10 and all(e >= 0 for e in errors if e == e)


@pytest.mark.sim
@pytest.mark.slow
def test_imagined_finetune(tmp_path, monkeypatch, genesis_kernel_cache):
    """bc_mid exploring, imagined by the shipped world model: 4 attempts, one training seed of 5 steps per arm,
    two twin episodes per checkpoint."""
    args = ["--explore", str(ROOT / "configs/policies/bc_mid_explore.yaml"), "--attempts", "4"]
    args += ["--eval-episodes", "2", "--train-seeds", "0", "--steps", "5", "--workers", "1"]
    args += ["--runs", str(tmp_path / "runs"), "--results-dir", str(tmp_path)]
    run_script("experiments.imagined_finetune", args, monkeypatch)
    r = read_checked(tmp_path / "imagined_finetune.json", "experiments/imagined_finetune.py", args)
    assert r["imagined"]["attempts"] == 4 and 1 <= r["imagined"]["judged_successes"] <= 4
    # the shipped model has a trust.json: every imagined episode is scored, trusted successes are an arm
    trusted = r["imagined"]["trusted_successes"]
    assert trusted is not None and 0 <= trusted <= r["imagined"]["judged_successes"]
    arms = {"base", "judged successes", "random subset", "twin successes"}
    trusted_arms = {"judged successes, trusted", "random subset, trusted size"}
    assert set(r["arms"]) == arms | (trusted_arms if trusted else set())
    for v in r["arms"].values():
        assert v["episodes"] == 2 and v["ci"][0] <= v["success_rate"] <= v["ci"][1]
    assert r["recipe"]["steps"] == 5 and set(r["recipe"]["steps_per_arm"].values()) == {5}


@pytest.mark.sim
def test_imagined_precision(tmp_path, monkeypatch, small_dataset):
    """The twin's own dataset stands in for an imagined one: every success it recorded replays open loop in
    the twin (same seed, same randomised physics), and is a success of the same seed."""
    data, _ = small_dataset
    args = ["--imagined", str(data), "--twin", str(data), "--results-dir", str(tmp_path)]
    run_script("experiments.imagined_precision", args, monkeypatch)
    r = read_checked(tmp_path / "imagined_precision.json", "experiments/imagined_precision.py", args)
    p = r["parts"]["judged successes"]
    assert p["episodes"] >= 1 and p["open_loop"] == p["episodes"] == p["same_seed"] == p["same_seed_known"]
    assert r["parts"]["trusted"]["episodes"] == 0 and r["parts"]["not trusted"] == p


@pytest.mark.sim
@pytest.mark.slow
def test_pgd_offline(tmp_path, monkeypatch, tiny_pgd_models):
    """One training seed of 10 TD3+BC steps per arm, 6 synthetic windows, two twin episodes a checkpoint."""
    data, model, _ = tiny_pgd_models
    args = ["--data", str(data), "--trajectory", str(model), "--windows", "6", "--steps", "10"]
    args += [
        "--regen-every",
        "5",
        "--train-seeds",
        "0",
        "--eval-episodes",
        "2",
        "--workers",
        "1",
        "--runs",
        str(tmp_path / "runs"),
    ]
    args += ["--results-dir", str(tmp_path)]
    run_script("experiments.pgd_offline", args, monkeypatch)
    r = read_checked(tmp_path / "pgd_offline.json", "experiments/pgd_offline.py", args)
    assert set(r["arms"]) == {"real", "real + PGD", "real + unguided", "real + PGD (regenerated)"}
    for v in r["arms"].values():
        assert v["episodes"] == 2 and v["ci"][0] <= v["success_rate"] <= v["ci"][1]
    assert r["arms"]["real + PGD"]["synthetic_transitions"][0] > 0
    assert len(r["arms"]["real + PGD (regenerated)"]["synthetic_transitions"]) == 1  # regenerated at step 5
    assert r["recipe"]["steps"] == 10
