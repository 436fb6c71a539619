"""UP-MPC around a policy: it plans towards the goal in the ensemble, its uncertainty term steers
conservative and optimistic modes apart, it is a function of the seed, and a YAML file names one."""

from __future__ import annotations

import numpy as np
import pytest

from common.types import Observation
from policy_eval.mpc import UPMPC, MPCConfig
from policy_eval.policies.base import policy_info
from scenes.spec import SceneSpec
from tests.worldmodels.toy import TOY_META, toy_episode, toy_positions, toy_scene
from worldmodels.ensemble import DynamicsEnsemble, EnsembleConfig, EnsembleTrainConfig, train_ensemble


class Still:
    """A base policy that never moves: all the progress must come from the planner."""

    def reset(self, seed=None):
        pass

    def act(self, obs):
        return np.zeros((1, 4), np.float32)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    eps = [toy_episode(s, T=20) for s in range(40)]
    cfg = EnsembleConfig(
        members=5,
        elites=4,
        hidden=64,
        layers=2,
        train=EnsembleTrainConfig(steps=500, batch_size=64, lr=3e-3, warmup=10, holdout_episodes=5),
    )
    path = train_ensemble(
        cfg, eps, {**TOY_META, "scene": toy_scene()}, tmp_path_factory.mktemp("m") / "e", progress=False
    )
    spec = SceneSpec.model_validate(toy_scene())
    return DynamicsEnsemble.from_pretrained(path), spec


def _obs(pos):
    return Observation(
        images={},
        state=np.array([pos[0], pos[1], 0.0], np.float32),
        task="",
        environment_state=np.array([pos[0] / 100, pos[1] / 100, 0, 1, 0, 0, 0], np.float32),
    )


def _mpc(toy, **kw):
    model, spec = toy
    # the toy world's actions are ~1 (2 px per step): max_delta 1 and a spread of one max_delta
    cfg = MPCConfig(
        base="x", ensemble="x", privileged=True, ntraj=12, horizon=3, spread=1.0, dims=[0, 1], **kw
    )
    spec = spec.model_copy(update={"control": spec.control.model_copy(update={"max_delta": 1.0})})
    return UPMPC(Still(), model, spec, cfg, seed=0)


def _drive(policy, start, steps=6):
    pos = np.asarray(start, float)
    policy.reset(3)
    for _ in range(steps):
        a = policy.act(_obs(pos))
        pos = toy_positions(np.concatenate([a, a]), pos)[1]
    return pos


def test_the_planner_moves_a_still_policy_towards_the_goal(toy):
    start = [5.0, 8.0]  # the goal region is x > 11 px (0.11)
    end = _drive(_mpc(toy, mode="plain"), start)
    assert end[0] > start[0] + 1.0
    assert np.array_equal(end, _drive(_mpc(toy, mode="plain"), start))  # a function of the seed


def test_conservative_and_optimistic_modes_pick_by_uncertainty(toy):
    chosen = {}
    for mode in ("conservative", "optimistic"):
        mpc = _mpc(toy, mode=mode, rate=1e4)  # the uncertainty term dominates the reward
        mpc.reset(1)
        mpc.act(_obs([6.0, 8.0]))
        u = mpc.last["uncertainty"]
        chosen[mode] = u[mpc.last["chosen"]]
        assert chosen[mode] == (min(u) if mode == "conservative" else max(u))
    assert chosen["conservative"] < chosen["optimistic"]


def test_a_yaml_file_names_an_mpc_policy(tmp_path):
    f = tmp_path / "mpc.yaml"
    f.write_text("type: up_mpc\nbase: image_medium\nensemble: runs/nowhere\nmode: optimistic\n")
    info = policy_info(str(f))
    assert not info.privileged and "optimistic" in info.description and "image_medium" in info.description
    f.write_text("type: up_mpc\nbase: no_such_policy\nensemble: e\n")
    with pytest.raises(Exception, match="no_such_policy"):
        policy_info(str(f))
    f.write_text("type: up_mpc\nbase: image_medium\nensemble: e\nhorizon: 0\n")
    with pytest.raises(Exception, match="horizon"):
        policy_info(str(f))


def test_min_gain_keeps_the_base_action_unless_a_candidate_is_clearly_better(toy):
    start = [5.0, 8.0]
    assert np.array_equal(_drive(_mpc(toy, mode="plain", min_gain=1e9), start), start)  # never overruled
    assert _drive(_mpc(toy, mode="plain", min_gain=0.5), start)[0] > start[0] + 1.0
