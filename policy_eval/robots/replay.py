"""`ReplayRobot`: recorded episodes played back behind the `Robot` interface. Each `reset_scene(seed)` picks
the recorded episode of that seed; each `send_action` advances one recorded frame whatever was sent (the
log cannot react), and records what was asked — to check a policy against logged observations, or to run
a pipeline end to end on recordings without an arm."""

from __future__ import annotations

from typing import Any

import numpy as np

from common.errors import UsageError


class ReplayRobot:
    """`episodes`: per episode, `frames` uint8 [T, V, 3, H, W] (camera order `cameras`), `state` [T, D],
    `success` bool [T] (as `datagen.windows.load_episodes` gives); `seeds`: each episode's seed;
    `state_names`: the D float features (default `state.0`, `state.1`, ...); `action_names`: what is sent."""

    name = "replay"

    def __init__(
        self,
        episodes: list[dict[str, np.ndarray]],
        seeds: list[int],
        cameras: list[str],
        action_names: list[str],
        state_names: list[str] | None = None,
    ) -> None:
        if len(episodes) != len(seeds) or not episodes:
            raise UsageError(f"ReplayRobot: {len(episodes)} episodes and {len(seeds)} seeds")
        self.episodes, self.cameras, self.actions = episodes, cameras, action_names
        self.by_seed = {int(s): k for k, s in enumerate(seeds)}
        d = episodes[0]["state"].shape[1]
        self.state_names = state_names or [f"state.{i}" for i in range(d)]
        h, w = episodes[0]["frames"].shape[-2:]
        self._shape = (int(h), int(w), 3)
        self._connected = False
        self._k: int | None = None
        self._t = 0
        self.asked: list[dict[str, float]] = []

    @property
    def observation_features(self) -> dict[str, Any]:
        return {**dict.fromkeys(self.state_names, float), **dict.fromkeys(self.cameras, self._shape)}

    @property
    def action_features(self) -> dict[str, Any]:
        return dict.fromkeys(self.actions, float)

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        self._connected = True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def disconnect(self) -> None:
        self._connected = False

    def _episode(self) -> dict[str, np.ndarray]:
        if not self._connected or self._k is None:
            raise UsageError("ReplayRobot: connect() and reset_scene(seed) first")
        return self.episodes[self._k]

    def get_observation(self) -> dict[str, Any]:
        e = self._episode()
        out: dict[str, Any] = {
            n: float(v) for n, v in zip(self.state_names, e["state"][self._t], strict=True)
        }
        for v, cam in enumerate(self.cameras):
            out[cam] = np.ascontiguousarray(e["frames"][self._t, v].transpose(1, 2, 0))
        return out

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        e = self._episode()
        self.asked.append({k: float(action[k]) for k in self.actions})
        self._t = min(self._t + 1, len(e["state"]) - 1)
        return dict(action)

    def hold_action(self) -> dict[str, float]:
        return dict.fromkeys(self.actions, 0.0)

    def reset_scene(self, seed: int) -> None:
        if int(seed) not in self.by_seed:
            raise UsageError(
                f"ReplayRobot: no recorded episode with seed {seed} (have {sorted(self.by_seed)})"
            )
        self._k, self._t, self.asked = self.by_seed[int(seed)], 0, []

    def success(self) -> bool:
        return bool(self._episode()["success"][self._t])
