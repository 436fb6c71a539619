"""The perturbation sweep: statistics on known tables, the perturbed policy stream, and a sweep on a
cheap fake world (matched seeds, results, report in headless Chromium, resume); the CLI killed with
SIGKILL in the twin resumes with nothing counted twice."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from policy_eval.evaluate import EpisodeLog
from policy_eval.metrics import beta_posterior_interval, paired_difference
from policy_eval.perturb import PerturbConfig, PerturbedPolicy, run_sweep
from scenes.perturbations import ActionLatency, ObservationNoise
from tests.conftest import PUSH
from tests.policy_eval.fakes import SKILLS, VariantCoinWorld
from tests.policy_eval.test_job import chromium_dom


def _pairs(a: int, b: int, c: int, d: int) -> tuple[list[bool], list[bool]]:
    """(perturbed, control) outcomes: a both succeed, b only perturbed, c only control, d neither."""
    x = [True] * a + [True] * b + [False] * c + [False] * d
    y = [True] * a + [False] * b + [True] * c + [False] * d
    return x, y


def test_paired_difference_on_newcombes_table():
    """Newcombe (1998), paired data, example a = 36, b = 12, c = 2, d = 0: method 10 gives 0.0569 to 0.3404."""
    r = paired_difference(*_pairs(36, 12, 2, 0))
    assert r["value"] == pytest.approx(0.2)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.0569, 0.3404), abs=5e-5)
    assert r["significant"] and r["gained"] == 12 and r["lost"] == 2
    same = paired_difference(*_pairs(10, 0, 0, 10))
    assert same["value"] == 0 and same["ci_low"] < 0 < same["ci_high"] and not same["significant"]
    worse = paired_difference(*_pairs(0, 0, 20, 0))
    assert worse["value"] == -1 and worse["ci_high"] < 0 and worse["significant"]
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_beta_interval_closed_form():
    lo, hi = beta_posterior_interval(0, 10)  # Beta(1, 11): CDF 1 - (1 - x)^11
    assert lo == pytest.approx(1 - 0.975 ** (1 / 11)) and hi == pytest.approx(1 - 0.025 ** (1 / 11))
    lo, hi = beta_posterior_interval(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 11)) and hi == pytest.approx(0.975 ** (1 / 11))
    assert beta_posterior_interval(0, 0) == pytest.approx((0.025, 0.975))


def test_action_latency_delays_by_whole_steps(push_spec):
    class Counter:
        def reset(self, seed=None):
            self.t = 0

        def act(self, obs):
            self.t += 1
            return np.array([[self.t, 0, 0, 1.0]], np.float32)

    p = PerturbedPolicy(Counter(), ActionLatency(steps=2), push_spec, "lat")
    p.reset(0)
    out = [p.act(None)[0] for _ in range(5)]
    assert [a[0] for a in out] == [0, 0, 1, 2, 3]  # the robot holds still for two steps
    assert out[0][3] == push_spec.robot.init_gripper


def test_observation_noise_is_seeded(push_spec):
    from common.types import Observation

    seen = []

    class Spy:
        def reset(self, seed=None):
            pass

        def act(self, obs):
            seen.append(obs)
            return np.zeros((1, 4), np.float32)

    obs = Observation(
        images={"side": np.full((8, 8, 3), 100, np.uint8)}, state=np.zeros(11, np.float32), task=""
    )
    p = PerturbedPolicy(Spy(), ObservationNoise(pixel_std=10, state_std=0.01), push_spec, "noise")
    for _ in range(2):
        p.reset(5)
        p.act(obs)
    a, b = seen
    assert np.array_equal(a.images["side"], b.images["side"])  # same seed, same noise
    assert 5 < np.abs(a.images["side"].astype(float) - 100).mean() < 15
    assert 0.003 < np.abs(a.state).mean() < 0.02
    assert np.all(obs.images["side"] == 100)  # the world's observation is not modified


def _sweep(tmp_path, name="sweep", **kw) -> PerturbConfig:
    d = dict(
        scene=str(PUSH),
        policies=list(SKILLS),
        episodes=16,
        seed=0,
        out=str(tmp_path / name),
        videos=False,
        strips=1,
        axes={
            "light": {
                "type": "light_intensity",
                "levels": {"dim": {"scale": 0.3}, "ranged": {"scale": [0.2, 1.0]}},
            },
            "latency": {"type": "action_latency", "levels": {"two": {"steps": 2}}},
        },
    )
    return PerturbConfig.model_validate({**d, **kw})


def test_sweep_on_a_fake_world(tmp_path):
    world = VariantCoinWorld()
    cfg = _sweep(tmp_path)
    r = run_sweep(cfg, progress=False, world=world)
    out = tmp_path / "sweep"
    assert list(r["cells"]) == ["control", "light=dim", "light=ranged", "latency=two"]
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * len(SKILLS) * 16
    # matched seeds: every cell ran every policy on the control's seeds
    for cell in r["cells"]:
        for p in SKILLS:
            assert sorted(x["seed"] for x in rows if x["cell"] == cell and x["policy"] == p) == list(
                range(16)
            )
    assert all("events" in x for x in rows)
    dim = [x for x in rows if x["cell"] == "light=dim"]
    assert all(
        x["perturbation"]["axis"] == "light" and x["perturbation"]["params"] == {"light.intensity_scale": 0.3}
        for x in dim
    )
    ranged = {
        x["perturbation"]["params"]["light.intensity_scale"] for x in rows if x["cell"] == "light=ranged"
    }
    assert len(ranged) == 16  # drawn per seed, the same for every policy on a seed
    dressed = [v.lights[0].intensity for v in world.variants]
    assert dressed.count(pytest.approx(4.0 * 0.3)) == len(SKILLS) * 16  # every light=dim episode, once
    good = r["cells"]["light=dim"]["policies"]["coin_good"]
    ctrl = r["cells"]["control"]["policies"]["coin_good"]
    assert good["success_rate"] < ctrl["success_rate"]
    assert good["diff"]["value"] == pytest.approx(good["success_rate"] - ctrl["success_rate"])
    assert good["diff"]["significant"] and good["diff"]["gained"] == 0  # a dimmer light never helps here
    assert r["cells"]["light=dim"]["policies"]["coin_never"]["diff"]["value"] == 0
    assert r["most_harmful"][0]["value"] <= r["most_harmful"][-1]["value"]
    fits = r["axes"]["light"]["fits"]
    assert fits["coin_good"]["light.intensity_scale"]["slope_per_unit"] > 0  # brighter, more success

    # resume: drop the last rows of one cell as a killed run would; the rerun redoes only those
    log = out / "cells/light=dim/episodes.jsonl"
    kept = log.read_text().splitlines()[:-5]
    log.write_text("\n".join(kept) + "\n")
    again = run_sweep(cfg, progress=False, world=VariantCoinWorld())
    assert again["cells"] == r["cells"]
    assert len((out / "episodes.jsonl").read_text().splitlines()) == len(rows)

    other = cfg.model_copy(update={"episodes": 8})
    with pytest.raises(Exception, match="different perturbation sweep"):
        run_sweep(other, progress=False, world=VariantCoinWorld())


def test_sweep_report_renders_in_headless_chromium(tmp_path):
    from tests.policy_eval.fakes import CoinWorld  # noqa: F401  (registers the coin policies)

    run_sweep(_sweep(tmp_path, episodes=6), progress=False, world=VariantCoinWorld())
    dom = chromium_dom(tmp_path / "sweep/report.html")
    for marker in ('id="heatmap-success"', 'id="heatmap-diff"', 'id="harm"', 'id="axes"', 'id="events"'):
        assert marker in dom, marker
    assert dom.count("<svg") >= 2 + 2 + 1  # two heatmaps, a curve per axis, event bars
    assert dom.count("<img") >= 2 + 1  # frame strips: control and each level
    for p in SKILLS:
        assert p in dom


@pytest.mark.sim
def test_sigkilled_sweep_resumes_with_nothing_counted_twice(tmp_path, genesis_kernel_cache):
    import os
    import signal
    import sys
    import time

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(
        f"scene: {PUSH}\npolicies: [expert, random]\nepisodes: 2\nseed: 21\nrender: false\nvideos: false\n"
        "axes:\n  friction: {type: friction, levels: {low: {scale: 0.3}, high: {scale: 3.0}}}\n"
    )
    cmd = [sys.executable, "-m", "dreamtwin", "perturb", "--config", str(cfg), "--out", str(tmp_path / "out")]
    cells = tmp_path / "out/cells"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 600

    def logged() -> int:
        return sum(len(EpisodeLog(f).read()) for f in cells.glob("*/episodes.jsonl")) if cells.exists() else 0

    while time.time() < deadline and proc.poll() is None:
        if logged() >= 6:  # the control and part of the first perturbed cell
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    before = {f.parent.name: EpisodeLog(f).read() for f in cells.glob("*/episodes.jsonl")}
    assert not (tmp_path / "out/results.json").exists()

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "out/episodes.jsonl").read_text().splitlines()]
    keys = [(r["cell"], r["policy"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == 3 * 2 * 2  # every (cell, policy, seed) once
    for cell, kept in before.items():
        assert EpisodeLog(cells / cell / "episodes.jsonl").read()[: len(kept)] == kept  # kept, not rerun
    results = json.loads((tmp_path / "out/results.json").read_text())
    assert results["cells"]["control"]["policies"]["expert"]["n"] == 2
    assert "friction=high" in results["cells"] and (tmp_path / "out/report.html").exists()


@pytest.mark.sim
def test_added_bodies_in_a_learned_world(genesis_kernel_cache, tmp_path):
    """Distractors are in the twin (and so in a learned world's first frame) but not in the learned world's
    state: it runs on the objects it knows, and judges and scores those."""
    from policy_eval.evaluate import EvalConfig, Evaluator
    from tests.conftest import ROOT

    pert = {
        "axis": "d",
        "level": "two",
        "change": {"type": "distractors", "count": 2, "x": [0.3, 0.7], "y": [-0.3, 0.3]},
    }
    cfg = EvalConfig(
        scene=str(PUSH),
        policies=["expert"],
        world=f"ensemble:{ROOT / 'assets/worldmodels/push_cube_ensemble'}",
        episodes=2,
        seed=5,
        out=str(tmp_path / "e"),
        render=False,
        videos=False,
        strips=0,
        perturbation=pert,
    )
    ev = Evaluator(cfg)
    assert [o.name for o in ev.spec.objects] == ["cube", "distractor0", "distractor1"]
    assert [o.name for o in ev.judge_spec.objects] == ["cube"]
    rows = ev.run([("expert", 5), ("expert", 6)])
    assert all(r["perturbation"]["params"].keys() >= {"distractor0.x", "distractor1.y"} for r in rows)
    assert all("OBJECT_STARTED_MOVING" in r["events"] for r in rows)  # judged on the cube it knows
    first = ev.episodes([("expert", 5)])[0].initial_observation
    assert first.environment_state.shape == (7,)
