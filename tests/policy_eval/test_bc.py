"""BC CNN policies: exact save/load, learning on a toy task, loading by path and the shipped zoo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.errors import SpecError, UsageError
from common.types import Observation
from policy_eval.policies import make_policy, policy_info
from policy_eval.policies.bc import BCConfig, BCNet, BCPolicy, is_bc_checkpoint, train_policy
from policy_eval.policies.zoo import BC_CHECKPOINTS, checkpoint_path


def _toy_episodes(n: int = 6, T: int = 12, size: int = 32, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A red square at a random place; the action points from the ee (state[:2]) to the square."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        frames, states, actions = [], [], []
        for _ in range(T):
            y, x = rng.integers(2, size - 6, 2)
            img = np.full((1, 3, size, size), 200, np.uint8)
            img[0, :, y : y + 4, x : x + 4] = np.array([220, 20, 20])[:, None, None]
            ee = rng.uniform(-1, 1, 2)
            target = np.array([x, y]) / size * 2 - 1
            frames.append(img)
            states.append(np.array([*ee, 0.1, 0.0], np.float32))
            actions.append(np.array([*(target - ee) * 0.05, 0.0, 1.0], np.float32))
        eps.append(
            {
                "frames": np.stack(frames),
                "state": np.stack(states),
                "actions": np.stack(actions),
                "env_state": np.zeros((T, 7), np.float32),
                "success": np.array([False] * (T - 1) + [True]),
            }
        )
    return eps


META = {"cameras": ["side"], "image_size": [32, 32], "fps": 10, "scene": None}
TINY = dict(channels=(8, 16, 16), hidden=64, batch_size=32, lr=3e-3, shift=0)


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    net = BCNet(BCConfig(cameras=["side"], image_size=(32, 32), **TINY))
    net.action_std.fill_(0.3)
    net.save_pretrained(tmp_path / "ckpt")
    assert is_bc_checkpoint(tmp_path / "ckpt")
    back = BCNet.from_pretrained(tmp_path / "ckpt")
    x, s = torch.randint(0, 255, (3, 1, 3, 32, 32), dtype=torch.uint8), torch.randn(3, 11)
    assert torch.equal(net.eval().act(x, s), back.act(x, s))


def test_training_learns_the_toy_task_and_saves_requested_steps(tmp_path):
    eps = _toy_episodes()
    cfg = BCConfig(steps=300, save_at=[20], **TINY)
    saved = train_policy(cfg, eps, META, tmp_path / "run", progress=False)
    assert [p.name for p in saved] == ["step-000020", "step-000300"]
    early, late = (BCNet.from_pretrained(p) for p in saved)
    x = torch.from_numpy(np.concatenate([e["frames"] for e in eps]))
    s = torch.from_numpy(np.concatenate([e["state"] for e in eps]))
    a = np.concatenate([e["actions"] for e in eps])[:, :2]
    err = lambda net: float(np.abs(net.act(x, s)[:, 0, :2].detach().numpy() - a).mean())  # noqa: E731
    spread = float(np.abs(a - a.mean(0)).mean())
    assert err(late) < 0.35 * spread  # it reads the square's position from the image
    assert err(late) < 0.6 * err(early)
    losses = [
        r["loss"]
        for r in map(__import__("json").loads, (tmp_path / "run/log.jsonl").read_text().splitlines())
    ]
    assert losses[-1] < losses[0] / 5


def test_fine_tuning_starts_from_the_checkpoint(tmp_path):
    eps = _toy_episodes()
    (base,) = train_policy(BCConfig(steps=20, **TINY), eps, META, tmp_path / "base", progress=False)
    # zero steps of learning rate ~0: the fine-tuned net is the base (weights and normalisation kept)
    cfg = BCConfig(steps=1, init=str(base), **{**TINY, "lr": 1e-12})
    (tuned,) = train_policy(cfg, _toy_episodes(seed=1), META, tmp_path / "tuned", progress=False)
    a, b = BCNet.from_pretrained(base), BCNet.from_pretrained(tuned)
    for k, v in a.state_dict().items():
        assert torch.allclose(v, b.state_dict()[k], atol=1e-6), k
    # and it goes on learning from there, with the base's normalisation
    (more,) = train_policy(
        BCConfig(steps=150, init=str(base), **TINY), eps, META, tmp_path / "more", progress=False
    )
    x = torch.from_numpy(np.concatenate([e["frames"] for e in eps]))
    s = torch.from_numpy(np.concatenate([e["state"] for e in eps]))
    act = np.concatenate([e["actions"] for e in eps])[:, :2]
    err = lambda net: float(np.abs(net.act(x, s)[:, 0, :2].detach().numpy() - act).mean())  # noqa: E731
    tuned_net = BCNet.from_pretrained(more)
    assert err(tuned_net) < 0.7 * err(a)
    assert torch.equal(tuned_net.action_mean, a.action_mean) and torch.equal(tuned_net.state_std, a.state_std)
    with pytest.raises(Exception, match="hidden 64 != 32"):
        train_policy(
            BCConfig(steps=1, init=str(base), **{**TINY, "hidden": 32}),
            eps,
            META,
            tmp_path / "x",
            progress=False,
        )


def test_policy_acts_on_observations_of_another_size(tmp_path):
    net = BCNet(BCConfig(cameras=["side"], image_size=(32, 32), **TINY))
    net.save_pretrained(tmp_path / "ckpt")
    policy = policy_info(str(tmp_path / "ckpt")).factory(None, 0)
    obs = Observation(
        images={"side": np.zeros((64, 64, 3), np.uint8)}, state=np.zeros(11, np.float32), task=""
    )
    chunk = policy.act(obs)
    assert chunk.shape == (1, 4) and chunk.dtype == np.float32 and 0 <= chunk[0, 3] <= 1
    with pytest.raises(UsageError, match="needs camera 'side'"):
        policy.act(Observation(images={"top": np.zeros((32, 32, 3), np.uint8)}, state=np.zeros(11), task=""))


def test_unknown_paths_and_names_are_clear_errors(tmp_path):
    (tmp_path / "not_a_ckpt").mkdir()
    with pytest.raises(SpecError, match="not a policy checkpoint"):
        policy_info(str(tmp_path / "not_a_ckpt"))
    with pytest.raises(SpecError, match="unknown policy 'nope'.*registered: bc_early"):
        policy_info("nope")


def test_shipped_zoo_checkpoints_load_and_differ(push_spec):
    outs = []
    obs = Observation(
        images={"side": np.full((64, 64, 3), 120, np.uint8)}, state=np.zeros(11, np.float32), task=""
    )
    for name in BC_CHECKPOINTS:
        assert checkpoint_path(name).is_dir(), f"shipped checkpoint {name} missing"
        policy = make_policy(name, push_spec)
        assert isinstance(policy, BCPolicy) and not policy_info(name).privileged
        outs.append(policy.act(obs))
    assert not np.allclose(outs[0], outs[-1])  # different training steps, different policies
