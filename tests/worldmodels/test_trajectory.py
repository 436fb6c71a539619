"""Trajectory diffusion (EDM) with policy guidance: windows, the denoiser, training, guided sampling,
checkpoints and windows as episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.types import Observation
from tests.conftest import ROOT
from worldmodels.trajectory import (
    TrajectoryConfig,
    TrajectoryDiffusion,
    WindowSource,
    dataset_windows,
    episode_window_rows,
    guidance_schedule,
    is_trajectory_checkpoint,
    train_trajectory,
)

H = 8


def toy_episode(rng: np.random.Generator, T: int = 14, solve_at: int | None = None) -> dict[str, np.ndarray]:
    """A point hand that moves by its action: ee_{t+1} = ee_t + a_t (xyz), a constant action per episode;
    the 'cube' (a pose with unit quaternion) sits still."""
    a = np.tile(rng.uniform(-0.02, 0.02, (1, 4)).astype(np.float32), (T, 1))
    a[:, 3] = 1.0
    state = np.zeros((T, 11), np.float32)
    state[0, :3] = rng.uniform(0.3, 0.6, 3)
    for t in range(1, T):
        state[t, :3] = state[t - 1, :3] + a[t - 1, :3]
    state[:, 3] = 0.08
    env = np.tile(np.array([[0.5, 0.0, 0.02, 1.0, 0.0, 0.0, 0.0]], np.float32), (T, 1))
    success = np.zeros(T, bool)
    if solve_at is not None:
        success[solve_at:] = True
    return {"actions": a, "state": state, "env_state": env, "success": success}


def tiny_cfg(**kw) -> TrajectoryConfig:
    train = {
        "steps": 1500,
        "batch_size": 64,
        "lr": 2e-3,
        "warmup": 20,
        "holdout_episodes": 4,
        "val_every": 200,
    }
    return TrajectoryConfig.model_validate(
        {"horizon": H, "dim": 32, "depth": 2, "heads": 2, "sampler_steps": 12, "train": train, **kw}
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    episodes = [toy_episode(rng) for _ in range(40)]
    out = tmp_path_factory.mktemp("traj")
    path = train_trajectory(tiny_cfg(), episodes, {"fps": 10.0, "scene": None}, out, progress=False)
    return TrajectoryDiffusion.from_pretrained(path), episodes, out


def test_a_solved_episode_continues_as_an_absorbing_state():
    e = toy_episode(np.random.default_rng(1), T=10, solve_at=6)
    rows = episode_window_rows(e, H)
    assert len(rows) == 7 + H - 1  # cut at the first solved frame (6), then held for H - 1 steps
    np.testing.assert_array_equal(rows[6:, :18], np.repeat(rows[6:7, :18], H, 0))
    assert (rows[6:, 18:22] == 0).all() and (rows[6:, -1] == 1).all() and (rows[:6, -1] == 0).all()
    w = dataset_windows([e], H, [0])
    assert w.states.shape == (7, H, 18) and w.actions.shape == (7, H, 4)
    s, a, n = w.transitions()
    # transitions stop at the first solved step of each window
    assert len(s) == sum(min(int(np.flatnonzero(w.success[b])[0]), H - 1) for b in range(7))


def test_schedule_is_pgds():
    lam = guidance_schedule(2.0, 4)
    expect = 2.0 * np.array(
        [1 + 0.3 * np.sin(np.pi / 4), 0.75 + 0.3, 0.5 + 0.3 * np.sin(3 * np.pi / 4), 0.25]
    )
    np.testing.assert_allclose(lam, expect, atol=1e-12)
    assert (guidance_schedule(0.0, 8) == 0).all()


def test_an_untrained_denoiser_is_edms_skip_connection():
    cfg = tiny_cfg(state_dim=11, env_dim=7, action_dim=4)
    m = TrajectoryDiffusion(cfg)
    x = torch.randn(3, H, cfg.channels)
    sigma = torch.tensor([0.1, 1.0, 10.0])
    expect = x / (1 + sigma.reshape(-1, 1, 1) ** 2)  # c_skip with sigma_data = 1, the output layer at zero
    torch.testing.assert_close(m.denoise(x, sigma), expect)
    sig = m.sigmas()
    assert sig[0] == pytest.approx(cfg.sigma_max) and sig[-2] == pytest.approx(cfg.sigma_min) and sig[-1] == 0


def test_training_learns_the_dynamics(trained):
    model, episodes, out = trained
    log = [line for line in (out / "log.jsonl").read_text().splitlines() if "val_loss" in line]
    assert len(log) == 8  # every 200 steps and the last
    w = model.sample(128, torch.Generator().manual_seed(0))
    s, a, n = w.transitions()
    err = np.abs(n[:, :3] - s[:, :3] - a[:, :3]).mean()
    shuffled = np.abs(n[:, :3] - s[:, :3] - np.random.default_rng(0).permutation(a[:, :3])).mean()
    # the sampled hand moves by the sampled action, not by some other window's action
    assert err < 0.3 * shuffled, (err, shuffled)
    q = w.states[..., 14:18]
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-5)


class ConstantGaussian:
    """log N(a; c, std^2): a policy that wants every action to be c."""

    def __init__(self, c: np.ndarray, std: float) -> None:
        self.c, self.std = torch.from_numpy(c), std

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return -(((actions - self.c) / self.std) ** 2).sum(-1) / 2


def test_guidance_moves_the_actions_towards_the_policy_and_grows_with_the_coefficient(trained):
    model, _, _ = trained
    c = np.array([0.015, -0.015, 0.0, 1.0], np.float32)
    pol = ConstantGaussian(c, std=0.01)
    dist, loglik = [], []
    for coeff in (0.0, 1e-5, 1e-4):
        w = model.sample(64, torch.Generator().manual_seed(1), policy=pol, coeff=coeff)
        s, a, _ = w.transitions()
        dist.append(np.abs(a[:, :3] - c[:3]).mean())
        loglik.append(float(pol.log_prob(torch.from_numpy(s), torch.from_numpy(a)).mean()))
    assert dist[0] > dist[1] > dist[2], dist
    assert loglik[0] < loglik[1] < loglik[2], loglik


def test_sampling_is_seeded_and_survives_a_save_load_round_trip(trained, tmp_path):
    model, _, _ = trained
    a = model.sample(4, torch.Generator().manual_seed(3))
    b = model.sample(4, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a.states, b.states)
    model.save_pretrained(tmp_path / "m")
    assert is_trajectory_checkpoint(tmp_path / "m") and not is_trajectory_checkpoint(tmp_path)
    c = TrajectoryDiffusion.from_pretrained(tmp_path / "m").sample(4, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(a.states, c.states)
    np.testing.assert_array_equal(a.actions, c.actions)


def test_config_rejects_unknown_keys():
    with pytest.raises(Exception, match="horizn"):
        TrajectoryConfig.model_validate({"horizn": 8})


def test_an_attempt_is_the_same_episode_whatever_the_order(trained):
    model, _, _ = trained
    seen: list[np.ndarray] = []

    def render(state: np.ndarray, env: np.ndarray) -> Observation:
        seen.append(state)
        return Observation(images={}, state=state, task="", environment_state=env)

    one = WindowSource(model, render, seed=5, batch=4)
    late = one.episode(6, policy_id="p", world_id="synth")
    early = one.episode(1, policy_id="p", world_id="synth")
    fresh = WindowSource(model, render, seed=5, batch=4).episode(1, policy_id="p", world_id="synth")
    for x, y in zip(
        [early.initial_observation] + [s.observation for s in early.steps],
        [fresh.initial_observation] + [s.observation for s in fresh.steps],
        strict=True,
    ):
        np.testing.assert_array_equal(x.state, y.state)
    assert late.seed == 11 and early.length == H - 1  # toy windows never solve: the whole window
    np.testing.assert_array_equal(early.steps[0].action, fresh.steps[0].action)
    assert len(seen) == 3 * H


def test_a_moving_average_of_the_weights_is_what_validates_and_is_saved(tmp_path):
    """train.ema: the saved model is the average, not the last step's weights (same seed, same batches),
    and dropout is a config field the saved model keeps (off at sampling)."""
    rng = np.random.default_rng(1)
    episodes = [toy_episode(rng) for _ in range(12)]
    meta = {"fps": 10.0, "scene": None}
    train = {"steps": 30, "batch_size": 16, "lr": 2e-3, "warmup": 2, "holdout_episodes": 2, "val_every": 10}
    plain = tiny_cfg(train=train, dropout=0.1)
    averaged = tiny_cfg(train={**train, "ema": 0.9}, dropout=0.1)
    models = []
    for name, cfg in (("plain", plain), ("ema", averaged)):
        torch.manual_seed(0)
        models.append(
            TrajectoryDiffusion.from_pretrained(
                train_trajectory(cfg, episodes, meta, tmp_path / name, progress=False)
            )
        )
    a, b = models
    assert b.cfg.train.ema == 0.9 and b.cfg.dropout == 0.1 and not b.training
    assert b.blocks.layers[0].dropout.p == 0.1
    assert not torch.allclose(a.inp.weight, b.inp.weight)  # the average differs from the last step
    # the average moved from the initial weights towards the trained ones: its updates are smaller
    torch.manual_seed(0)
    init = TrajectoryDiffusion(b.cfg)
    moved_raw = (a.inp.weight - init.inp.weight).norm()
    moved_avg = (b.inp.weight - init.inp.weight).norm()
    assert 0 < moved_avg < moved_raw
    with pytest.raises(ValueError, match="ema"):
        tiny_cfg(train={**train, "ema": 1.0})


def test_windows_carry_their_history():
    """With the scene's controller, each row carries the ee target the controller held, rebuilt from the
    episode's start; a window's start target is its first row's."""
    from scenes.spec import ControlSpec

    control = ControlSpec()
    e = toy_episode(np.random.default_rng(2), T=12, solve_at=9)
    rows = episode_window_rows(e, H, control)
    plain = episode_window_rows(e, H)
    assert rows.shape == (len(plain), 18 + 4 + 1 + 3)
    np.testing.assert_array_equal(rows[:, :23], plain)
    targets = rows[:, 23:]
    np.testing.assert_allclose(targets[0], plain[0, :3])  # an episode starts at rest, at its target
    for t in range(len(rows) - 1):  # then as the controller moves it, through the actions
        want = control.next_target(targets[t], plain[t, :3], plain[t, 18:21])
        np.testing.assert_allclose(targets[t + 1], want, atol=1e-6)
    assert np.abs(targets[1:9] - plain[1:9, :3]).max() > 1e-3  # a moving hand lags its target
    w = dataset_windows([e], H, [0], control)
    assert w.history is not None and w.history.shape == (len(w.states), H, 3)
    np.testing.assert_array_equal(w.start_target(), targets[: len(w.states)])
    assert dataset_windows([e], H, [0]).start_target() is None


def test_a_model_with_history_samples_it_and_needs_the_scene(tmp_path):
    from common.training import TrainingError
    from scenes.spec import load_scene_spec

    rng = np.random.default_rng(3)
    episodes = [toy_episode(rng) for _ in range(10)]
    scene = load_scene_spec(ROOT / "configs/scenes/push_cube.yaml").model_dump(mode="json")
    train = {"steps": 20, "batch_size": 16, "lr": 2e-3, "warmup": 2, "holdout_episodes": 2, "val_every": 10}
    cfg = tiny_cfg(train=train, history=True)
    with pytest.raises(TrainingError, match="scene"):
        train_trajectory(cfg, episodes, {"fps": 10.0, "scene": None}, tmp_path / "none", progress=False)
    path = train_trajectory(cfg, episodes, {"fps": 10.0, "scene": scene}, tmp_path / "h", progress=False)
    model = TrajectoryDiffusion.from_pretrained(path)
    assert model.cfg.history and model.cfg.channels == 18 + 4 + 1 + 3
    w = model.sample(5, torch.Generator().manual_seed(0))
    assert w.history is not None and w.history.shape == (5, H, 3)
    assert w.start_target().shape == (5, 3)
    again = TrajectoryDiffusion.from_pretrained(path).sample(5, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(again.history, w.history)
