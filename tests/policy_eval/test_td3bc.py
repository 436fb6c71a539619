"""TD3+BC on states: the shaped reward, learning a toy behaviour, log_prob, exact save/load, determinism,
loading by path and the train policy CLI. Synthetic push_cube episodes built with numpy; no simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from common.errors import SpecError, UsageError
from common.types import Observation
from policy_eval.policies import policy_info
from policy_eval.policies.td3bc import (
    TD3BC,
    TD3BCConfig,
    TD3BCPolicy,
    Transitions,
    action_bounds,
    is_td3bc_checkpoint,
    load_td3bc_config,
    reward_fn,
    train_td3bc,
    transitions,
    window_transitions,
)
from tests.conftest import ROOT

CENTER = np.array([0.50, 0.15])  # push_cube's target square (0.10 x 0.10)
TINY = dict(hidden=16, batch_size=64, lr=1e-3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks: one thread is far faster than two contending for a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _episode(cube_y: list[float], cube_x: float = 0.5, yaw: float = 0.0) -> dict[str, np.ndarray]:
    """A push_cube episode whose cube takes the given y positions (the ee just behind it)."""
    T = len(cube_y)
    q = np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])
    env = np.array([[cube_x, y, 0.025, *q] for y in cube_y], np.float32)
    state = np.zeros((T, 11), np.float32)
    state[:, 0], state[:, 1], state[:, 2] = cube_x, np.asarray(cube_y) - 0.04, 0.025
    actions = np.zeros((T, 4), np.float32)
    actions[:-1, 1] = np.diff(cube_y)
    inside = np.all(np.abs(env[:, :2] - CENTER) <= 0.05, axis=1)
    return {"state": state, "env_state": env, "actions": actions, "success": inside}


def _toy_episodes(n: int = 24, T: int = 20, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """A behaviour policy pushing the cube towards the target: a_xy = 0.3 (centre - cube) + noise."""
    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(n):
        cube = np.array([rng.uniform(0.45, 0.55), rng.uniform(-0.12, -0.04), 0.025])
        yaw = rng.uniform(-0.5, 0.5)
        q = np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]) * rng.choice([-1, 1])  # q and -q
        states, envs, actions = [], [], []
        for _ in range(T):
            a = np.zeros(4)
            a[:2] = np.clip(0.3 * (CENTER - cube[:2]), -0.03, 0.03) + rng.normal(0, 0.001, 2)
            states.append([cube[0], cube[1] - 0.04, 0.025, 0.0, *np.zeros(7)])
            envs.append([*cube, *q])
            actions.append(a)
            cube[:2] += a[:2]
        env = np.array(envs, np.float32)
        eps.append(
            {
                "state": np.array(states, np.float32),
                "env_state": env,
                "actions": np.array(actions, np.float32),
                "success": np.all(np.abs(env[:, :2] - CENTER) <= 0.05, axis=1),
            }
        )
    return eps


def _model(spec, **kw) -> TD3BC:
    """An untrained model for push_cube states (11 proprio + 7 cube pose) with some normalisation."""
    torch.manual_seed(0)
    model = TD3BC(TD3BCConfig(obs_dim=18, action_dim=4, **{**TINY, **kw}))
    low, high = action_bounds(spec)
    model.obs_mean.copy_(torch.linspace(-0.1, 0.3, 18))
    model.obs_std.copy_(torch.linspace(0.05, 0.2, 18))
    model.action_low.copy_(torch.from_numpy(low))
    model.action_high.copy_(torch.from_numpy(high))
    return model.eval()


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_reward_is_the_shaped_margin_plus_success_and_ends_at_success(push_spec):
    # margins of y = 0.05, 0.08, 0.12, 0.13 (x on the centre line): -0.05, -0.02, +0.02, +0.03
    into = _episode([0.05, 0.08, 0.12, 0.13])
    away = _episode([0.05, 0.04, 0.00])  # pushed away from the target, never solved
    tr = transitions([into, away], push_spec)
    assert len(tr) == 2 + 2  # `into` ends at its first success frame
    np.testing.assert_allclose(tr.rewards, [0.03, 0.04 + 1.0, -0.01, -0.04], atol=1e-6)
    np.testing.assert_array_equal(tr.dones, [0, 1, 0, 0])
    np.testing.assert_array_equal(tr.obs[1], tr.next_obs[0])
    np.testing.assert_allclose(tr.actions[:2, 1], [0.03, 0.04], atol=1e-7)
    assert tr.obs.shape == (4, 18) and tr.obs.dtype == np.float32

    # the same reward on state windows [N, T, S], with the predicate judging success
    states = np.concatenate([into["state"], into["env_state"]], 1)[None]
    rewards, dones = reward_fn(push_spec)(states)
    np.testing.assert_allclose(rewards[0], [0.03, 0.04 + 1.0, 0.01 + 1.0], atol=1e-6)
    np.testing.assert_array_equal(dones[0], [False, True, True])
    np.testing.assert_allclose(reward_fn(push_spec).margins(states)[0], [-0.05, -0.02, 0.02, 0.03], atol=1e-6)
    win = window_transitions(states, into["actions"][None, :-1], push_spec)
    np.testing.assert_allclose(win.rewards, tr.rewards[:2], atol=1e-6)
    np.testing.assert_array_equal(win.dones, [0, 1])

    free = push_spec.model_copy(update={"task": push_spec.task.model_copy(update={"success": None})})
    with pytest.raises(SpecError, match="no task.success predicate"):
        transitions([into], free)


def test_actor_learns_the_behaviour_policy(push_spec, tmp_path):
    eps = _toy_episodes()
    data = transitions(eps, push_spec)
    assert data.dones.sum() > 10  # most episodes reach the target
    # BC-dominated (small alpha): this tiny critic extrapolates poorly off the data's actions; the Q term's
    # direction is tested on a bandit below
    cfg = TD3BCConfig(steps=300, save_at=[1], alpha=0.1, **{**TINY, "lr": 3e-3})
    saved = train_td3bc(cfg, data, tmp_path / "run", progress=False)
    assert [p.name for p in saved] == ["step-000001", "step-000300"]
    early, late = (TD3BCPolicy.from_pretrained(p) for p in saved)
    obs = torch.from_numpy(data.obs)
    scale = 2 / (data.action_high - data.action_low)  # errors in normalised action units
    err = lambda p: float(np.abs((p.mean_action(obs).numpy() - data.actions) * scale)[:, :2].mean())  # noqa: E731
    assert err(late) < 0.3 * err(early), (err(early), err(late))
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 300 and {"critic_loss", "actor_loss", "bc_mse", "lambda"} <= set(log[-1])
    assert json.loads((tmp_path / "run/config.json").read_text())["obs_dim"] == 18


def test_critics_bootstrap_until_done_and_the_actor_climbs_q(push_spec, tmp_path):
    low, high = action_bounds(push_spec)
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 0.3, (256, 18)).astype(np.float32)
    obs[:, 0] = np.repeat([1.0, -1.0], 128)  # first half: a self-loop that never ends; second: ends
    a_norm = rng.uniform(-1, 1, (256, 4)).astype(np.float32)
    actions = low + (a_norm + 1) / 2 * (high - low)
    dones = np.repeat([0.0, 1.0], 128)
    # reward 1 each step: Q = 1 / (1 - discount) = 2 on the loop, 1 where the episode ends
    chain = Transitions(obs, actions, np.ones(256), obs, dones, low, high)
    cfg = TD3BCConfig(steps=200, discount=0.5, tau=1.0, policy_freq=1, **{**TINY, "lr": 3e-3})
    model = TD3BC.from_pretrained(train_td3bc(cfg, chain, tmp_path / "chain", progress=False)[-1])
    with torch.no_grad():
        q1, q2 = model.critic(model.normalise_obs(torch.from_numpy(obs)), torch.from_numpy(a_norm))
    for q in (q1, q2):
        assert abs(float(q[:128].mean()) - 2.0) < 0.25 and abs(float(q[128:].mean()) - 1.0) < 0.15
    # a bandit rewarding the normalised y action: BC alone would stay at the data's mean (about 0)
    bandit = Transitions(obs, actions, a_norm[:, 1], obs, np.ones(256), low, high)
    cfg = TD3BCConfig(steps=150, alpha=2.5, **{**TINY, "lr": 3e-3})
    policy = TD3BCPolicy.from_pretrained(train_td3bc(cfg, bandit, tmp_path / "bandit", progress=False)[-1])
    y = policy.mean_action(torch.from_numpy(obs))[:, 1] / push_spec.control.max_delta
    assert abs(float(a_norm[:, 1].mean())) < 0.1 and float(y.mean()) > 0.8


def test_log_prob_peaks_at_the_mean_action_and_its_gradient_points_there(push_spec):
    model = _model(push_spec, action_std=0.5)
    policy = TD3BCPolicy(model)
    obs = torch.randn(6, 18) * 0.1
    mu = policy.mean_action(obs).detach()
    low, high = model.action_low, model.action_high
    assert torch.all(mu >= low) and torch.all(mu <= high)
    peak = policy.log_prob(obs, mu)
    assert peak.shape == (6,)
    torch.testing.assert_close(peak, torch.full((6,), -4 * (np.log(0.5) + 0.5 * np.log(2 * np.pi))))
    a = (mu + torch.randn(6, 4) * 0.3 * (high - low)).requires_grad_(True)
    lp = policy.log_prob(obs, a)
    assert torch.all(lp < peak)
    (grad,) = torch.autograd.grad(lp.sum(), a)
    # d/da of -0.5 ((norm(a) - norm(mu)) / std)^2, norm(a) = 2 (a - low) / (high - low) - 1
    expected = -(a.detach() - mu) * (2 / (high - low)) ** 2 / 0.5**2
    torch.testing.assert_close(grad, expected)
    assert torch.all(torch.sign(grad) == torch.sign(mu - a.detach()))
    step = policy.log_prob(obs, a.detach() + 1e-4 * grad / grad.norm(dim=1, keepdim=True))
    assert torch.all(step > lp)


def test_save_load_round_trip_is_exact_and_loads_by_path(push_spec, tmp_path):
    policy = TD3BCPolicy(_model(push_spec))
    path = policy.save_pretrained(tmp_path / "ckpt")
    assert is_td3bc_checkpoint(path) and not is_td3bc_checkpoint(tmp_path)
    info = policy_info(str(path))
    assert info.privileged
    back = info.factory(push_spec, 0)
    assert isinstance(back, TD3BCPolicy)
    for k, v in policy.model.state_dict().items():
        assert torch.equal(v, back.model.state_dict()[k]), k
    rng = np.random.default_rng(0)
    for _ in range(3):
        obs = Observation(
            images={},
            state=rng.normal(0, 0.2, 11).astype(np.float32),
            task="",
            environment_state=np.array([0.5, 0.0, 0.025, -1, 0, 0, 0], np.float32),  # -q: canonicalised
        )
        chunk = back.act(obs)
        assert chunk.shape == (1, 4) and chunk.dtype == np.float32
        np.testing.assert_array_equal(chunk, policy.act(obs))  # atol = 0
        assert 0 <= chunk[0, 3] <= 1 and np.all(np.abs(chunk[0, :3]) <= push_spec.control.max_delta)
        obs.environment_state = np.array([0.5, 0.0, 0.025, 1, 0, 0, 0], np.float32)
        np.testing.assert_array_equal(back.act(obs), chunk)
    with pytest.raises(UsageError, match="needs observation.environment_state"):
        back.act(obs.without_privileged())
    with pytest.raises(UsageError, match="trained on states of 18 dims"):
        back.act(Observation(images={}, state=np.zeros(4), task="", environment_state=np.zeros(7)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="not a policy checkpoint.*td3bc"):
        policy_info(str(tmp_path / "empty"))


def test_same_seed_gives_identical_weights_and_synthetic_data_mixes_in(push_spec, tmp_path):
    data = transitions(_toy_episodes(n=6), push_spec)
    cfg = TD3BCConfig(steps=20, **TINY)
    (a,) = train_td3bc(cfg, data, tmp_path / "a", progress=False)
    (b,) = train_td3bc(cfg, data, tmp_path / "b", progress=False)
    (c,) = train_td3bc(cfg.model_copy(update={"seed": 1}), data, tmp_path / "c", progress=False)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["actor.net.0.weight"], wc["actor.net.0.weight"])

    eps = _toy_episodes(n=4, seed=7)
    windows = np.stack([np.concatenate([e["state"], e["env_state"]], 1) for e in eps])
    synthetic = window_transitions(windows, np.stack([e["actions"][:-1] for e in eps]), push_spec)
    (d,) = train_td3bc(cfg, data, tmp_path / "d", extra=synthetic, extra_fraction=0.5, progress=False)
    wd = _weights(d)
    assert not torch.equal(wa["critic.q1.0.weight"], wd["critic.q1.0.weight"])
    assert torch.equal(wa["obs_mean"], wd["obs_mean"])  # normalisation from the real data only
    with pytest.raises(UsageError, match="needs extra transitions"):
        train_td3bc(cfg, data, tmp_path / "e", extra_fraction=0.5, progress=False)


def test_regeneration_replaces_the_synthetic_data_with_the_agent_as_it_is(push_spec, tmp_path):
    data = transitions(_toy_episodes(n=6), push_spec)
    cfg = TD3BCConfig(steps=30, **TINY)

    def windows(seed: int):
        eps = _toy_episodes(n=4, seed=seed)
        states = np.stack([np.concatenate([e["state"], e["env_state"]], 1) for e in eps])
        return window_transitions(states, np.stack([e["actions"][:-1] for e in eps]), push_spec)

    first = windows(7)
    seen: list[tuple[int, torch.Tensor]] = []

    def regenerate(agent: TD3BC, step: int):
        assert not agent.training  # a copy of the agent in eval mode: freezing it leaves training alone
        agent.requires_grad_(False)
        seen.append((step, agent.actor.net[0].weight.detach().clone()))
        return windows(100 + step)

    kw = {"extra": first, "extra_fraction": 0.5, "progress": False}
    (a,) = train_td3bc(cfg, data, tmp_path / "a", regenerate=regenerate, regenerate_every=10, **kw)
    assert [s for s, _ in seen] == [10, 20]  # not at the last step: nothing would train on it
    assert not torch.equal(seen[0][1], seen[1][1])  # the agent as it is at each regeneration
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [r["regenerated"]["step"] for r in rows if "regenerated" in r] == [10, 20]
    (b,) = train_td3bc(cfg, data, tmp_path / "b", **kw)  # the same start, never regenerated
    wa, wb = _weights(a), _weights(b)
    assert torch.equal(seen[0][1], _weights_at(tmp_path, cfg, data, kw, 10)["actor.net.0.weight"])
    assert not torch.equal(wa["critic.q1.0.weight"], wb["critic.q1.0.weight"])
    with pytest.raises(UsageError, match="regenerate needs"):
        train_td3bc(cfg, data, tmp_path / "c", regenerate=regenerate, regenerate_every=0, **kw)


def _weights_at(tmp_path, cfg, data, kw, step: int) -> dict[str, torch.Tensor]:
    """The weights of a run without regeneration at `step` (identical to a regenerating run's until then)."""
    (w,) = train_td3bc(cfg.model_copy(update={"steps": step}), data, tmp_path / f"upto{step}", **kw)
    return _weights(w)


def test_config_rejects_unknown_keys_and_ships_the_defaults(tmp_path):
    with pytest.raises(ValidationError, match="extra"):
        TD3BCConfig(hiden=16)
    with pytest.raises(ValidationError):
        TD3BCConfig(type="bc_cnn")
    with pytest.raises(ValidationError, match="outside 1..steps"):
        TD3BCConfig(steps=10, save_at=[20])
    path = ROOT / "configs/policies/td3bc.yaml"
    assert load_td3bc_config(path) == TD3BCConfig()
    with pytest.raises(SpecError, match="td3bc.yaml: polcy_freq: unknown key; allowed: version, type"):
        load_td3bc_config(path, {"polcy_freq": 3})


def _write_dataset(root, episodes, scene: dict | None) -> None:
    """A minimal LeRobot v3.0 dataset without cameras (what `load_episodes(frames=False)` reads)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    lengths = [len(e["actions"]) for e in episodes]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    vec = lambda key: pa.array(np.concatenate([e[key] for e in episodes]).tolist(), pa.list_(pa.float32()))  # noqa: E731
    next_success = np.concatenate([np.append(e["success"][1:], e["success"][-1]) for e in episodes])
    data = {
        "index": pa.array(np.arange(sum(lengths)), pa.int64()),
        "action": vec("actions"),
        "observation.state": vec("state"),
        "observation.environment_state": vec("env_state"),
        "next.success": pa.array(next_success),
    }
    pq.write_table(pa.table(data), root / "data/chunk-000/file-000.parquet")
    rows = {
        "episode_index": list(range(len(episodes))),
        "length": lengths,
        "data/chunk_index": [0] * len(episodes),
        "data/file_index": [0] * len(episodes),
        "dataset_from_index": starts.tolist(),
    }
    pq.write_table(pa.table(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    features = {k: {"dtype": "float32"} for k in data}
    info = {
        "codebase_version": "v3.0",
        "fps": 10,
        "features": features,
        "total_episodes": len(episodes),
        "total_frames": sum(lengths),
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
    }
    (root / "meta/info.json").write_text(json.dumps(info))
    if scene is not None:
        (root / "meta/dreamtwin.json").write_text(json.dumps({"format_version": 1, "scene": scene}))


def test_train_policy_cli_dispatches_on_the_config_type(push_spec, tmp_path):
    from typer.testing import CliRunner

    from dreamtwin.cli import app

    eps = _toy_episodes(n=4)
    _write_dataset(tmp_path / "ds", eps, push_spec.model_dump(mode="json"))
    _write_dataset(tmp_path / "bare", eps, None)
    config = str(ROOT / "configs/policies/td3bc.yaml")
    args = ["train", "policy", "--config", config, "--set", "steps=3", "--set", "hidden=16"]
    r = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    ckpt = tmp_path / "run/step-000003"
    assert is_td3bc_checkpoint(ckpt) and TD3BCPolicy.from_pretrained(ckpt).cfg.obs_dim == 18
    r = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "bare"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "records no scene" in r.output
