"""TD3+BC (Fujimoto & Gu 2021): offline RL on robot and object states, readable top to bottom.

    dreamtwin train policy --config configs/policies/td3bc.yaml --data data/push_cube_small \
        --out runs/td3bc_push
    dreamtwin eval --config configs/eval/demo.yaml --policies runs/td3bc_push/step-020000
    policy = TD3BCPolicy.from_pretrained("runs/td3bc_push/step-020000")
    policy.log_prob(obs, actions)   # [B], differentiable in the actions: policy-guided diffusion's guidance

The target policy of policy-guided trajectory diffusion, and the learner that measures whether synthetic
data helps: `train_td3bc(cfg, real, out, extra=synthetic, extra_fraction=0.5)` draws half of every batch
from the synthetic transitions.

- Observation s: `worldmodels.ensemble.episode_states`, the proprio then the object poses (canonical
  quaternions); when acting, `observation.state` + `observation.environment_state` (privileged).
  Normalised by the real transitions' mean and std (+ 1e-3, as the paper), stored with the weights.
- Action a: mapped affinely from the twin's bounds (ee deltas within +-control.max_delta, gripper in
  [0, 1]) to [-1, 1], where the actor's tanh lives; dataset actions are clipped to the bounds.
- Reward: potential-based shaping with the task's success predicate margin (`scenes.predicates`: metres,
  positive inside the goal), plus a bonus on success, which ends the episode:
      r_t = margin(s_{t+1}) - margin(s_t) + 1.0 * success_{t+1},   done_t = success_{t+1}
  The predicate's initial poses are those of the episode's (window's) first frame. Dataset episodes use
  their recorded success flags and end at their first success; state windows (`reward_fn`) the predicate.
- Update, per step: the twin critics regress r + discount (1 - done) min_i Q'_i(s', a'), a' = the target
  actor's action plus clipped Gaussian noise (target policy smoothing); every `policy_freq` steps the
  actor minimises -lambda Q_1(s, pi(s)) + (pi(s) - a)^2 with lambda = alpha / mean|Q_1| (detached), and
  the target networks move toward the trained ones by `tau`.
- Likelihood: the deterministic actor read as the Gaussian N(mu(s), action_std^2 I) over normalised
  actions (as in Policy-Guided Diffusion), so that guidance has a log-likelihood to differentiate.

On the one harness (`common.training.fit`, Lightning): a step's critic and actor losses are summed into one
AdamW step without weight decay (Adam), the actor's loss computed through a frozen critic. Unlike the
paper's two optimizers stepped one after the other, the actor therefore sees the critic from before this
step's critic update. A step's batch and noise come from `step_generators(seed, step)` and the networks
are initialised from `seed`: the same seed gives bit-identical weights. Not resumable (a run is minutes).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from common.config import Strict, load_model, validate_model
from common.errors import SpecError, UsageError
from common.io import atomic_write_text
from common.training import Hardware, Log, Run, TrainingError, fit, step_generators
from common.types import Observation
from scenes.predicates import PREDICATES, PredicateEntry
from scenes.spec import SceneSpec
from worldmodels.ensemble import canonical_quaternions, episode_states

CONFIG_VERSION = 1
SUCCESS_BONUS = 1.0  # reward for reaching success, on top of the margin's shaping
POSE_DIMS = 7  # per object: position xyz, quaternion wxyz


class TD3BCConfig(Strict):
    """TD3+BC and how to train it; `obs_dim` and `action_dim` come from the data."""

    version: int = CONFIG_VERSION
    type: Literal["td3bc"] = "td3bc"
    hidden: int = Field(256, ge=8, description="units per hidden layer, actor and critics")
    layers: int = Field(2, ge=1, description="hidden layers per network")
    # training
    steps: int = Field(20000, ge=1, description="gradient steps (the critics' updates)")
    save_at: list[int] = Field(default_factory=list, description="also save checkpoints at these steps")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-4, gt=0, description="Adam learning rate of actor and critics")
    discount: float = Field(0.99, ge=0, le=1)
    tau: float = Field(0.005, gt=0, le=1, description="soft-update rate of the target networks")
    policy_noise: float = Field(0.2, ge=0, description="target policy smoothing noise std (normalised)")
    noise_clip: float = Field(0.5, ge=0, description="that noise clipped to +-noise_clip")
    policy_freq: int = Field(2, ge=1, description="critic updates per actor and target update")
    alpha: float = Field(2.5, ge=0, description="weight of Q against BC: lambda = alpha / mean|Q|")
    action_std: float = Field(
        1.0, gt=0, description="std of N(mu(s), std^2) in normalised action units, for log_prob"
    )
    seed: int = 0
    # resolved from the data at training
    obs_dim: int = Field(0, ge=0)
    action_dim: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> TD3BCConfig:
        if self.version != CONFIG_VERSION:
            raise ValueError(f"version {self.version}: this DreamTwin reads TD3+BC version {CONFIG_VERSION}")
        bad = [s for s in self.save_at if not 1 <= s <= self.steps]
        if bad:
            raise ValueError(f"save_at steps {bad} are outside 1..steps ({self.steps})")
        return self


def load_td3bc_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TD3BCConfig:
    return load_model(TD3BCConfig, path, overrides)


# ---------------------------------------------------------------------- reward and transitions
def action_bounds(spec: SceneSpec) -> tuple[np.ndarray, np.ndarray]:
    """`DigitalTwin.action_bounds` from the spec alone (no twin, no Genesis): float32 [A] low and high,
    ee deltas within +-max_delta, gripper in [0, 1]."""
    m = spec.control.max_delta
    return np.array([-m, -m, -m, 0.0], np.float32), np.array([m, m, m, 1.0], np.float32)


def dataset_scene(meta: dict[str, Any], source: str | Path) -> SceneSpec:
    """The scene a dataset was made in (`load_episodes`'s `meta["scene"]`), validated."""
    if not meta.get("scene"):
        raise SpecError(
            f"{source}: the dataset records no scene (meta/dreamtwin.json); TD3+BC's reward needs it"
        )
    return validate_model(SceneSpec, meta["scene"], f"{source}/meta/dreamtwin.json: scene")


@dataclass(frozen=True)
class TaskReward:
    """The shaped reward of a scene's task on states [..., S] = proprio then object poses (`reward_fn`)."""

    entry: PredicateEntry
    params: Strict
    objects: list[str]  # in the scene's order, as in the states

    def _poses(self, s: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        env = s[len(s) - POSE_DIMS * len(self.objects) :].astype(np.float64)
        return {o: (env[7 * i : 7 * i + 3], env[7 * i + 3 : 7 * i + 7]) for i, o in enumerate(self.objects)}

    def _check(self, states: np.ndarray) -> None:
        if states.ndim != 3 or states.shape[-1] <= POSE_DIMS * len(self.objects):
            raise UsageError(
                f"states must be [N, T, S] with S = proprio + {POSE_DIMS} x {len(self.objects)} object "
                f"dims, got {list(states.shape)}"
            )

    def margins(self, states: np.ndarray, initial: np.ndarray | None = None) -> np.ndarray:
        """The predicate's margin (metres, positive: achieved) [N, T] of states [N, T, S]; the initial
        poses come from `initial` [N, S] (default: each window's first frame)."""
        states = np.asarray(states)
        self._check(states)
        first = states[:, 0] if initial is None else np.asarray(initial)
        out = np.empty(states.shape[:2], np.float64)
        for n in range(len(states)):
            init = self._poses(first[n])
            for t in range(states.shape[1]):
                out[n, t] = self.entry.margin(self.params, self._poses(states[n, t]), init)
        return out

    def successes(self, states: np.ndarray, initial: np.ndarray | None = None) -> np.ndarray:
        """The predicate's verdict, bool [N, T], of states [N, T, S] (initial poses as in `margins`)."""
        states = np.asarray(states)
        self._check(states)
        first = states[:, 0] if initial is None else np.asarray(initial)
        out = np.zeros(states.shape[:2], bool)
        for n in range(len(states)):
            init = self._poses(first[n])
            for t in range(states.shape[1]):
                out[n, t] = self.entry.fn(self.params, self._poses(states[n, t]), init)
        return out

    def __call__(
        self, states: np.ndarray, initial: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rewards float32 [N, T - 1], dones bool [N, T - 1]) of the steps t -> t + 1 of states [N, T, S]."""
        m = self.margins(states, initial)
        success = self.successes(states, initial)[:, 1:]
        return (m[:, 1:] - m[:, :-1] + SUCCESS_BONUS * success).astype(np.float32), success


def reward_fn(spec: SceneSpec) -> TaskReward:
    """The shaped reward of `spec`'s task, usable on any state windows (real, imagined, diffused)."""
    s = spec.task.success
    if s is None:
        raise SpecError(f"scene {spec.name!r} has no task.success predicate, so no reward for TD3+BC")
    return TaskReward(PREDICATES.get(s.name), s.typed_params(), [o.name for o in spec.objects])


@dataclass
class Transitions:
    """Offline RL transitions, float32: the action taken at `obs` led to `next_obs`."""

    obs: np.ndarray  # [N, S]
    actions: np.ndarray  # [N, A], action units
    rewards: np.ndarray  # [N]
    next_obs: np.ndarray  # [N, S]
    dones: np.ndarray  # [N], 1.0 where next_obs ends the episode (success)
    action_low: np.ndarray  # [A], the bounds that normalise the actions to [-1, 1]
    action_high: np.ndarray  # [A]

    def __post_init__(self) -> None:
        for name in ("obs", "actions", "rewards", "next_obs", "dones", "action_low", "action_high"):
            setattr(self, name, np.asarray(getattr(self, name), np.float32))
        N, A = len(self.obs), self.action_low.shape[0]
        if not (
            self.obs.ndim == 2
            and self.next_obs.shape == self.obs.shape
            and self.actions.shape == (N, A)
            and self.rewards.shape == self.dones.shape == (N,)
            and self.action_high.shape == (A,)
        ):
            raise UsageError(
                f"transitions need obs/next_obs [N, S], actions [N, A], rewards/dones [N], bounds [A]; got "
                f"{list(self.obs.shape)}, {list(self.next_obs.shape)}, {list(self.actions.shape)}, "
                f"{list(self.rewards.shape)}, {list(self.dones.shape)}, {list(self.action_low.shape)}"
            )

    def __len__(self) -> int:
        return len(self.obs)


def transitions(episodes: list[dict[str, np.ndarray]], spec: SceneSpec) -> Transitions:
    """The transitions of dataset episodes (`datagen.windows.load_episodes(..., frames=False)` form): the
    action of frame t leads to frame t + 1; an episode ends at its first success frame."""
    reward = reward_fn(spec)
    low, high = action_bounds(spec)
    parts: list[tuple[np.ndarray, ...]] = []
    for k, e in enumerate(episodes):
        x = episode_states(e)  # [T, S]
        if parts and x.shape[1] != parts[0][0].shape[1]:
            raise TrainingError(
                f"episode {k}: states of {x.shape[1]} dims, episode 0 has {parts[0][0].shape[1]}"
            )
        success = np.asarray(e["success"], bool)
        hits = np.flatnonzero(success)
        end = int(hits[0]) if hits.size else len(x) - 1  # the last frame that is a next state
        if end < 1:
            continue
        m = reward.margins(x[None, : end + 1])[0]
        r = m[1:] - m[:-1] + SUCCESS_BONUS * success[1 : end + 1]
        parts.append((x[:end], e["actions"][:end], r, x[1 : end + 1], success[1 : end + 1]))
    if not parts:
        raise TrainingError("no transitions: every episode is shorter than two frames or solved at its first")
    obs, actions, rewards, nxt, dones = (np.concatenate(p) for p in zip(*parts, strict=True))
    return Transitions(obs, actions, rewards, nxt, dones, low, high)


def window_transitions(
    states: np.ndarray, actions: np.ndarray, spec: SceneSpec, initial: np.ndarray | None = None
) -> Transitions:
    """The transitions of state windows [N, T, S] with their actions [N, T - 1, A] (synthetic data), the
    reward on the predicate (`reward_fn`); a window's steps after its first success are dropped."""
    states, actions = np.asarray(states, np.float32), np.asarray(actions, np.float32)
    if actions.shape[:2] != (states.shape[0], states.shape[1] - 1):
        raise UsageError(
            f"windows {list(states.shape)} need actions [N, T - 1, A], got {list(actions.shape)}"
        )
    rewards, dones = reward_fn(spec)(states, initial)
    keep = (np.cumsum(dones, 1) - dones) == 0  # no success before this step
    low, high = action_bounds(spec)
    return Transitions(
        states[:, :-1][keep], actions[keep], rewards[keep], states[:, 1:][keep], dones[keep], low, high
    )


# ---------------------------------------------------------------------- networks
def mlp(i: int, o: int, hidden: int, layers: int) -> nn.Sequential:
    sizes = [i] + [hidden] * layers
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods, nn.Linear(hidden, o))


class Actor(nn.Module):
    """pi(s): normalised obs [B, S] -> normalised action [B, A] in [-1, 1]."""

    def __init__(self, cfg: TD3BCConfig) -> None:
        super().__init__()
        self.net = mlp(cfg.obs_dim, cfg.action_dim, cfg.hidden, cfg.layers)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(s))


class Critic(nn.Module):
    """Twin Q networks: (normalised obs [B, S], normalised action [B, A]) -> Q_1, Q_2 [B] each."""

    def __init__(self, cfg: TD3BCConfig) -> None:
        super().__init__()
        self.q1 = mlp(cfg.obs_dim + cfg.action_dim, 1, cfg.hidden, cfg.layers)
        self.q2 = mlp(cfg.obs_dim + cfg.action_dim, 1, cfg.hidden, cfg.layers)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([s, a], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def first(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.q1(torch.cat([s, a], -1)).squeeze(-1)


class TD3BC(nn.Module):
    """Actor, twin critics, their target copies and the normalisation (buffers), saved together."""

    obs_mean: torch.Tensor  # [S]
    obs_std: torch.Tensor  # [S]
    action_low: torch.Tensor  # [A]
    action_high: torch.Tensor  # [A]

    def __init__(self, cfg: TD3BCConfig) -> None:
        super().__init__()
        if cfg.obs_dim < 1 or cfg.action_dim < 1:
            raise TrainingError("TD3+BC needs obs_dim and action_dim (resolved from the data at training)")
        self.cfg = cfg
        self.actor = Actor(cfg)
        self.critic = Critic(cfg)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.register_buffer("obs_mean", torch.zeros(cfg.obs_dim))
        self.register_buffer("obs_std", torch.ones(cfg.obs_dim))
        self.register_buffer("action_low", -torch.ones(cfg.action_dim))
        self.register_buffer("action_high", torch.ones(cfg.action_dim))

    def normalise_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def normalise_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Action units [..., A] -> [-1, 1] inside the bounds (not clipped)."""
        return 2 * (actions - self.action_low) / (self.action_high - self.action_low) - 1

    def unnormalise_actions(self, a: torch.Tensor) -> torch.Tensor:
        return self.action_low + (a + 1) / 2 * (self.action_high - self.action_low)

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """mu(s) in action units [B, A] of obs [B, S] (unnormalised)."""
        return self.unnormalise_actions(self.actor(self.normalise_obs(obs)))

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log N(normalise(actions); mu(s), action_std^2 I) [B] of obs [B, S] and actions [B, A] in action
        units: the density over normalised actions (action units would add a constant)."""
        z = (self.normalise_actions(actions) - self.actor(self.normalise_obs(obs))) / self.cfg.action_std
        return (-0.5 * z**2 - math.log(self.cfg.action_std) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def save_pretrained(self, path: str | Path) -> Path:
        from worldmodels.checkpoint import save_pretrained

        return save_pretrained(self, self.cfg, path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TD3BC:
        from worldmodels.checkpoint import load_module

        model: TD3BC = load_module(cls, TD3BCConfig, path)
        return model


def is_td3bc_checkpoint(path: str | Path) -> bool:
    from worldmodels.checkpoint import checkpoint_type

    return checkpoint_type(path) == "td3bc"


class TD3BCPolicy:
    """A trained TD3+BC actor as a `Policy` (deterministic: mu(s)), and its likelihood for guidance."""

    privileged = True  # reads object poses

    def __init__(self, model: TD3BC) -> None:
        self.model = model.eval().requires_grad_(False)  # gradients reach the inputs only (guidance)
        self.cfg = model.cfg

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TD3BCPolicy:
        return cls(TD3BC.from_pretrained(path))

    def save_pretrained(self, path: str | Path) -> Path:
        return self.model.save_pretrained(path)

    def reset(self, seed: int | None = None) -> None:
        pass  # deterministic and memoryless

    def observe(self, observation: Observation) -> np.ndarray:
        """The learner's observation float32 [S]: proprio then object poses (canonical quaternions)."""
        env = observation.environment_state
        if env is None:
            raise UsageError("the TD3+BC policy reads object poses: it needs observation.environment_state")
        s = np.concatenate([observation.state, canonical_quaternions(env)]).astype(np.float32)
        if s.shape != (self.cfg.obs_dim,):
            raise UsageError(
                f"the TD3+BC policy was trained on states of {self.cfg.obs_dim} dims (proprio + object "
                f"poses); this observation has {len(observation.state)} + {len(env)}"
            )
        return s

    @torch.no_grad()
    def act(self, observation: Observation) -> np.ndarray:
        """float32 [1, A] in action units, inside the bounds."""
        s = torch.from_numpy(self.observe(observation))[None]
        return self.model.mean_action(s).numpy().astype(np.float32)

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """mu(s) [B, A], action units, of obs [B, S]."""
        return self.model.mean_action(obs)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[B]: log-likelihood of actions [B, A] (action units) at obs [B, S]; see `TD3BC.log_prob`."""
        return self.model.log_prob(obs, actions)


# ---------------------------------------------------------------------- training
def _normalised(model: TD3BC, t: Transitions) -> list[torch.Tensor]:
    """(s, a, r, s', done) as tensors: observations normalised, actions clipped into [-1, 1]."""
    with torch.no_grad():
        return [
            model.normalise_obs(torch.from_numpy(t.obs)),
            model.normalise_actions(torch.from_numpy(t.actions)).clamp(-1, 1),
            torch.from_numpy(t.rewards),
            model.normalise_obs(torch.from_numpy(t.next_obs)),
            torch.from_numpy(t.dones),
        ]


@torch.no_grad()
def _soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for tp, p in zip(target.parameters(), source.parameters(), strict=True):
        tp.lerp_(p, tau)


def train_td3bc(
    cfg: TD3BCConfig,
    data: Transitions,
    out: str | Path,
    *,
    extra: Transitions | None = None,
    extra_fraction: float = 0.0,
    regenerate: Callable[[TD3BC, int], Transitions] | None = None,
    regenerate_every: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Train TD3+BC on `data` (real transitions, which also set the normalisation), with `extra_fraction`
    of every batch drawn from `extra` (e.g. synthetic transitions). With `regenerate`, the extra
    transitions are replaced by `regenerate(model, step)` every `regenerate_every` steps (PGD's loop: new
    synthetic data guided towards the agent as it is now). Writes `out/config.json`, `out/log.jsonl`
    (a `regenerated` row per replacement) and returns the checkpoints `out/step-XXXXXX` (every `save_at`
    step and the last)."""
    out = Path(out)
    if not 0.0 <= extra_fraction <= 1.0:
        raise UsageError(f"extra_fraction must be in [0, 1], got {extra_fraction}")
    n_extra = round(cfg.batch_size * extra_fraction) if extra is not None else 0
    if extra_fraction > 0 and (extra is None or len(extra) == 0):
        raise UsageError(f"extra_fraction {extra_fraction} needs extra transitions; none were given")
    if regenerate is not None and (n_extra == 0 or regenerate_every < 1):
        raise UsageError("regenerate needs extra transitions, extra_fraction > 0 and regenerate_every >= 1")
    if len(data) == 0:
        raise TrainingError("no training transitions")
    if extra is not None:
        _check_extra(extra, data)
    cfg = cfg.model_copy(update={"obs_dim": data.obs.shape[1], "action_dim": data.actions.shape[1]})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = TD3BC(cfg)
    model.obs_mean.copy_(torch.from_numpy(data.obs.mean(0)))
    model.obs_std.copy_(torch.from_numpy(data.obs.std(0) + 1e-3))
    model.action_low.copy_(torch.from_numpy(data.action_low))
    model.action_high.copy_(torch.from_numpy(data.action_high))
    real = _normalised(model, data)
    synthetic = _normalised(model, extra) if extra is not None and n_extra > 0 else None
    regenerated: list[dict[str, float]] = []

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
    (out / "log.jsonl").unlink(missing_ok=True)
    save_at = sorted(set(cfg.save_at) | {cfg.steps})
    saved: list[Path] = []

    def loss(step: int, device: torch.device) -> dict[str, torch.Tensor]:
        _, g = step_generators(cfg.seed, step)
        i = torch.randint(0, len(real[0]), (cfg.batch_size - n_extra,), generator=g)
        batch = [x[i] for x in real]
        if synthetic is not None:
            j = torch.randint(0, len(synthetic[0]), (n_extra,), generator=g)
            batch = [torch.cat([b, x[j]]) for b, x in zip(batch, synthetic, strict=True)]
        noise = (torch.randn(batch[1].shape, generator=g) * cfg.policy_noise).clamp(
            -cfg.noise_clip, cfg.noise_clip
        )
        s, a, r, s2, done = (x.to(device) for x in batch)

        # critics: r + discount (1 - done) min Q'(s', pi'(s') + clipped noise)
        with torch.no_grad():
            a2 = (model.actor_target(s2) + noise.to(device)).clamp(-1, 1)
            target = r + cfg.discount * (1 - done) * torch.min(*model.critic_target(s2, a2))
        q1, q2 = model.critic(s, a)
        critic_loss = nn.functional.mse_loss(q1, target) + nn.functional.mse_loss(q2, target)
        if (step + 1) % cfg.policy_freq:
            return {"loss": critic_loss, "critic_loss": critic_loss}

        # actor (delayed): maximise lambda Q_1(s, pi(s)) while staying near the data's action
        pi = model.actor(s)
        model.critic.requires_grad_(False)  # this loss moves the actor only
        q = model.critic.first(s, pi)
        model.critic.requires_grad_(True)
        lmbda = cfg.alpha / q.abs().mean().detach().clamp_min(1e-8)
        bc = nn.functional.mse_loss(pi, a)
        actor_loss = -lmbda * q.mean() + bc
        return {
            "loss": critic_loss + actor_loss,
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "bc_mse": bc,
            "lambda": lmbda,
        }

    def after_step(done: int, _: dict[str, float]) -> None:
        if done % cfg.policy_freq == 0:  # the step that updated the actor
            _soft_update(model.actor_target, model.actor, cfg.tau)
            _soft_update(model.critic_target, model.critic, cfg.tau)
        if (
            regenerate is not None
            and synthetic is not None
            and done % regenerate_every == 0
            and done < cfg.steps
        ):
            t0 = time.perf_counter()
            fresh = regenerate(copy.deepcopy(model).eval(), done)  # a copy: the callback may freeze it
            _check_extra(fresh, data)
            if len(fresh) == 0:
                raise TrainingError(f"regeneration at step {done} gave no transitions")
            synthetic[:] = _normalised(model, fresh)
            regenerated.append({"step": done, "transitions": len(fresh), "seconds": time.perf_counter() - t0})
        if done in save_at:
            saved.append(model.save_pretrained(out / f"step-{done:06d}"))

    fit(
        Run(
            model=model,
            params=list(model.actor.parameters()) + list(model.critic.parameters()),
            loss=loss,
            lr=lambda _: cfg.lr,
            steps=cfg.steps,
            log=Log(path=out / "log.jsonl", every=100),
            after_step=after_step,
            hardware=Hardware(accelerator="auto", devices=1),
            progress=progress,
        )
    )
    model.eval()
    if regenerated:
        with (out / "log.jsonl").open("a") as f:
            f.writelines(json.dumps({"regenerated": r}) + "\n" for r in regenerated)
    return saved


def _check_extra(extra: Transitions, data: Transitions) -> None:
    if (
        extra.obs.shape[1:] != data.obs.shape[1:]
        or not np.array_equal(extra.action_low, data.action_low)
        or not np.array_equal(extra.action_high, data.action_high)
    ):
        raise UsageError(
            f"extra transitions (obs {extra.obs.shape[1]} dims, action bounds {extra.action_high.tolist()}) "
            f"do not match the data's ({data.obs.shape[1]}, {data.action_high.tolist()})"
        )
