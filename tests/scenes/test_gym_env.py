"""WorldEnv reads action limits from worlds that declare them (BoundedWorld) and leaves others open."""

from __future__ import annotations

import numpy as np

from common.types import BoundedWorld, Observation, StepResult, World
from scenes.gym_env import WorldEnv


class Line:
    """A 1-D world: the state is the position, an action moves it; success at 1.0 or beyond."""

    action_dim = 2
    world_id = "line"

    def reset(self, seed: int, options: dict | None = None) -> Observation:
        self.x = 0.0
        return self._obs()

    def _obs(self) -> Observation:
        return Observation(
            images={"cam": np.zeros((4, 4, 3), np.uint8)}, state=np.array([self.x]), task="reach"
        )

    def step(self, action_chunk: np.ndarray) -> StepResult:
        self.x += float(np.sum(action_chunk[:, 0]))
        return StepResult([self._obs()], done=self.x >= 1.0, info={"success": self.x >= 1.0})


class BoundedLine(Line):
    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array([-0.5, 0.0], np.float32), np.array([0.5, 1.0], np.float32)


def test_bounds_come_from_the_world_when_it_declares_them():
    assert isinstance(Line(), World) and not isinstance(Line(), BoundedWorld)
    assert isinstance(BoundedLine(), BoundedWorld)
    open_env, bounded = WorldEnv(Line()), WorldEnv(BoundedLine(), chunk_size=3)
    assert np.all(np.isinf(open_env.action_space.low)) and open_env.action_space.shape == (2,)
    assert bounded.action_space.shape == (3, 2)
    np.testing.assert_array_equal(bounded.action_space.high, np.tile([0.5, 1.0], (3, 1)))
    bounded.reset(seed=0)
    obs, reward, terminated, truncated, _ = bounded.step(np.tile([0.5, 0.0], (3, 1)).astype(np.float32))
    assert obs["state"][0] == 1.5 and reward == 1.0 and terminated and not truncated
