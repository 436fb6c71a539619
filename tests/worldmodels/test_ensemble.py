"""The dynamics ensemble: it learns the toy world's dynamics, its members disagree where data is thin, it
saves and loads exactly, and as a World its episodes are a function of the seed alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.types import Observation
from scenes.spec import SceneSpec
from tests.worldmodels.toy import TOY_META, toy_episode, toy_scene
from worldmodels.checkpoint import CheckpointError
from worldmodels.ensemble import (
    DynamicsEnsemble,
    EnsembleConfig,
    EnsembleTrainConfig,
    evaluate_ensemble,
    rollout_states,
    train_ensemble,
)
from worldmodels.ensemble_world import EnsembleWorld


def _config(steps: int = 400, **kw) -> EnsembleConfig:
    return EnsembleConfig(
        members=4,
        elites=3,
        hidden=64,
        layers=2,
        train=EnsembleTrainConfig(
            steps=steps, batch_size=64, lr=3e-3, warmup=10, holdout_episodes=6, val_every=200
        ),
        **kw,
    )


@pytest.fixture(scope="module")
def data():
    return [toy_episode(s, T=20) for s in range(30)], {**TOY_META, "scene": toy_scene()}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    eps, meta = data
    out = tmp_path_factory.mktemp("ensemble") / "run"
    return out, train_ensemble(_config(), eps, meta, out, progress=False)


def test_training_lowers_the_loss_and_beats_copying_the_last_state(trained, data):
    out, path = trained
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert log[-1]["mse"] < 0.3 * log[0]["mse"]
    report = json.loads((out / "evaluation.json").read_text())
    assert report["episodes"] == 6 and len(report["elites"]) == 3
    eps, _ = data
    model = DynamicsEnsemble.from_pretrained(path)
    held = list(range(24, 30))
    # the toy square moves 2 px (0.02 in env units) per unit action: after 5 steps copying the start is far off
    copy = np.mean(
        [
            np.linalg.norm(eps[k]["env_state"][t + 5, :3] - eps[k]["env_state"][t, :3]) * 100
            for k in held
            for t in range(0, 14, 5)
        ]
    )
    assert report["open_loop"]["5"]["object_error_cm"] < 0.35 * copy
    again = evaluate_ensemble(model, eps, held)
    assert again["open_loop"]["5"]["object_error_cm"] == pytest.approx(
        report["open_loop"]["5"]["object_error_cm"]
    )


def test_members_disagree_more_off_the_data(trained, data):
    _, path = trained
    model = DynamicsEnsemble.from_pretrained(path)
    eps, _ = data
    s = np.concatenate([eps[25]["state"][:5], eps[25]["env_state"][:5]], 1)
    a = eps[25]["actions"][:5]
    on = model.step(torch.from_numpy(s), torch.from_numpy(a)).uncertainty.mean()
    far = model.step(torch.from_numpy(s) + 50.0, torch.from_numpy(a) * 20).uncertainty.mean()
    assert float(far) > 3 * float(on) > 0


def test_save_load_round_trip_and_one_line_errors(trained, tmp_path):
    _, path = trained
    model = DynamicsEnsemble.from_pretrained(path)
    model.save_pretrained(tmp_path / "copy")
    again = DynamicsEnsemble.from_pretrained(tmp_path / "copy")
    x, a = torch.randn(5, model.cfg.dim), torch.randn(5, model.cfg.action_dim)
    assert torch.equal(model.predict(x, a)[0], again.predict(x, a)[0])
    assert torch.equal(model.elite, again.elite)
    cfg = json.loads((tmp_path / "copy" / "config.json").read_text())
    cfg["hidden"] = 32
    (tmp_path / "copy" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        DynamicsEnsemble.from_pretrained(tmp_path / "copy")


def test_physics_inputs_are_required_when_configured(data, tmp_path):
    eps, meta = data
    names = ["cube.mass_scale", "table.friction_scale"]
    eps = [
        {**e, "randomization": np.tile([1.0 + 0.1 * k, 0.9], (len(e["actions"]), 1)).astype(np.float32)}
        for k, e in enumerate(eps)
    ]
    path = train_ensemble(
        _config(steps=5, physics=names),
        eps,
        {**meta, "randomization_names": names},
        tmp_path / "r",
        progress=False,
    )
    model = DynamicsEnsemble.from_pretrained(path)
    spec = SceneSpec.model_validate(toy_scene())
    with pytest.raises(Exception, match="physics"):
        EnsembleWorld(model, spec, physics={"cube.mass_scale": 1.0})
    EnsembleWorld(model, spec, physics={"cube.mass_scale": 1.0, "table.friction_scale": 1.0})


def _obs(e: dict, t: int = 0) -> Observation:
    return Observation(images={}, state=e["state"][t], task="", environment_state=e["env_state"][t])


def test_an_episode_is_a_function_of_its_seed_not_its_batch(trained, data):
    _, path = trained
    eps, _ = data
    spec = SceneSpec.model_validate(toy_scene())
    model = DynamicsEnsemble.from_pretrained(path)

    def run(seeds: list[int], starts: list[int]) -> list[np.ndarray]:
        world = EnsembleWorld(model, spec)
        world.reset_batch([_obs(eps[k]) for k in starts], seeds)
        out: list[list[np.ndarray]] = [[] for _ in seeds]
        for t in range(6):
            res = world.step_batch([eps[k]["actions"][t : t + 1] for k in starts])
            for i, r in enumerate(res):
                if r is not None:
                    out[i].append(r.last.environment_state)
        return [np.stack(o) for o in out]

    alone = run([7], [25])[0]
    batched = run([3, 7, 9], [24, 25, 26])
    assert np.array_equal(alone, batched[1])
    assert not np.array_equal(run([8], [25])[0], alone)  # another seed draws other members and noise
    # the sampled rollout stays near the mean rollout on held-out data
    mean, _ = rollout_states(
        model,
        np.concatenate([eps[25]["state"][:1], eps[25]["env_state"][:1]], 1),
        eps[25]["actions"][None, :6],
    )
    assert np.abs(alone[:, :2] - mean[0, 1:, 3:5]).max() < 0.02


def test_success_and_margin_follow_the_scene_predicate(trained, data):
    _, path = trained
    eps, _ = data
    spec = SceneSpec.model_validate(toy_scene())
    world = EnsembleWorld(DynamicsEnsemble.from_pretrained(path), spec, deterministic=True)
    # an episode that moves the square right until it enters the region x > 0.11
    e = eps[25]
    world.reset_batch([_obs(e)], [0])
    push = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    margins, r = [], None
    for _ in range(spec.task.max_steps):
        r = world.step_batch([push])[0]
        if r is None:
            break
        margins.append(r.info["margin"])
        assert r.info["success"] == (r.info["margin"] >= 0)
        assert r.info["uncertainty"] >= 0
        if r.done:
            break
    assert r is not None and r.info["success"] and r.done
    assert margins[0] < 0 <= margins[-1]
    assert world.step_batch([push]) == [None]
