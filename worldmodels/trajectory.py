"""Trajectory diffusion over state, action and success windows, with policy guidance (Policy-Guided Diffusion).

    dreamtwin train trajectory --config configs/worldmodels/trajectory.yaml --data data/push_cube_small \
        --out runs/traj
    model = TrajectoryDiffusion.from_pretrained("runs/traj/model")
    w = model.sample(64, gen)                                    # unguided windows
    w = model.sample(64, gen, policy=target, coeff=0.3)          # guided towards `target`
    w.states [B, H, S], w.actions [B, H, A], w.success [B, H]

A window is H consecutive control steps of an episode: per step the state (the robot's proprio, then the
object poses with canonical quaternions, as the dynamics ensemble's), the action taken from it and whether
the task is solved at that step. Episodes that end in success continue as an absorbing state (the last
state held, zero actions, solved), so windows may run past an episode's end; a zero action is "stay"
in our action space, so the padding is a transition the twin would make too. Every channel is
normalised by the training windows' statistics. The state holds neither velocities nor the controller's
target, so a window that starts in motion cannot be continued from its first state alone; with `history`
(config), each step also carries the controller's ee target, sampled with the rest
(`Windows.start_target`: what the twin needs, beyond the state, to go on from a window's first step as
its trajectory was moving; the velocities matter little).

The model is EDM (Karras et al. 2022): a denoiser D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)
with a small transformer F over the H steps (every step attends to every step), trained with
log-normal noise levels and EDM's loss weighting, sampled with Heun's second-order method on Karras's
noise levels. Policy guidance (Jackson et al., "Policy-Guided Diffusion"): after every sampler step the
actions move along the target policy's score, a <- a + lambda_t grad_a log pi(a | s), with
lambda_t = coeff [(1 - t/N) + 0.3 sin(pi (t + 1) / N)], t the step index and N the number of steps; the
gradient is taken in the model's normalised action units through the policy's `log_prob(states,
actions)` (a deterministic policy as a Gaussian around its action). coeff = 0 is unguided sampling.

Training runs on the one harness (`common.training`, Lightning). Imports torch, nothing heavier.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import Field
from torch import nn

from common.config import Strict, load_model
from common.io import atomic_write_text
from common.training import Hardware, Log, Run, TrainingError, fit, step_generators, warmup_cosine
from common.types import Episode, EpisodeStep, Observation
from scenes.spec import ControlSpec, SceneSpec


class TrajectoryTrainConfig(Strict):
    steps: int = Field(8000, ge=1)
    batch_size: int = Field(64, ge=1, description="windows per step")
    lr: float = Field(3e-4, gt=0)
    warmup: int = Field(200, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    holdout_episodes: int = Field(30, ge=0, description="the last episodes, held out (as the other models)")
    val_every: int = Field(1000, ge=1)
    seed: int = 0
    ema: float | None = Field(
        None, gt=0, lt=1, description="decay of the weights' moving average that validates and is saved"
    )


class TrajectoryConfig(Strict):
    """A trajectory diffusion model and how to train it; the fields after `train` come from the dataset."""

    version: int = 1
    type: Literal["trajectory_diffusion"] = "trajectory_diffusion"
    horizon: int = Field(32, ge=2, description="control steps per window (PGD: 32)")
    dim: int = Field(192, ge=8)
    depth: int = Field(4, ge=1)
    heads: int = Field(4, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1, description="in the transformer's layers, while training")
    history: bool = Field(
        False,
        description="windows also carry the controller's ee target at each step, what the twin needs beyond "
        "the state to go on from a window that starts in motion",
    )
    sigma_data: float = Field(1.0, gt=0, description="EDM: the data's std (channels are standardised)")
    sigma_min: float = Field(0.002, gt=0)
    sigma_max: float = Field(80.0, gt=0)
    rho: float = Field(7.0, gt=0)
    p_mean: float = Field(-1.2, description="EDM training: log sigma ~ N(p_mean, p_std^2)")
    p_std: float = Field(1.2, gt=0)
    sampler_steps: int = Field(32, ge=1, description="Heun steps (2 denoiser calls each but the last)")
    train: TrajectoryTrainConfig = Field(default_factory=TrajectoryTrainConfig)
    # resolved from the dataset at training
    state_dim: int = 0
    env_dim: int = 0
    action_dim: int = 0
    fps: float = 10.0
    scene: dict[str, Any] | None = None

    @property
    def dim_state(self) -> int:
        return self.state_dim + self.env_dim

    @property
    def history_dim(self) -> int:
        """Channels of a step's history (`history`): the controller's ee target."""
        return 3 if self.history else 0

    @property
    def channels(self) -> int:
        return self.dim_state + self.action_dim + 1 + self.history_dim


def load_trajectory_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrajectoryConfig:
    return load_model(TrajectoryConfig, path, overrides)


class GuidePolicy(Protocol):
    """What guidance needs of a policy: a log-likelihood differentiable in the actions (physical units)."""

    def log_prob(
        self, states: torch.Tensor, actions: torch.Tensor
    ) -> torch.Tensor: ...  # [B, S], [B, A] -> [B]


def guidance_schedule(coeff: float, steps: int) -> np.ndarray:
    """PGD's lambda_t for t = 0..steps-1: coeff [(1 - t/N) + 0.3 sin(pi (t + 1) / N)]."""
    t = np.arange(steps, dtype=np.float64)
    return coeff * ((1.0 - t / steps) + 0.3 * np.sin(np.pi * (t + 1) / steps))


@dataclass
class Windows:
    """Sampled (or dataset) windows in physical units."""

    states: np.ndarray  # [B, H, S]: proprio then object poses
    actions: np.ndarray  # [B, H, A]: the action taken at each step (the last one leads out of the window)
    success: np.ndarray  # [B, H] bool: the task is solved at that step
    history: np.ndarray | None = None  # [B, H, 3] or None: the controller's ee target held at each step

    def start_target(self) -> np.ndarray | None:
        """The controller's ee target [B, 3] at each window's first step, or None when the windows carry
        no history."""
        return None if self.history is None else self.history[:, 0]

    def transitions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s_t, a_t, s_t+1) [N, ...] of every step up to the first solved one (the episode ends there)."""
        s, a, n = [], [], []
        for b, end in enumerate(first_solved(self.success)):
            s.append(self.states[b, :end])
            a.append(self.actions[b, :end])
            n.append(self.states[b, 1 : end + 1])
        return np.concatenate(s), np.concatenate(a), np.concatenate(n)


def first_solved(solved: np.ndarray | list[np.ndarray]) -> list[int]:
    """Each row's first solved step (its last step when never solved): where its transitions end."""
    return [int(np.flatnonzero(r)[0]) if np.any(r) else len(r) - 1 for r in solved]


# ---------------------------------------------------------------------- data
def episode_window_rows(
    e: dict[str, np.ndarray], horizon: int, control: ControlSpec | None = None
) -> np.ndarray:
    """An episode as rows [T', S + A + 1] (state, action, solved) padded after a success with the absorbing
    state, so that every window start 0..T-1 has `horizon` rows; windows are rows[t : t + horizon]. With
    the scene's `control`, each row also carries its history [3]: the controller's ee target, rebuilt from
    the episode's start, where the hand rests at its target."""
    from worldmodels.ensemble import episode_states

    x = episode_states(e)
    T = len(x)
    a = e["actions"][:T].astype(np.float32)
    done = e["success"][:T].astype(np.float32)
    solved = np.flatnonzero(done)
    if len(solved):  # the episode ended at its first solved frame: cut there, then hold that state
        end = int(solved[0]) + 1
        x, a, done = x[:end], a[:end].copy(), done[:end]
        a[-1] = 0.0
        pad = horizon - 1
        x = np.concatenate([x, np.repeat(x[-1:], pad, 0)])
        a = np.concatenate([a, np.zeros((pad, a.shape[1]), np.float32)])
        done = np.concatenate([done, np.ones(pad, np.float32)])
    parts = [x, a, done[:, None]]
    if control is not None:
        parts.append(control.targets(x[:, :3], a[:, :3]))
    return np.concatenate(parts, 1).astype(np.float32)


def window_starts(rows: list[np.ndarray], horizon: int) -> np.ndarray:
    """(episode, start) [N, 2] of every window that fits."""
    out = [(k, t) for k, r in enumerate(rows) for t in range(len(r) - horizon + 1)]
    if not out:
        raise TrainingError(f"no window of {horizon} steps fits in the dataset's episodes")
    return np.asarray(out, np.int64)


def dataset_windows(
    episodes: list[dict[str, np.ndarray]], horizon: int, which: list[int], control: ControlSpec | None = None
) -> Windows:
    """Every window of the chosen episodes, in physical units; with the scene's `control`, with history."""
    rows = [episode_window_rows(episodes[k], horizon, control) for k in which]
    idx = window_starts(rows, horizon)
    w = np.stack([rows[k][t : t + horizon] for k, t in idx])
    e = episodes[which[0]]
    return _split(w, e["state"].shape[1] + e["env_state"].shape[1], e["actions"].shape[1])


def window_rows(w: Windows, history: bool) -> np.ndarray:
    """Windows as rows [B, H, C] (states, actions, solved, then the history when `history`)."""
    parts = [w.states, w.actions, w.success[..., None].astype(np.float32)]
    if history:
        if w.history is None:
            raise TrainingError("a trajectory model with history needs windows that carry it")
        parts.append(w.history)
    return np.concatenate(parts, -1).astype(np.float32)


def _split(w: np.ndarray, s: int, a: int) -> Windows:
    rest = w[..., s + a + 1 :]
    return Windows(
        states=w[..., :s],
        actions=w[..., s : s + a],
        success=w[..., s + a] > 0.5,
        history=rest if rest.shape[-1] else None,
    )


# ---------------------------------------------------------------------- the model
class _NoiseEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.exp(-math.log(1e4) * torch.arange(dim // 2) / (dim // 2)))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:  # [B] -> [B, dim]
        f = c_noise[:, None] * 1000.0 * self.freqs[None]  # type: ignore[index]
        return self.mlp(torch.cat([f.sin(), f.cos()], -1))


class TrajectoryDiffusion(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg: TrajectoryConfig) -> None:
        super().__init__()
        if cfg.dim_state == 0 or cfg.action_dim == 0:
            raise TrainingError(
                "a trajectory model needs state_dim/env_dim/action_dim (resolved from a dataset)"
            )
        self.cfg = cfg
        C, D = cfg.channels, cfg.dim
        self.inp = nn.Linear(C, D)
        self.pos = nn.Parameter(torch.randn(cfg.horizon, D) * 0.02)
        self.noise = _NoiseEmbedding(D)
        layer = nn.TransformerEncoderLayer(
            D, cfg.heads, 4 * D, dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(D)
        self.out = nn.Linear(D, C)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("mean", torch.zeros(cfg.horizon, C))  # per step and channel, of the delta form
        self.register_buffer("std", torch.ones(cfg.horizon, C))

    # ------------------------------------------------------------------ EDM
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma): the clean windows [B, H, C] (normalised) estimated from noisy ones at levels sigma [B]."""
        sd = self.cfg.sigma_data
        s = sigma.reshape(-1, 1, 1)
        c_in = 1.0 / (s**2 + sd**2).sqrt()
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        h = self.inp(c_in * x) + self.pos[None] + self.noise(sigma.log() / 4.0)[:, None]
        f = self.out(self.norm(self.blocks(h)))
        return c_skip * x + c_out * f

    def loss(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """EDM's weighted denoising loss on clean normalised windows [B, H, C]."""
        cfg = self.cfg
        B = len(x0)
        sigma = (torch.randn(B, generator=gen) * cfg.p_std + cfg.p_mean).exp().to(x0)
        noise = torch.randn(x0.shape, generator=gen).to(x0)
        d = self.denoise(x0 + sigma.reshape(-1, 1, 1) * noise, sigma)
        weight = (sigma**2 + cfg.sigma_data**2) / (sigma * cfg.sigma_data) ** 2
        return (weight.reshape(-1, 1, 1) * (d - x0) ** 2).mean()

    def sigmas(self, steps: int | None = None) -> torch.Tensor:
        """Karras's noise levels, [N + 1] with a final 0."""
        cfg = self.cfg
        n = steps or cfg.sampler_steps
        i = torch.arange(n, dtype=torch.float64)
        lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
        s = (hi + i / max(n - 1, 1) * (lo - hi)) ** cfg.rho
        return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).float()

    # ------------------------------------------------------------------ units
    def delta_form(self, rows: torch.Tensor) -> torch.Tensor:
        """Physical rows [B, H, C] -> the modelled form: the first state, then each step's change of state
        (the dynamics live in the changes, which are small beside the states' range); actions and
        success as they are."""
        S = self.cfg.dim_state
        out = rows.clone()
        out[:, 1:, :S] = rows[:, 1:, :S] - rows[:, :-1, :S]
        return out

    def physical(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised model windows [B, H, C] -> physical rows (differentiable)."""
        S = self.cfg.dim_state
        d = x * self.std + self.mean
        return torch.cat([d[..., :S].cumsum(1), d[..., S:]], -1)

    def normalise(self, w: Windows) -> torch.Tensor:
        x = window_rows(w, self.cfg.history)
        return (self.delta_form(torch.from_numpy(x.astype(np.float32))) - self.mean) / self.std

    def windows(self, x: torch.Tensor) -> Windows:
        """Normalised windows [B, H, C] in physical units, object quaternions unit with w >= 0."""
        raw = self.physical(x).detach().cpu().numpy()
        w = _split(raw, self.cfg.dim_state, self.cfg.action_dim)
        d = self.cfg.state_dim
        for i in range(self.cfg.env_dim // 7):
            q = w.states[..., d + 7 * i + 3 : d + 7 * i + 7]
            q /= np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-8)
            q *= np.where(q[..., :1] < 0, -1.0, 1.0)
        return w

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        gen: torch.Generator,
        *,
        policy: GuidePolicy | None = None,
        coeff: float = 0.0,
        steps: int | None = None,
    ) -> Windows:
        """n windows by Heun's method from noise drawn with `gen`; guided towards `policy` when coeff > 0."""
        cfg = self.cfg
        sig = self.sigmas(steps)
        N = len(sig) - 1
        lam = guidance_schedule(coeff, N) if policy is not None and coeff > 0 else np.zeros(N)
        dev = self.mean.device
        x = torch.randn((n, cfg.horizon, cfg.channels), generator=gen).to(dev) * sig[0]
        for t in range(N):
            s, s_next = sig[t].to(dev), sig[t + 1].to(dev)
            with torch.no_grad():
                d = (x - self.denoise(x, s.expand(n))) / s
                x_next = x + (s_next - s) * d
                if s_next > 0:
                    d2 = (x_next - self.denoise(x_next, s_next.expand(n))) / s_next
                    x_next = x + (s_next - s) * (d + d2) / 2
            if lam[t] != 0.0:
                assert policy is not None
                x_next = x_next + float(lam[t]) * self.action_score(x_next, policy)
            x = x_next
        return self.windows(x)

    def action_score(self, x: torch.Tensor, policy: GuidePolicy) -> torch.Tensor:
        """grad of log pi(a | s) w.r.t. the normalised actions of windows [B, H, C], zero elsewhere."""
        S, A = self.cfg.dim_state, self.cfg.action_dim
        a = x[..., S : S + A].detach().requires_grad_(True)
        states = self.physical(x.detach())[..., :S].reshape(-1, S)
        actions = (a * self.std[:, S : S + A] + self.mean[:, S : S + A]).reshape(-1, A)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(policy.log_prob(states, actions).sum(), a)
        out = torch.zeros_like(x)
        out[..., S : S + A] = g
        return out

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | Path) -> Path:
        from worldmodels.checkpoint import save_pretrained

        return save_pretrained(self, self.cfg, path)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu") -> TrajectoryDiffusion:
        from worldmodels.checkpoint import load_module

        model: TrajectoryDiffusion = load_module(cls, TrajectoryConfig, path, map_location)
        return model


def is_trajectory_checkpoint(path: str | Path) -> bool:
    from worldmodels.checkpoint import checkpoint_type

    return checkpoint_type(path) == "trajectory_diffusion"


# ---------------------------------------------------------------------- training
def train_trajectory(
    cfg: TrajectoryConfig,
    episodes: list[dict[str, np.ndarray]],
    meta: dict[str, Any],
    out: str | Path,
    *,
    progress: bool = True,
) -> Path:
    """Train on dataset episodes (`datagen.windows.load_episodes(..., frames=False)` form); writes
    `out/config.json`, `out/log.jsonl` and `out/model/`; returns `out/model`."""
    from worldmodels.ensemble import resolve_config
    from worldmodels.training import split

    out = Path(out)
    cfg = resolve_config(cfg, episodes, meta)
    tc = cfg.train
    train_eps, held = split(len(episodes), tc.holdout_episodes)
    torch.manual_seed(tc.seed)
    model = TrajectoryDiffusion(cfg)
    if cfg.history and cfg.scene is None:
        raise TrainingError("a trajectory model with history needs the dataset's scene (its controller)")
    control = SceneSpec.model_validate(cfg.scene).control if cfg.history else None
    train_w = dataset_windows(episodes, cfg.horizon, train_eps, control)
    form = model.delta_form(torch.from_numpy(window_rows(train_w, cfg.history)))
    model.mean.copy_(form.mean(0))
    model.std.copy_(form.std(0).clamp_min(1e-4))
    x_all = model.normalise(train_w)
    x_val = model.normalise(dataset_windows(episodes, cfg.horizon, held, control)) if held else None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
    (out / "log.jsonl").unlink(missing_ok=True)
    log = Log(path=out / "log.jsonl", every=100)
    n = len(x_all)

    def loss(step: int, device: torch.device) -> dict[str, torch.Tensor]:
        _, g = step_generators(tc.seed, step)
        rows = torch.randint(0, n, (tc.batch_size,), generator=g)
        return {"loss": model.loss(x_all[rows].to(device), g)}

    def validate(step: int, _: dict[str, float]) -> None:
        if x_val is not None and (step % tc.val_every == 0 or step == tc.steps):
            model.eval()
            with torch.no_grad():
                g = torch.Generator().manual_seed(tc.seed + 1)
                v = model.loss(x_val.to(model.mean.device), g)
            model.train()
            log.write({"step": step, "val_loss": float(v)})

    fit(
        Run(
            model=model,
            params=list(model.parameters()),
            loss=loss,
            lr=warmup_cosine(tc.lr, tc.steps, tc.warmup),
            steps=tc.steps,
            weight_decay=tc.weight_decay,
            grad_clip=tc.grad_clip,
            log=log,
            after_step=validate,
            hardware=Hardware(accelerator="auto", devices=1),
            progress=progress,
            ema=tc.ema,
        )
    )
    model.eval()
    return model.save_pretrained(out / "model")


__all__ = [
    "GuidePolicy",
    "TrajectoryConfig",
    "TrajectoryDiffusion",
    "WindowSource",
    "Windows",
    "dataset_windows",
    "guidance_schedule",
    "is_trajectory_checkpoint",
    "load_trajectory_config",
    "train_trajectory",
]


# ---------------------------------------------------------------------- windows as episodes
Renderer = Callable[[np.ndarray, np.ndarray], Observation]


class WindowSource:
    """Synthetic episodes, one per attempt index: attempt i is window i % batch of the batch i // batch,
    sampled with a generator seeded by (seed, i // batch) alone, so that an attempt's content does not
    depend on which worker made it or in which order. Observations come from `renderer(state,
    environment_state)` (the twin's `show`: its renderer posed at the sampled state, no physics)."""

    def __init__(
        self,
        model: TrajectoryDiffusion,
        renderer: Renderer,
        *,
        seed: int,
        batch: int,
        policy: GuidePolicy | None = None,
        coeff: float = 0.0,
        steps: int | None = None,
        task: str = "",
    ) -> None:
        self.model, self.renderer = model, renderer
        self.seed, self.batch, self.policy, self.coeff, self.steps = seed, batch, policy, coeff, steps
        self.task = task
        self._cache: tuple[int, Windows] | None = None

    def windows(self, k: int) -> Windows:
        """Batch k of windows (the last one kept)."""
        if self._cache is None or self._cache[0] != k:
            gen = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, k, 0x5EED]).generate_state(1)[0])
            )
            w = self.model.sample(self.batch, gen, policy=self.policy, coeff=self.coeff, steps=self.steps)
            self._cache = (k, w)
        return self._cache[1]

    def episode(self, i: int, *, policy_id: str, world_id: str, scene_hash: str = "") -> Episode:
        """Attempt i as an Episode: the window's steps up to its first solved one."""
        w = self.windows(i // self.batch)
        b = i % self.batch
        S, d = self.model.cfg.dim_state, self.model.cfg.state_dim
        fps = self.model.cfg.fps

        def observe(t: int) -> Observation:
            x = w.states[b, t]
            obs = self.renderer(x[:d], x[d:S])
            obs.timestamp = t / fps
            obs.task = self.task or obs.task
            return obs

        solved = np.flatnonzero(w.success[b, 1:])
        T = int(solved[0]) + 1 if len(solved) else self.model.cfg.horizon - 1
        steps = [
            EpisodeStep(
                action=w.actions[b, t].astype(np.float32),
                observation=observe(t + 1),
                success=bool(w.success[b, t + 1]),
            )
            for t in range(T)
        ]
        return Episode(
            observe(0),
            steps,
            policy_id=policy_id,
            world_id=world_id,
            seed=self.seed + i,
            scene_hash=scene_hash,
        )
