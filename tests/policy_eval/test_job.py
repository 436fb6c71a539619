"""The evaluation job's logic on cheap fake worlds: batching, adaptive stopping, ground-truth
agreement, worker pools, and the HTML report rendered in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from policy_eval.evaluate import EpisodeLog, EvalConfig, run_eval, stopped_policies
from policy_eval.metrics import kendall, mmrv, pearson, spearman
from policy_eval.runner import rollout, rollout_batch
from tests.conftest import PUSH
from tests.policy_eval.fakes import SKILLS, BatchedCoinWorld, CoinWorld, SkillPolicy

POLICIES = list(SKILLS)


def _cfg(tmp_path, name, **kw):
    base = dict(
        scene=str(PUSH), policies=POLICIES, episodes=12, seed=0, out=str(tmp_path / name), videos=False
    )
    return EvalConfig(**{**base, **kw})


def test_batched_rollout_equals_single_rollouts():
    seeds = [3, 4, 5, 6, 7, 8]
    skills = [0.2, 0.9, 0.2, 0.5, 0.0, 1.0]
    world = BatchedCoinWorld(max_steps=6)
    batch = rollout_batch(
        world,
        [SkillPolicy(s) for s in skills],
        seeds,
        policy_ids=[str(s) for s in skills],
        privileged=[False] * 6,
    )
    single = [
        rollout(CoinWorld(max_steps=6), SkillPolicy(s), seed) for s, seed in zip(skills, seeds, strict=False)
    ]
    assert [e.success for e in batch] == [e.success for e in single]
    assert [e.length for e in batch] == [e.length for e in single]
    assert [e.actions().tolist() for e in batch] == [e.actions().tolist() for e in single]
    assert world.calls == max(e.length for e in single)  # one world call per step for the whole batch
    assert {e.success for e in single} == {True, False}  # the case is not degenerate


def test_after_success_an_episode_goes_on_for_n_more_steps_within_max_steps():
    eps = {
        n: [
            rollout(CoinWorld(max_steps=12), SkillPolicy(0.1), s, max_steps=12, after_success=n)
            for s in range(30)
        ]
        for n in (0, 3)
    }
    first = [next((i for i, st in enumerate(e.steps) if st.success), None) for e in eps[0]]
    assert {f is None for f in first} == {True, False}  # some succeed, some do not
    for f, plain, longer in zip(first, eps[0], eps[3], strict=True):
        # the same episode up to the world's done
        assert plain.actions().tolist() == longer.actions()[: plain.length].tolist()
        if f is None:
            assert longer.length == plain.length == 12  # a failure is not extended
        else:
            assert plain.length == f + 1 and longer.length == min(f + 4, 12) and longer.success
    # capped by max_steps: a success at the last steps goes on no further than the task allows
    assert max(e.length for e in eps[3]) == 12


def test_adaptive_stopping_stops_narrow_policies_first(tmp_path):
    cfg = _cfg(
        tmp_path, "adaptive", episodes=60, adaptive={"half_width": 0.1, "min_episodes": 10, "round": 10}
    )
    res = run_eval(cfg, progress=False, world=CoinWorld())
    n = {p: res["policies"][p]["n"] for p in POLICIES}
    # all-or-nothing policies have narrow intervals: stopped after 20 episodes (Wilson half-width at
    # 20/20 is 0.08, at 10/10 0.14); a policy near 35% needs 85+ for +-0.1, so it runs every round
    assert n["coin_always"] == 20 and n["coin_never"] == 20
    assert n["coin_poor"] == 60 and n["coin_good"] > 20
    rows = EpisodeLog(tmp_path / "adaptive/episodes.jsonl").read()
    assert len(rows) == len({(r["policy"], r["seed"]) for r in rows}) == sum(n.values())
    # the decision uses only earlier rounds, so a rerun (resume) runs nothing new
    again = run_eval(cfg, progress=False, world=CoinWorld())
    assert again["policies"] == res["policies"]


def test_stopped_policies_needs_min_episodes():
    cfg = EvalConfig(
        scene=str(PUSH),
        policies=["coin_always"],
        episodes=40,
        adaptive={"half_width": 0.2, "min_episodes": 15, "round": 5},
    )
    rows = [{"policy": "coin_always", "seed": s, "success": True} for s in range(10)]
    assert stopped_policies(cfg, rows, upto_seed=10) == set()  # narrow enough, but too few episodes
    rows += [{"policy": "coin_always", "seed": s, "success": True} for s in range(10, 15)]
    assert stopped_policies(cfg, rows, upto_seed=15) == {"coin_always"}
    assert (
        stopped_policies(cfg, rows, upto_seed=10) == set()
    )  # later episodes do not count for earlier rounds


def test_results_do_not_depend_on_batch_size(tmp_path):
    a = run_eval(
        _cfg(tmp_path, "b1", world="worldmodel:unused", batch_size=1),
        progress=False,
        world=BatchedCoinWorld(),
    )
    b = run_eval(
        _cfg(tmp_path, "b7", world="worldmodel:unused", batch_size=7),
        progress=False,
        world=BatchedCoinWorld(),
    )
    assert a["policies"] == b["policies"]
    c = run_eval(_cfg(tmp_path, "single"), progress=False, world=CoinWorld())
    assert {p: r["successes"] for p, r in c["policies"].items()} == {
        p: r["successes"] for p, r in a["policies"].items()
    }


def test_agreement_against_ground_truth(tmp_path):
    gt = run_eval(_cfg(tmp_path, "gt", episodes=30), progress=False, world=CoinWorld())
    # an imagined world that is too optimistic (bias) but keeps the order of the good policies
    cfg = _cfg(tmp_path, "imagined", episodes=30, ground_truth=str(tmp_path / "gt"))
    res = run_eval(cfg, progress=False, world=CoinWorld(bias=0.1))
    m = res["metrics"]
    pred = [res["policies"][p]["success_rate"] for p in POLICIES]
    real = [gt["policies"][p]["success_rate"] for p in POLICIES]
    assert m["pearson"]["value"] == pytest.approx(pearson(pred, real))
    assert m["spearman"]["value"] == pytest.approx(spearman(pred, real))
    assert m["kendall"]["value"] == pytest.approx(kendall(pred, real))
    assert m["mmrv"]["value"] == pytest.approx(mmrv(pred, real))
    for k in ("pearson", "spearman", "kendall", "mmrv"):
        assert m[k]["ci_low"] <= m[k]["value"] <= m[k]["ci_high"]
    assert m["ranking_ground_truth"] == gt["ranking"]
    assert json.loads((tmp_path / "imagined/results.json").read_text())["metrics"] == m
    # a ground truth with no common policy is a clear error
    other = _cfg(tmp_path, "other", policies=["coin_good"], ground_truth=str(tmp_path / "gt"))
    with pytest.raises(Exception, match="fewer than 2 policies"):
        run_eval(other, progress=False, world=CoinWorld())


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail(
            "Debian's chromium is needed for the report test: `make setup` installs it (apt-get install chromium)"
        )
    return exe


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def chromium_dom(page) -> str:
    """The DOM of an HTML file as headless Chromium renders it (scripts run, SVG and images parsed)."""
    cmd = [_chromium(), *CHROMIUM_FLAGS, "--dump-dom", page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_report_renders_in_headless_chromium(tmp_path):
    run_eval(_cfg(tmp_path, "gt", episodes=6, strips=2), progress=False, world=CoinWorld())
    cfg = _cfg(tmp_path, "imagined", episodes=6, strips=2, ground_truth=str(tmp_path / "gt"), report=True)
    run_eval(cfg, progress=False, world=CoinWorld(bias=0.2))
    page = tmp_path / "imagined/report.html"
    args = [_chromium(), *CHROMIUM_FLAGS]
    dom = chromium_dom(page)
    for marker in ('id="success-bars"', 'id="scatter"', 'id="ranking"', 'id="metrics"', 'id="strips"'):
        assert marker in dom, marker
    assert dom.count("<svg") >= 2  # bars and scatter
    assert dom.count("<img") >= 2 * 2 * 2  # ground truth + imagined strips, 2 seeds, >= 2 policies
    for p in POLICIES:
        assert p in dom
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*args, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.std() > 10  # drawn, not a blank page
