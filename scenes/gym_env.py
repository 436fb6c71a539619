"""Expose any `World` as a `gymnasium.Env`.

    env = WorldEnv(DigitalTwin(spec))
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Observations are dicts `{"state": float32[D], "images": {camera: uint8[H, W, 3]}}`; the reward is
1.0 on success, else 0.0; `terminated` means success, `truncated` the step limit. With
`chunk_size=K > 1` an action is a whole chunk float32 [K, A].
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from common.types import BoundedWorld, Observation, World


class WorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, world: World, chunk_size: int = 1, probe_seed: int = 0) -> None:
        self.world = world
        self.chunk_size = chunk_size
        a = world.action_dim
        low, high = (
            world.action_bounds()
            if isinstance(world, BoundedWorld)
            else (np.full(a, -np.inf), np.full(a, np.inf))
        )
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        if chunk_size > 1:
            low, high = np.tile(low, (chunk_size, 1)), np.tile(high, (chunk_size, 1))
        self.action_space = spaces.Box(low=low, high=high, dtype=np.float32)
        first = world.reset(probe_seed)  # spaces are read off a real observation
        self.observation_space = spaces.Dict(
            {
                "state": spaces.Box(-np.inf, np.inf, shape=first.state.shape, dtype=np.float32),
                "images": spaces.Dict(
                    {
                        n: spaces.Box(0, 255, shape=img.shape, dtype=np.uint8)
                        for n, img in first.images.items()
                    }
                ),
            }
        )
        self._last: Observation | None = None

    @staticmethod
    def _to_gym(obs: Observation) -> dict[str, Any]:
        return {"state": obs.state, "images": dict(obs.images)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self._last = self.world.reset(seed, options)
        return self._to_gym(self._last), {"task": self._last.task}

    def step(self, action: np.ndarray):
        chunk = np.asarray(action, dtype=np.float32).reshape(-1, self.world.action_dim)
        result = self.world.step(chunk)
        self._last = result.last
        success = result.success
        truncated = bool(result.done and not success)
        return self._to_gym(self._last), float(success), success, truncated, dict(result.info)

    def render(self) -> np.ndarray | None:
        if self._last is None or not self._last.images:
            return None
        return next(iter(self._last.images.values()))
