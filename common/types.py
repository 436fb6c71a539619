"""The shared vocabulary: observations, action chunks, the World and Policy protocols, episodes.

Every world (digital twin, learned world model, real robot) and every policy speaks these types.
Nothing here imports a simulator or a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from common.errors import ActionError


@dataclass
class Observation:
    """What a policy sees at one instant.

    images: camera name -> uint8 [H, W, 3].
    state: float32 [D] proprio (for the twin: ee xyz, gripper width, 7 arm joints).
    task: the instruction text.
    environment_state: float32 [E] privileged object poses; `None` for non-privileged consumers.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    task: str
    environment_state: np.ndarray | None = None
    timestamp: float = 0.0

    def __post_init__(self) -> None:
        self.state = np.asarray(self.state, dtype=np.float32)
        if self.state.ndim != 1:
            raise ValueError(f"Observation.state must be 1-D float32 [D], got shape {self.state.shape}")
        for name, img in self.images.items():
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(
                    f"Observation.images[{name!r}] must be uint8 [H, W, 3], got {img.dtype} {img.shape}"
                )
        if self.environment_state is not None:
            self.environment_state = np.asarray(self.environment_state, dtype=np.float32)

    def without_privileged(self) -> Observation:
        """The observation a non-privileged policy may see: no simulator state."""
        return Observation(images=self.images, state=self.state, task=self.task, timestamp=self.timestamp)


@dataclass
class StepResult:
    """What a world returns for one executed action chunk.

    observations: one per executed action (fewer than K if the episode ended inside the chunk).
    done: the episode is over (success, or the step limit was reached).
    info: at least `success` (bool); the twin adds `object_poses`, `truncated`, `step`.
    """

    observations: list[Observation]
    done: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return bool(self.info.get("success", False))

    @property
    def last(self) -> Observation:
        return self.observations[-1]


@runtime_checkable
class World(Protocol):
    """A place to roll a policy out: the twin, a learned world model, or a real robot."""

    action_dim: int
    world_id: str

    def reset(self, seed: int, options: dict[str, Any] | None = None) -> Observation: ...

    def step(self, action_chunk: np.ndarray) -> StepResult: ...


@runtime_checkable
class BoundedWorld(World, Protocol):
    """A world that knows its per-dimension action limits (the twin: ee deltas within `max_delta`,
    the gripper in [0, 1]); float32 [A] each."""

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class BatchedWorld(Protocol):
    """A world that advances many episodes in one call (a learned world model: one forward pass).

    `step_batch` takes one chunk per episode (None, or anything, for an episode that has ended, whose
    result is None). An episode's outcome must not depend on which others share the batch."""

    action_dim: int
    world_id: str

    def reset_batch(self, seeds: list[int]) -> list[Observation]: ...

    def step_batch(self, chunks: list[np.ndarray | None]) -> list[StepResult | None]: ...


@runtime_checkable
class Policy(Protocol):
    """Anything that maps observations to action chunks float32 [K, A].

    `reset(seed)` starts an episode; a stochastic policy draws its noise from the seed, so that an
    episode is a function of (policy, seed)."""

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: Observation) -> np.ndarray: ...


def as_action_chunk(action: Any, action_dim: int) -> np.ndarray:
    """Validate and return an action chunk as float32 [K, A]; a single [A] action becomes [1, A].

    Raises ActionError (one line) on wrong shape, non-numeric dtype, NaN or inf.
    """
    try:
        chunk = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ActionError(f"action chunk must be numeric float32[K, {action_dim}]: {e}") from None
    if chunk.ndim == 1:
        chunk = chunk[None]
    if chunk.ndim != 2 or chunk.shape[1] != action_dim or chunk.shape[0] < 1:
        raise ActionError(
            f"action chunk must have shape [K, {action_dim}] with K >= 1, got {tuple(np.shape(action))}"
        )
    if not np.all(np.isfinite(chunk)):
        bad = np.argwhere(~np.isfinite(chunk))[0]
        raise ActionError(
            f"action chunk contains NaN/inf at [{bad[0]}, {bad[1]}] (value {chunk[tuple(bad)]})"
        )
    return chunk


@dataclass
class EpisodeStep:
    """One executed action and the observation it led to."""

    action: np.ndarray  # [A]
    observation: Observation
    success: bool
    info: dict[str, Any] = field(
        default_factory=dict
    )  # per-step world info kept with the episode (JSON-ready)


@dataclass
class Episode:
    """A rollout: the initial observation, the steps, and where it came from."""

    initial_observation: Observation
    steps: list[EpisodeStep]
    policy_id: str
    world_id: str
    seed: int
    scene_hash: str = ""
    perturbation: dict[str, Any] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return any(s.success for s in self.steps)

    @property
    def length(self) -> int:
        return len(self.steps)

    def actions(self) -> np.ndarray:
        """float32 [T, A]"""
        return np.stack([s.action for s in self.steps]) if self.steps else np.zeros((0, 0), np.float32)

    def frames(self, camera: str) -> np.ndarray:
        """uint8 [T+1, H, W, 3]: the initial frame then one per step."""
        obs = [self.initial_observation] + [s.observation for s in self.steps]
        return np.stack([o.images[camera] for o in obs])

    def summary(self) -> dict[str, Any]:
        """JSON-ready metadata (no arrays)."""
        return {
            "policy_id": self.policy_id,
            "world_id": self.world_id,
            "seed": self.seed,
            "scene_hash": self.scene_hash,
            "perturbation": self.perturbation,
            "success": self.success,
            "length": self.length,
            "first_success_step": next((i for i, s in enumerate(self.steps) if s.success), None),
        }
