"""A probabilistic dynamics ensemble over the robot's and the objects' state (PETS / COPlanner style).

    dreamtwin train ensemble --config configs/worldmodels/ensemble.yaml --data data/push_cube_small \
        --out runs/ensemble
    model = DynamicsEnsemble.from_pretrained("runs/ensemble/model")
    step = model.step(states, actions, physics, gen)     # next states [B, S], uncertainty [B]

The state of a step is the robot's proprio [D] (ee xyz, gripper width, arm joints) followed by the
object poses [E] (per object: position xyz, quaternion wxyz). Each of `members` Gaussian MLPs maps
(state, action, the log physics scale factors a user knows when `physics` names them) to a
diagonal Gaussian over the change of the state during one control step, in units normalised by
the training set's statistics, with a learned variance soft-bounded between learned limits
(PETS). Every member trains on its own bootstrap resample of the training transitions; after
training the `elites` members with the lowest held-out error are the ones that predict.

COPlanner's conventions: a sampled transition comes from one elite member drawn at random per
row, as a draw from that member's Gaussian (`sample=True`), or as that member's mean; the
uncertainty u of a prediction is the mean over output dimensions of the standard deviation of the
elite members' means (normalised units). Object quaternions are kept with w >= 0 and unit norm.

Training runs on the one harness (`common.training`, Lightning); `evaluate_ensemble` reports the
held-out one-step NLL and the open-loop error per horizon. Imports torch, nothing heavier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, Field, model_validator
from torch import nn

from common.config import Strict, load_model
from common.io import atomic_write_text
from common.training import Hardware, Log, Run, TrainingError, fit, step_generators, warmup_cosine


class EnsembleTrainConfig(Strict):
    steps: int = Field(6000, ge=1)
    batch_size: int = Field(256, ge=1, description="transitions per member and step")
    lr: float = Field(1e-3, gt=0)
    warmup: int = Field(100, ge=0)
    weight_decay: float = Field(5e-5, ge=0)
    logvar_bound_weight: float = Field(0.01, ge=0, description="pull on the learned log-variance limits")
    bootstrap: bool = Field(True, description="each member trains on its own bootstrap resample")
    holdout_episodes: int = Field(30, ge=0, description="the last episodes, held out (as the video model)")
    val_every: int = Field(1000, ge=1)
    seed: int = 0


class EnsembleConfig(Strict):
    """A dynamics ensemble and how to train it; the fields after `train` come from the dataset."""

    version: int = 1
    type: Literal["dynamics_ensemble"] = "dynamics_ensemble"
    members: int = Field(7, ge=1)
    elites: int = Field(5, ge=1)
    hidden: int = Field(200, ge=8)
    layers: int = Field(4, ge=1, description="hidden layers per member")
    physics: list[str] = Field(
        default_factory=list,
        description="randomisation parameters given as inputs (log scale factor; 0 = nominal), as the video model's",
    )
    train: EnsembleTrainConfig = Field(default_factory=EnsembleTrainConfig)
    # resolved from the dataset at training
    state_dim: int = 0
    env_dim: int = 0
    action_dim: int = 0
    fps: float = 10.0
    scene: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> EnsembleConfig:
        if self.elites > self.members:
            raise ValueError(f"elites ({self.elites}) must not exceed members ({self.members})")
        return self

    @property
    def dim(self) -> int:
        """Size of the predicted state: proprio + object poses."""
        return self.state_dim + self.env_dim

    @property
    def in_dim(self) -> int:
        return self.dim + self.action_dim + len(self.physics)


def load_ensemble_config(path: str | Path, overrides: dict[str, Any] | None = None) -> EnsembleConfig:
    return load_model(EnsembleConfig, path, overrides)


def canonical_quaternions(env: np.ndarray) -> np.ndarray:
    """Object poses [..., 7k] with every quaternion of unit norm and w >= 0 (q and -q are one rotation)."""
    out = np.array(env, dtype=np.float32, copy=True)
    for i in range(out.shape[-1] // 7):
        q = out[..., 7 * i + 3 : 7 * i + 7]
        q /= np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-8)
        q *= np.where(q[..., :1] < 0, -1.0, 1.0)
    return out


class EnsembleLinear(nn.Module):
    """`members` independent linear layers applied as one batched matmul: [M, B, i] -> [M, B, o]."""

    def __init__(self, members: int, i: int, o: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, i, o))
        self.bias = nn.Parameter(torch.zeros(members, 1, o))
        nn.init.trunc_normal_(self.weight, std=1.0 / (2.0 * i**0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


@dataclass
class Step:
    """One predicted control step for B rows (physical units)."""

    next: torch.Tensor  # [B, S]: the sampled (or chosen member's mean) next state
    mean: torch.Tensor  # [B, S]: the elite members' mean next state
    std: torch.Tensor  # [B, S]: across-elite standard deviation of the means (epistemic)
    uncertainty: torch.Tensor  # [B]: COPlanner's u: mean over dims of that std in normalised units


class DynamicsEnsemble(nn.Module):
    in_mean: torch.Tensor
    in_std: torch.Tensor
    out_mean: torch.Tensor
    out_std: torch.Tensor
    elite: torch.Tensor

    def __init__(self, cfg: EnsembleConfig) -> None:
        super().__init__()
        if cfg.dim == 0 or cfg.action_dim == 0:
            raise TrainingError("an ensemble needs state_dim/env_dim/action_dim (resolved from a dataset)")
        self.cfg = cfg
        M, S = cfg.members, cfg.dim
        sizes = [cfg.in_dim] + [cfg.hidden] * cfg.layers
        self.hidden = nn.ModuleList(
            EnsembleLinear(M, a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.head = EnsembleLinear(M, cfg.hidden, 2 * S)
        self.max_logvar = nn.Parameter(torch.full((S,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((S,), -10.0))
        self.register_buffer("in_mean", torch.zeros(cfg.in_dim))
        self.register_buffer("in_std", torch.ones(cfg.in_dim))
        self.register_buffer("out_mean", torch.zeros(S))
        self.register_buffer("out_std", torch.ones(S))
        self.register_buffer("elite", torch.arange(cfg.elites))

    # ------------------------------------------------------------------ the networks
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised inputs [M, B, I] (one batch per member) -> mean, log-variance [M, B, S] (normalised)."""
        h = x
        for layer in self.hidden:
            h = torch.nn.functional.silu(layer(h))
        mean, logvar = self.head(h).chunk(2, dim=-1)
        logvar = self.max_logvar - torch.nn.functional.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + torch.nn.functional.softplus(logvar - self.min_logvar)
        return mean, logvar

    def inputs(
        self, states: torch.Tensor, actions: torch.Tensor, physics: torch.Tensor | None
    ) -> torch.Tensor:
        """Normalised inputs [B, I] of states [B, S], actions [B, A], log physics [B, P]."""
        parts = [states, actions]
        if self.cfg.physics:
            if physics is None:
                raise TrainingError(f"this ensemble is conditioned on physics {self.cfg.physics}; none given")
            parts.append(physics)
        return (torch.cat(parts, -1) - self.in_mean) / self.in_std

    @torch.no_grad()
    def predict(
        self, states: torch.Tensor, actions: torch.Tensor, physics: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every elite member's next-state mean and variance, [K, B, S] each, in physical units."""
        x = self.inputs(states, actions, physics)
        mean, logvar = self(x.expand(self.cfg.members, *x.shape))
        mean, logvar = mean[self.elite], logvar[self.elite]
        nxt = states + mean * self.out_std + self.out_mean
        return nxt, logvar.exp() * self.out_std**2

    @torch.no_grad()
    def step(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        physics: torch.Tensor | None = None,
        gen: torch.Generator | list[torch.Generator] | None = None,
        *,
        sample: bool = True,
    ) -> Step:
        """One control step for every row: a random elite member per row, its Gaussian sampled (`sample`)
        or its mean; with `gen=None` the elites' mean (deterministic). `gen` is one generator for all
        rows or one per row (then a row's draw does not depend on the others)."""
        means, var = self.predict(states, actions, physics)  # [K, B, S]
        K, B, S = means.shape
        mean = means.mean(0)
        std = means.std(0, unbiased=False) if K > 1 else torch.zeros_like(mean)
        u = (std / self.out_std).mean(-1)
        if gen is None:
            nxt = mean
        else:
            gens = gen if isinstance(gen, list) else None
            if gens is not None and len(gens) != B:
                raise ValueError(f"{len(gens)} generators for {B} rows")
            if gens is None:
                assert isinstance(gen, torch.Generator)
                pick = torch.randint(0, K, (B,), generator=gen)
                eps = torch.randn((B, S), generator=gen)
            else:
                pick = torch.cat([torch.randint(0, K, (1,), generator=g) for g in gens])
                eps = torch.cat([torch.randn((1, S), generator=g) for g in gens])
            rows = torch.arange(B)
            nxt = means[pick, rows]
            if sample:
                nxt = nxt + var[pick, rows].sqrt() * eps.to(nxt)
        return Step(next=self.tidy(nxt), mean=self.tidy(mean), std=std, uncertainty=u)

    def tidy(self, states: torch.Tensor) -> torch.Tensor:
        """States with unit, w >= 0 object quaternions."""
        d = self.cfg.state_dim
        out = states.clone()
        for i in range(self.cfg.env_dim // 7):
            q = out[:, d + 7 * i + 3 : d + 7 * i + 7]
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
            out[:, d + 7 * i + 3 : d + 7 * i + 7] = q * torch.where(q[:, :1] < 0, -1.0, 1.0)
        return out

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, path: str | Path) -> Path:
        from worldmodels.checkpoint import save_pretrained

        return save_pretrained(self, self.cfg, path)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu") -> DynamicsEnsemble:
        from worldmodels.checkpoint import load_module

        model: DynamicsEnsemble = load_module(cls, EnsembleConfig, path, map_location)
        return model


def is_ensemble_checkpoint(path: str | Path) -> bool:
    from worldmodels.checkpoint import checkpoint_type

    return checkpoint_type(path) == "dynamics_ensemble"


# ---------------------------------------------------------------------- data
def episode_states(e: dict[str, np.ndarray]) -> np.ndarray:
    """An episode's states [T, D + E]: proprio then object poses (canonical quaternions)."""
    return np.concatenate([e["state"], canonical_quaternions(e["env_state"])], 1).astype(np.float32)


def transitions(
    episodes: list[dict[str, np.ndarray]], which: list[int], physics: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(states [N, S], actions [N, A], log physics [N, P], next states [N, S]) of the chosen episodes:
    the action of frame t leads to frame t + 1."""
    s, a, p, n = [], [], [], []
    for k in which:
        e = episodes[k]
        x = episode_states(e)
        T = len(x)
        s.append(x[:-1])
        n.append(x[1:])
        a.append(e["actions"][: T - 1])
        phys = e["physics"] if physics else np.zeros(0, np.float32)
        p.append(np.repeat(phys[None], T - 1, 0))
    return (
        np.concatenate(s).astype(np.float32),
        np.concatenate(a).astype(np.float32),
        np.concatenate(p).astype(np.float32),
        np.concatenate(n).astype(np.float32),
    )


StateConfig = TypeVar("StateConfig", bound=BaseModel)


def resolve_config(
    cfg: StateConfig, episodes: list[dict[str, np.ndarray]], meta: dict[str, Any]
) -> StateConfig:
    """A state model's config (the ensemble's, the trajectory diffusion model's) with the fields that come
    from the dataset: state, object-pose and action sizes, fps and the scene."""
    e = episodes[0]
    return cfg.model_copy(
        update={
            "state_dim": int(e["state"].shape[1]),
            "env_dim": int(e["env_state"].shape[1]),
            "action_dim": int(e["actions"].shape[1]),
            "fps": float(meta.get("fps") or cfg.fps),  # type: ignore[attr-defined]
            "scene": meta.get("scene"),
        }
    )


# ---------------------------------------------------------------------- training
def nll(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gaussian negative log-likelihood per element, without the constant (PETS's loss)."""
    return ((mean - target) ** 2 * torch.exp(-logvar) + logvar) / 2


def train_ensemble(
    cfg: EnsembleConfig,
    episodes: list[dict[str, np.ndarray]],
    meta: dict[str, Any],
    out: str | Path,
    *,
    progress: bool = True,
) -> Path:
    """Train on dataset episodes (`datagen.windows.load_episodes(..., frames=False)` form); writes
    `out/config.json`, `out/log.jsonl`, `out/model/` and `out/evaluation.json`; returns `out/model`."""
    from worldmodels.training import split, with_physics

    out = Path(out)
    cfg = resolve_config(cfg, episodes, meta)
    episodes = with_physics(episodes, meta, cfg.physics)
    tc = cfg.train
    train_eps, held = split(len(episodes), tc.holdout_episodes)
    S, X, P, N = transitions(episodes, train_eps, bool(cfg.physics))
    if len(S) < 2:
        raise TrainingError(f"{len(S)} training transitions: a dataset with longer episodes is needed")
    torch.manual_seed(tc.seed)
    model = DynamicsEnsemble(cfg)
    inputs = np.concatenate([S, X, P], 1)
    delta = N - S
    model.in_mean.copy_(torch.from_numpy(inputs.mean(0)))
    model.in_std.copy_(torch.from_numpy(inputs.std(0) + 1e-6).clamp_min(1e-3))
    model.out_mean.copy_(torch.from_numpy(delta.mean(0)))
    model.out_std.copy_(torch.from_numpy(delta.std(0) + 1e-6).clamp_min(1e-5))
    x_all = model.inputs(
        torch.from_numpy(S), torch.from_numpy(X), torch.from_numpy(P) if cfg.physics else None
    )
    y_all = (torch.from_numpy(delta) - model.out_mean) / model.out_std
    rng = np.random.default_rng(tc.seed)
    n = len(x_all)
    boot = torch.from_numpy(
        np.stack([rng.integers(0, n, n) if tc.bootstrap else np.arange(n) for _ in range(cfg.members)])
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
    (out / "log.jsonl").unlink(missing_ok=True)
    log = Log(path=out / "log.jsonl", every=100)

    def loss(step: int, device: torch.device) -> dict[str, torch.Tensor]:
        _, g = step_generators(tc.seed, step)
        pick = torch.randint(0, n, (cfg.members, tc.batch_size), generator=g)
        rows = torch.gather(boot, 1, pick)  # each member's batch from its own resample
        mean, logvar = model(x_all[rows].to(device))
        target = y_all[rows].to(device)
        fit_loss = nll(mean, logvar, target).mean()
        bound = tc.logvar_bound_weight * (model.max_logvar.sum() - model.min_logvar.sum()) / cfg.dim
        return {"loss": fit_loss + bound, "nll": fit_loss, "mse": ((mean - target) ** 2).mean()}

    def validate(step: int, _: dict[str, float]) -> None:
        if held and (step % tc.val_every == 0 or step == tc.steps):
            model.eval()
            r = held_out_error(model, episodes, held)
            model.train()
            log.write({"step": step, "val_mse": r["mse"], "val_nll": r["nll"]})

    fit(
        Run(
            model=model,
            params=list(model.parameters()),
            loss=loss,
            lr=warmup_cosine(tc.lr, tc.steps, tc.warmup),
            steps=tc.steps,
            weight_decay=tc.weight_decay,
            log=log,
            after_step=validate,
            hardware=Hardware(accelerator="auto", devices=1),
            progress=progress,
        )
    )
    model.eval()
    choose_elites(model, episodes, held or train_eps)
    path = model.save_pretrained(out / "model")
    report = evaluate_ensemble(model, episodes, held or train_eps)
    atomic_write_text(out / "evaluation.json", json.dumps(report, indent=2))
    return path


@torch.no_grad()
def held_out_error(
    model: DynamicsEnsemble, episodes: list[dict[str, np.ndarray]], which: list[int]
) -> dict[str, Any]:
    """One-step error of every member on the chosen episodes (normalised units): per-member MSE and the
    NLL and MSE averaged over the elites."""
    S, X, P, N = transitions(episodes, which, bool(model.cfg.physics))
    x = model.inputs(
        torch.from_numpy(S), torch.from_numpy(X), torch.from_numpy(P) if model.cfg.physics else None
    )
    y = (torch.from_numpy(N - S) - model.out_mean) / model.out_std
    mean, logvar = model(x.expand(model.cfg.members, *x.shape))
    per_member = ((mean - y) ** 2).mean((1, 2))
    e = model.elite
    return {
        "member_mse": [float(v) for v in per_member],
        "mse": float(per_member[e].mean()),
        "nll": float(nll(mean[e], logvar[e], y).mean()),
    }


def choose_elites(model: DynamicsEnsemble, episodes: list[dict[str, np.ndarray]], which: list[int]) -> None:
    """Keep the `elites` members with the lowest one-step error on the chosen (held-out) episodes."""
    r = held_out_error(model, episodes, which)
    order = np.argsort(r["member_mse"], kind="stable")[: model.cfg.elites]
    model.elite.copy_(torch.from_numpy(np.sort(order)))


@torch.no_grad()
def rollout_states(
    model: DynamicsEnsemble,
    start: np.ndarray,
    actions: np.ndarray,
    physics: np.ndarray | None = None,
    gen: torch.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Open-loop rollouts of B rows from states [B, S] under actions [B, H, A]: states [B, H + 1, S] and
    uncertainty [B, H] (elites' mean with `gen=None`, else a random member per row and step, sampled)."""
    s = torch.from_numpy(np.asarray(start, np.float32))
    phys = None if physics is None else torch.from_numpy(np.asarray(physics, np.float32))
    states, unc = [s], []
    for h in range(actions.shape[1]):
        st = model.step(s, torch.from_numpy(np.asarray(actions[:, h], np.float32)), phys, gen)
        s = st.next
        states.append(s)
        unc.append(st.uncertainty)
    return torch.stack(states, 1).numpy(), torch.stack(unc, 1).numpy()


def evaluate_ensemble(
    model: DynamicsEnsemble,
    episodes: list[dict[str, np.ndarray]],
    which: list[int],
    horizons: tuple[int, ...] = (1, 5, 10, 20),
    starts_every: int = 5,
) -> dict[str, Any]:
    """Held-out one-step NLL and MSE, and the open-loop error per horizon (cm) of the end effector and
    the first object's position, from every `starts_every`-th step of each episode under its recorded
    actions (elites' mean), with the mean uncertainty u at that horizon."""
    cfg = model.cfg
    one = held_out_error(model, episodes, which)
    H = max(horizons)
    rows_s, rows_a, rows_p, rows_t = [], [], [], []
    for k in which:
        e = episodes[k]
        x = episode_states(e)
        for t0 in range(0, len(x) - 1, starts_every):
            h = min(H, len(x) - 1 - t0)
            a = np.zeros((H, cfg.action_dim), np.float32)
            a[:h] = e["actions"][t0 : t0 + h]
            tgt = np.full((H + 1, cfg.dim), np.nan, np.float32)
            tgt[: h + 1] = x[t0 : t0 + h + 1]
            rows_s.append(x[t0])
            rows_a.append(a)
            rows_t.append(tgt)
            rows_p.append(e["physics"] if cfg.physics else np.zeros(0, np.float32))
    pred, unc = rollout_states(
        model, np.stack(rows_s), np.stack(rows_a), np.stack(rows_p) if cfg.physics else None
    )
    tgt = np.stack(rows_t)
    d = cfg.state_dim
    per_h: dict[str, Any] = {}
    for h in horizons:
        ok = ~np.isnan(tgt[:, h, 0])
        if not ok.any():
            continue
        ee = np.linalg.norm(pred[ok, h, :3] - tgt[ok, h, :3], axis=-1) * 100
        obj = np.linalg.norm(pred[ok, h, d : d + 3] - tgt[ok, h, d : d + 3], axis=-1) * 100
        per_h[str(h)] = {
            "n": int(ok.sum()),
            "ee_error_cm": float(ee.mean()),
            "object_error_cm": float(obj.mean()),
            "uncertainty": float(unc[ok, h - 1].mean()),
        }
    return {
        "episodes": len(which),
        "one_step": {"mse": one["mse"], "nll": one["nll"], "member_mse": one["member_mse"]},
        "elites": [int(i) for i in model.elite],
        "open_loop": per_h,
    }
