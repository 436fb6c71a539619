"""Exploration around any policy: its actions plus seeded Gaussian noise, declared as a `type: noisy` YAML.

    type: noisy
    base: bc_mid                       # any policy name, checkpoint directory or policy YAML
    action_std: [0.01, 0.01, 0.005, 0.0]   # per action dimension (one number: every dimension)

A deterministic policy explores this way when its episodes are imagined for fine-tuning (Ctrl-World samples
its policy's actions); the noise is drawn from the episode seed, so an episode stays a function of
(policy, seed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from common.config import Strict, load_model
from common.types import Observation, Policy, as_action_chunk
from scenes.spec import SceneSpec

ACTION_DIMS = {"ee_delta_pos_gripper": 4}


class NoisyConfig(Strict):
    type: Literal["noisy"] = "noisy"
    base: str = Field(description="the policy explored around")
    action_std: float | list[float] = Field(description="noise std per action dimension, action units")
    seed_offset: int = Field(
        0, ge=0, description="a second exploration of the same seeds uses another offset"
    )

    @field_validator("action_std")
    @classmethod
    def _nonneg(cls, v: float | list[float]) -> float | list[float]:
        if any(s < 0 or not np.isfinite(s) for s in np.atleast_1d(v)):
            raise ValueError(f"action_std must be finite and >= 0, got {v}")
        return v


def load_noisy_config(path: str | Path) -> NoisyConfig:
    return load_model(NoisyConfig, path)


class NoisyPolicy:
    """`base`'s actions + N(0, std²) per dimension, the noise drawn from (episode seed, policy seed)."""

    def __init__(self, base: Policy, std: float | list[float], action_dim: int, seed: int = 0) -> None:
        self.base = base
        self.privileged = bool(getattr(base, "privileged", False))
        self.std = np.broadcast_to(np.asarray(std, np.float64), (action_dim,)).copy()
        self.action_dim, self.seed = action_dim, seed
        self.rng = np.random.default_rng([seed, 0x401])

    def reset(self, seed: int | None = None) -> None:
        self.base.reset(seed)
        self.rng = np.random.default_rng([self.seed, 0x401] + ([] if seed is None else [seed]))

    def act(self, observation: Observation) -> np.ndarray:
        chunk = as_action_chunk(self.base.act(observation), self.action_dim)
        return (chunk + self.rng.normal(0.0, 1.0, chunk.shape) * self.std).astype(np.float32)


def make_noisy_policy(path: str, spec: SceneSpec, seed: int) -> NoisyPolicy:
    from policy_eval.policies.base import make_policy

    cfg = load_noisy_config(path)
    base = make_policy(cfg.base, spec, seed)
    dim = ACTION_DIMS[spec.control.action_space]
    std = cfg.action_std
    if isinstance(std, list) and len(std) != dim:
        from common.errors import SpecError

        raise SpecError(f"{path}: action_std has {len(std)} numbers; the action space has {dim} dimensions")
    return NoisyPolicy(base, std, dim, seed + cfg.seed_offset)
