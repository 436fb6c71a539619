"""The evaluation job: results layout, Wilson intervals, resume after a crash, config checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

import policy_eval.runner as runner
from common.errors import DreamTwinError, SpecError
from policy_eval.evaluate import EpisodeLog, EvalConfig, run_eval, summarise

from ..conftest import PUSH


def test_summarise_ranks_by_success_and_reports_wilson():
    rows = [{"policy": "a", "seed": s, "success": s < 3, "length": 10} for s in range(4)]
    rows += [{"policy": "b", "seed": s, "success": s < 1, "length": 20} for s in range(4)]
    res = summarise(rows, ["b", "a"])
    assert res["ranking"] == ["a", "b"]
    assert res["policies"]["a"]["success_rate"] == 0.75 and res["policies"]["a"]["n"] == 4
    assert res["policies"]["a"]["ci_low"] == pytest.approx(0.30064, abs=1e-4)
    assert res["policies"]["b"]["mean_length"] == 20


def test_config_rejects_unknown_policies_and_keys():
    with pytest.raises(SpecError, match=r"policies: .*unknown policy 'nope'"):
        from common.config import validate_model

        validate_model(EvalConfig, {"scene": str(PUSH), "policies": ["nope"]}, "cfg")
    with pytest.raises(SpecError, match="episdes: unknown key"):
        validate_model(EvalConfig, {"scene": str(PUSH), "policies": ["expert"], "episdes": 3}, "cfg")


def test_episode_log_ignores_a_torn_last_line(tmp_path):
    log = EpisodeLog(tmp_path / "episodes.jsonl")
    log.append({"policy": "a", "seed": 0})
    with open(log.path, "a") as f:
        f.write('{"policy": "a", "se')  # killed mid-write
    assert log.read() == [{"policy": "a", "seed": 0}]
    log.repair()
    log.append({"policy": "a", "seed": 1})
    assert [r["seed"] for r in log.read()] == [0, 1]


@pytest.mark.sim
def test_eval_writes_results_and_resumes(push_twin, tmp_path, monkeypatch):
    cfg = EvalConfig(scene=str(PUSH), policies=["expert", "random"], episodes=3, seed=5, out=str(tmp_path))
    first = run_eval(cfg, progress=False, world=push_twin)
    assert set(first["policies"]) == {"expert", "random"}
    assert first["ranking"][0] == "expert" and first["policies"]["expert"]["n"] == 3
    assert (tmp_path / "videos/expert.mp4").stat().st_size > 1000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["policies"] == first["policies"] and saved["seeds"] == [5, 6, 7]

    # simulate a crash: drop the last two episodes and tear the line before them
    lines = (tmp_path / "episodes.jsonl").read_text().splitlines()
    (tmp_path / "episodes.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:15])
    calls = []
    original = runner.rollout
    monkeypatch.setattr(runner, "rollout", lambda *a, **k: calls.append(a[2]) or original(*a, **k))
    second = run_eval(cfg, progress=False, world=push_twin)
    assert len(calls) == 2  # only the missing episodes were run
    assert second["policies"] == first["policies"]  # determinism: the same numbers
    rows = EpisodeLog(tmp_path / "episodes.jsonl").read()
    assert sorted((r["policy"], r["seed"]) for r in rows) == sorted(
        (p, s) for p in ("expert", "random") for s in (5, 6, 7)
    )

    other = cfg.model_copy(update={"episodes": 4})
    with pytest.raises(DreamTwinError, match="different evaluation"):
        run_eval(other, progress=False, world=push_twin)

    # a run written before a field was added resumes when the field is at its default, and not otherwise
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["config"]["sampler_precision"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    calls.clear()
    assert run_eval(cfg, progress=False, world=push_twin)["policies"] == first["policies"] and not calls
    with pytest.raises(DreamTwinError, match="different evaluation"):
        run_eval(cfg.model_copy(update={"sampler_precision": "bfloat16"}), progress=False, world=push_twin)


@pytest.mark.sim
def test_sigkilled_eval_resumes_to_the_uninterrupted_result(push_twin, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [
        "--scene",
        str(PUSH),
        "--policies",
        "expert,random",
        "--episodes",
        "3",
        "--seed",
        "11",
        "--no-videos",
    ]
    cmd = [sys.executable, "-m", "dreamtwin", "eval", *args, "--out", str(tmp_path / "killed")]
    log = tmp_path / "killed/episodes.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    before = EpisodeLog(log).read()
    assert 2 <= len(before) < 6

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = EpisodeLog(log).read()
    keys = [(r["policy"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == 6  # every episode once, none counted twice
    assert rows[: len(before)] == before  # what was logged before the kill is kept, not rerun

    reference = run_eval(
        EvalConfig(
            scene=str(PUSH),
            policies=["expert", "random"],
            episodes=3,
            seed=11,
            out=str(tmp_path / "ref"),
            videos=False,
        ),
        progress=False,
        world=push_twin,
    )
    resumed = json.loads((tmp_path / "killed/results.json").read_text())
    assert resumed["policies"] == reference["policies"]


def test_a_world_model_retrained_in_place_is_a_different_evaluation(tmp_path):
    """Resuming into a directory is keyed on the world model's weights, not just its path: episodes imagined
    by an old checkpoint are never mixed with a new one's."""
    from policy_eval.evaluate import _check_out
    from policy_eval.worlds import parse_world, world_fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights v1")
    world = f"worldmodel:{model}"
    first = world_fingerprint(parse_world(world))
    assert first is not None and first == world_fingerprint(parse_world(world))
    assert world_fingerprint(parse_world("twin")) is None

    class Spec:
        def hash(self):
            return "scene"

    cfg = EvalConfig(scene=str(PUSH), policies=["expert"], episodes=2, world=world, out=str(tmp_path / "out"))
    out = tmp_path / "out"
    out.mkdir()
    _check_out(cfg, Spec(), out)
    _check_out(cfg, Spec(), out)  # same weights: resumes
    (model / "model.safetensors").write_bytes(b"weights v2")
    assert world_fingerprint(parse_world(world)) != first
    with pytest.raises(DreamTwinError, match="different evaluation \\(world-model weights differ\\)"):
        _check_out(cfg, Spec(), out)


def test_an_ensemble_world_runs_the_zoo_with_frames_from_the_twin(push_twin, push_spec, tmp_path):
    """`ensemble:PATH` starts from the twin's initial state and draws its frames with the twin posed at the
    predicted state; an episode is a function of its seed."""
    from policy_eval.worlds import make_world
    from worldmodels.ensemble import DynamicsEnsemble, EnsembleConfig

    cfg = EnsembleConfig(
        members=3,
        elites=2,
        hidden=16,
        layers=1,
        state_dim=11,
        env_dim=7,
        action_dim=4,
        scene=push_spec.model_dump(mode="json"),
    )
    DynamicsEnsemble(cfg).save_pretrained(tmp_path / "ens")
    world = make_world(f"ensemble:{tmp_path / 'ens'}", push_spec, twin=push_twin)
    first = world.reset_batch([3, 4])
    assert np.array_equal(first[0].images["side"], push_twin.reset(3).images["side"])
    chunk = np.array([[0.01, 0.0, 0.0, 0.0]], np.float32)
    a = world.step_batch([chunk, chunk])
    assert a[0] is not None and "uncertainty" in a[0].info and "margin" in a[0].info
    shown = push_twin.show(a[0].last.state, a[0].last.environment_state)
    assert np.array_equal(shown.images["side"], a[0].last.images["side"])
    world.reset_batch([3])
    b = world.step_batch([chunk])
    assert b[0] is not None and np.array_equal(b[0].last.environment_state, a[0].last.environment_state)
