"""Cheap stand-ins for worlds and policies, so the evaluation job's logic is tested without Genesis.

CoinWorld: one "push" per step; an episode succeeds at the first step where a per-(seed, step) coin
lands below the policy's action[0] (its skill), or ends after `max_steps`. Observations carry an
8x8 image whose colour encodes the step, from camera "side" (the push_cube scene's camera).
"""

from __future__ import annotations

import numpy as np

from common.types import Observation, StepResult
from policy_eval.policies.base import POLICIES, register_policy


class CoinWorld:
    action_dim = 4
    world_id = "coin"

    def __init__(self, max_steps: int = 5, bias: float = 0.0) -> None:
        self.max_steps, self.bias = max_steps, bias

    def _obs(self, t: int) -> Observation:
        img = np.full((8, 8, 3), (30 * t) % 255, np.uint8)
        img[..., 0] = (self.seed * 37) % 255
        return Observation(
            images={"side": img},
            state=np.array([t, 0, 0, 0], np.float32),
            task="coin",
            environment_state=np.zeros(7, np.float32),
        )

    def reset(self, seed: int, options: dict | None = None) -> Observation:
        self.seed, self.t = seed, 0
        return self._obs(0)

    def step(self, chunk: np.ndarray) -> StepResult:
        self.t += 1
        coin = np.random.default_rng([self.seed, self.t]).random()
        success = coin < float(np.asarray(chunk)[0, 0]) + self.bias
        return StepResult(
            [self._obs(self.t)], done=success or self.t >= self.max_steps, info={"success": bool(success)}
        )


class BatchedCoinWorld:
    """CoinWorld's episodes advanced together through the batched API."""

    action_dim = 4
    world_id = "coin-batched"

    def __init__(self, max_steps: int = 5, bias: float = 0.0) -> None:
        self.max_steps, self.bias = max_steps, bias
        self.calls = 0

    def reset_batch(self, seeds: list[int]) -> list[Observation]:
        self.worlds = [CoinWorld(self.max_steps, self.bias) for _ in seeds]
        self.done = [False] * len(seeds)
        return [w.reset(s) for w, s in zip(self.worlds, seeds, strict=False)]

    def step_batch(self, chunks: list) -> list[StepResult | None]:
        self.calls += 1
        out: list[StepResult | None] = []
        for i, (w, c) in enumerate(zip(self.worlds, chunks, strict=False)):
            if self.done[i]:
                out.append(None)
                continue
            r = w.step(c)
            self.done[i] = r.done
            out.append(r)
        return out


class SkillPolicy:
    privileged = False

    def __init__(self, skill: float) -> None:
        self.skill = skill

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, obs: Observation) -> np.ndarray:
        return np.array([[self.skill, 0, 0, 0]], np.float32)


SKILLS = {
    "coin_always": 1.0,
    "coin_good": 0.25,
    "coin_poor": 0.08,
    "coin_never": 0.0,
}  # ~1, .76, .34, 0 over 5 steps
for _name, _skill in SKILLS.items():
    if _name not in POLICIES:
        register_policy(
            _name,
            lambda spec, seed, s=_skill: SkillPolicy(s),
            privileged=False,
            description=f"test policy with per-step success chance {_skill}",
        )


class VariantCoinWorld(CoinWorld):
    """A CoinWorld dressed as a scene variant (`set_variant`, as the twin is): dimmer light lowers every
    step's chance of success in proportion to the first light's intensity (nominal 4.0)."""

    def __init__(self, max_steps: int = 5) -> None:
        super().__init__(max_steps)
        self.light = 1.0
        self.variants: list = []

    def set_variant(self, spec) -> None:
        self.spec = spec
        self.variants.append(spec)
        self.light = spec.lights[0].intensity / 4.0

    def step(self, chunk: np.ndarray) -> StepResult:
        c = np.array(chunk, np.float32)
        c[0, 0] *= min(self.light, 1.0)
        return super().step(c)
