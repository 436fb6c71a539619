"""Trust scores of imagined episodes: the features see implausible motion and fragile verdicts, the
calibration file is strict, the evaluation job records trust and re-runs only untrusted episodes in
the twin."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.errors import SpecError
from common.types import Episode, EpisodeStep, Observation
from policy_eval.evaluate import EpisodeLog, EvalConfig, _fallback, run_eval
from policy_eval.trust import (
    TrustCalibration,
    TrustChecker,
    fit_logistic,
    load_calibration,
    write_calibration,
)
from scenes.spec import SceneSpec
from tests.conftest import PUSH
from tests.policy_eval.fakes import SKILLS, BatchedCoinWorld, CoinWorld
from tests.worldmodels.toy import TOY_META, toy_episode, toy_positions, toy_scene
from worldmodels.ensemble import DynamicsEnsemble, EnsembleConfig, EnsembleTrainConfig, train_ensemble


def test_fit_logistic_recovers_a_known_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2))
    p = 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))
    y = (rng.random(4000) < p).astype(float)
    b, w = fit_logistic(x, y, l2=1e-6)
    assert b == pytest.approx(0.5, abs=0.15)
    assert w == pytest.approx([2.0, -1.0], abs=0.2)


@pytest.fixture(scope="module")
def toy_ensemble(tmp_path_factory):
    eps = [toy_episode(s, T=20) for s in range(30)]
    cfg = EnsembleConfig(
        members=4,
        elites=3,
        hidden=64,
        layers=2,
        train=EnsembleTrainConfig(steps=400, batch_size=64, lr=3e-3, warmup=10, holdout_episodes=4),
    )
    out = tmp_path_factory.mktemp("trust") / "ens"
    return train_ensemble(cfg, eps, {**TOY_META, "scene": toy_scene()}, out, progress=False)


def _imagined(start: np.ndarray, actions: np.ndarray, teleport: float = 0.0) -> Episode:
    """A toy episode as a world model might imagine it: the toy dynamics, or with the square jumping
    `teleport` px to the right at step 3 (no action explains it)."""
    pos = toy_positions(np.concatenate([actions, actions[-1:]]), start)
    pos[3:, 0] = np.clip(pos[3:, 0] + teleport, 2, 14)
    obs = [
        Observation(
            images={},
            state=np.array([p[0], p[1], 0.0], np.float32),
            task="",
            environment_state=np.array([p[0] / 100, p[1] / 100, 0, 1, 0, 0, 0], np.float32),
        )
        for p in pos
    ]
    spec = SceneSpec.model_validate(toy_scene())
    steps = []
    for t, a in enumerate(actions):
        x = obs[t + 1].environment_state
        assert x is not None
        ok = x[0] > spec.task.success.typed_params().center[0] - spec.task.success.typed_params().size[0] / 2  # type: ignore[union-attr]
        steps.append(EpisodeStep(action=a, observation=obs[t + 1], success=bool(ok)))
        if ok:
            break
    return Episode(initial_observation=obs[0], steps=steps, policy_id="p", world_id="w", seed=0)


def test_features_see_implausible_motion_and_disagreeing_replays(toy_ensemble):
    spec = SceneSpec.model_validate(toy_scene())
    checker = TrustChecker(
        TrustCalibration(ensemble="x", bias=0.0, weights={}),
        DynamicsEnsemble.from_pretrained(toy_ensemble),
        spec,
    )
    actions = np.tile(np.array([[0.0, 0.3, 0.0, 0.0]], np.float32), (8, 1))  # along y: never reaches x > 0.11
    start = np.array([5.0, 4.0])
    plausible, jumped = checker.features([_imagined(start, actions), _imagined(start, actions, teleport=7.0)])
    assert jumped["surprise_max"] > 5 * plausible["surprise_max"]
    assert plausible["replay_agrees"] == 1.0
    # the jump makes an imagined success that the ensemble's replay of the same actions does not reproduce
    assert jumped["margin"] >= 0 > jumped["replay_margin"]
    assert jumped["replay_agrees"] == 0.0
    assert plausible["margin"] < 0 and plausible["margin_abs"] == pytest.approx(-plausible["margin"])


def test_calibration_files_are_strict(tmp_path, toy_ensemble):
    f = tmp_path / "trust.json"
    write_calibration(f, TrustCalibration(ensemble=str(toy_ensemble), bias=1.0, weights={"margin_abs": 2.0}))
    assert load_calibration(f).weights == {"margin_abs": 2.0}
    f.write_text(json.dumps({"ensemble": "e", "bias": 0, "weights": {"shininess": 1.0}}))
    with pytest.raises(SpecError, match="unknown features"):
        load_calibration(f)
    f.write_text(json.dumps({"ensemble": "e", "bias": 0, "weights": {}, "colour": 1}))
    with pytest.raises(SpecError, match="colour"):
        load_calibration(f)


@pytest.fixture(scope="module")
def coin_calibration(tmp_path_factory):
    """A trust.json over an (untrained) ensemble of the coin world's state sizes: trust varies with the
    imagined episode's surprise, so some episodes fall under the threshold."""
    root = tmp_path_factory.mktemp("coin")
    cfg = EnsembleConfig(members=3, elites=2, hidden=16, layers=1, state_dim=4, env_dim=7, action_dim=4)
    DynamicsEnsemble(cfg).save_pretrained(root / "ens")
    f = root / "trust.json"
    write_calibration(
        f, TrustCalibration(ensemble="ens", bias=0.0, weights={"surprise_mean": -100.0}, threshold=0.2)
    )
    return f


def test_the_job_records_trust_and_falls_back_to_the_twin_for_untrusted_episodes(tmp_path, coin_calibration):
    base = dict(
        scene=str(PUSH), policies=list(SKILLS), episodes=12, seed=0, videos=False, world="worldmodel:unused"
    )
    cfg = EvalConfig(
        **base, out=str(tmp_path / "imagined"), trust={"calibration": str(coin_calibration)}, report=True
    )
    res = run_eval(cfg, progress=False, world=BatchedCoinWorld(bias=0.2))
    rows = EpisodeLog(tmp_path / "imagined" / "episodes.jsonl").read()
    assert all(0 <= r["trust"] <= 1 and r["trusted"] == (r["trust"] >= 0.2) for r in rows)
    untrusted = {(r["policy"], r["seed"]) for r in rows if not r["trusted"]}
    assert 0 < len(untrusted) < len(rows)
    for p, entry in res["policies"].items():
        mine = [r for r in rows if r["policy"] == p]
        kept = [r for r in mine if r["trusted"]]
        assert entry["trusted"]["n"] == len(kept) and entry["trusted"]["set_aside"] == len(mine) - len(kept)
    from policy_eval.evaluate import trust_table

    table = trust_table(res)
    assert table is not None and table.row_count == len(SKILLS)
    page = (tmp_path / "imagined" / "report.html").read_text()
    assert 'id="trust"' in page and page.count("<li class=untrusted>") == len(untrusted)

    # the fallback re-runs exactly the untrusted episodes, in the ground-truth world
    twin = CoinWorld()
    fb_cfg = cfg.model_copy(update={"trust": cfg.trust.model_copy(update={"fallback": "twin"})})
    out = _fallback(fb_cfg, rows, twin, progress=False)
    ran = {
        (r["policy"], r["seed"]): r
        for r in EpisodeLog(tmp_path / "imagined" / "fallback" / "episodes.jsonl").read()
    }
    assert set(ran) == untrusted
    for r in out:
        if not r["trusted"]:
            assert r["fallback_success"] == ran[(r["policy"], r["seed"])]["success"]
    # resumed: nothing is run twice
    _fallback(fb_cfg, rows, twin, progress=False)
    assert len(EpisodeLog(tmp_path / "imagined" / "fallback" / "episodes.jsonl").read()) == len(untrusted)


def test_fallback_without_trust_scores_is_a_clear_error(tmp_path):
    cfg = EvalConfig(
        scene=str(PUSH),
        policies=list(SKILLS)[:2],
        episodes=2,
        seed=0,
        videos=False,
        world="worldmodel:unused",
        out=str(tmp_path / "x"),
        trust={"fallback": "twin"},
    )
    with pytest.raises(Exception, match="needs trust scores"):
        run_eval(cfg, progress=False, world=BatchedCoinWorld())
