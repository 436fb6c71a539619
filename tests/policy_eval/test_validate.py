"""`dreamtwin record` on the twin stand-in (held-out appearance, safety limits) and `validate` of a world
model against the recording: open loop, closed loop from the recorded first frames, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.benchmarks.conftest import tiny_world_model  # noqa: F401  (a session fixture)
from tests.conftest import PUSH
from tests.policy_eval.test_job import chromium_dom

pytestmark = [pytest.mark.sim, pytest.mark.slow]

HELD_OUT = {"table.color": [0.45, 0.55, 0.70], "objects.0.friction": 0.4}


@pytest.fixture(scope="module")
def recording(push_twin, push_spec, tmp_path_factory):
    from datagen.rollouts import RolloutJob, generate
    from policy_eval.robots import SafetyLimits
    from policy_eval.robots.twin import TwinRobotConfig

    out = tmp_path_factory.mktemp("recorded") / "robot_push"
    job = RolloutJob(
        scene=str(PUSH),
        policies={"image_expert": 1.0, "random": 1.0},
        episodes=4,
        seed=9100,
        out=str(out),
        robot=TwinRobotConfig(variant=HELD_OUT, limits=SafetyLimits(deadline_s=None)),
    )
    try:
        summary = generate(job, progress=False, twin=push_twin)
        again = generate(job, progress=False, twin=push_twin)
    finally:
        push_twin.set_variant(push_spec)
    assert again["resumed"] == "already complete"
    return out, summary


def test_record_writes_a_lerobot_dataset_with_outcomes_and_interventions(recording, push_twin, push_spec):
    from datagen.lerobot import verify_dataset
    from datagen.windows import load_episodes

    out, summary = recording
    verify_dataset(out)
    doc = json.loads((out / "meta" / "dreamtwin.json").read_text())
    assert doc["robot"]["variant"] == HELD_OUT and not doc["synthetic"]
    eps = doc["episodes"]
    assert sorted(e["seed"] for e in eps) == [9100, 9101, 9102, 9103]
    assert all("interventions" in e and "policy_latency_ms" in e for e in eps)
    # random actions ask for more than the limits allow; every clip is in the episode's record
    assert any(len(e["interventions"]) > 0 for e in eps if e["policy"] == "random")
    arrays, _ = load_episodes(out)
    assert all(np.isfinite(a["env_state"]).all() for a in arrays)  # ground truth recorded from the twin
    # the robot wore the held-out table: its first frame differs from the nominal twin's for the same seed
    nominal = push_twin.reset(eps[0]["seed"]).images["side"]
    recorded = arrays[0]["frames"][0, 0].transpose(1, 2, 0)
    assert np.abs(recorded.astype(int) - nominal.astype(int)).mean() > 5


def test_validate_a_world_model_against_the_recording(recording, tiny_world_model, tmp_path, push_spec):  # noqa: F811
    from datagen.windows import load_episodes
    from policy_eval.validate import validate

    out, _ = recording
    _, model, _ = tiny_world_model
    doc = json.loads((out / "meta" / "dreamtwin.json").read_text())
    episodes, meta = load_episodes(out)
    res = validate(
        episodes,
        doc["episodes"],
        meta["cameras"],
        push_spec,
        f"worldmodel:{model}",
        tmp_path / "val",
        policy_seed=9100,
        horizon=4,
        samples=1,
        sampler_steps=2,
        progress=False,
    )
    assert set(res["policies"]) == {"image_expert", "random"}
    assert sum(v["n"] for v in res["policies"].values()) == 4  # the job's policy mix drew each episode's
    for v in res["policies"].values():
        assert 0 <= v["imagined"]["success_rate"] <= 1
        assert v["real"]["ci"][0] <= v["real"]["success_rate"] <= v["real"]["ci"][1]
    assert {"pearson", "spearman", "kendall", "mmrv", "mae"} <= set(res["metrics"])
    ol = res["open_loop"]
    assert len(ol["psnr"]) == 4 and len(ol["object_error_m"]) == 4 and ol["windows"] >= 4
    rows = [json.loads(x) for x in (tmp_path / "val" / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["agree"] == (r["real_success"] == r["imagined_success"]) for r in rows)
    assert [r["real_success"] for r in rows] == [e["success"] for e in doc["episodes"]]
    dom = chromium_dom(tmp_path / "val" / "report.html")
    for marker in ('id="success"', 'id="per-policy"', 'id="metrics"', 'id="horizon"', 'id="strips"'):
        assert marker in dom, marker
    assert dom.count("<img") == 2 * 4  # real and imagined strip per episode


def test_record_asks_a_person_for_outcomes(push_twin, push_spec, tmp_path, monkeypatch):
    """`outcome: prompt`: the robot's own judgement is not used; the answers at the terminal are the outcomes."""
    from datagen.rollouts import RolloutJob, generate
    from policy_eval.robots import SafetyLimits
    from policy_eval.robots.twin import TwinRobotConfig

    asked: list[str] = []
    answers = iter(["y", "no"])
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or next(answers))
    robot = TwinRobotConfig(limits=SafetyLimits(deadline_s=None), outcome="prompt")
    job = RolloutJob(
        scene=str(PUSH), policies={"random": 1.0}, episodes=2, seed=9200, out=str(tmp_path / "d"), robot=robot
    )
    with pytest.raises(ValueError, match="one local worker"):
        RolloutJob(**{**job.model_dump(), "workers": 2})
    generate(job, progress=False, twin=push_twin)
    assert len(asked) == 2 and all("Success? [y/n]" in a for a in asked)
    eps = sorted(
        json.loads((tmp_path / "d" / "meta" / "dreamtwin.json").read_text())["episodes"],
        key=lambda e: e["seed"],
    )
    # random never succeeds in the twin; the person's verdicts stand, and each episode ran its full length
    assert [e["success"] for e in eps] == [True, False]
    from datagen.windows import load_episodes

    arrays, _ = load_episodes(tmp_path / "d")
    assert all(a["frames"].shape[0] == push_spec.task.max_steps + 1 for a in arrays)


def test_validate_refuses_a_dataset_not_recorded_here(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    r = subprocess.run(
        [sys.executable, "-m", "dreamtwin", "validate", "--data", str(tmp_path), "--world", "worldmodel:x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("error: ") and "meta/dreamtwin.json" in r.stderr
