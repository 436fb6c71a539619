"""What a world is: SceneSpec, the digital twin, and the vocabulary every package speaks.

Importing this package is cheap. `DigitalTwin` (Genesis) loads on first attribute access.
"""

from __future__ import annotations

from typing import Any

from scenes.errors import ActionError, DreamTwinError, SpecError, WorldStateError
from scenes.spec import SceneSpec, load_scene_spec
from scenes.types import Episode, EpisodeStep, Observation, Policy, StepResult, World, as_action_chunk

__all__ = [
    "ActionError",
    "DigitalTwin",
    "DreamTwinError",
    "Episode",
    "EpisodeStep",
    "Observation",
    "Policy",
    "SceneSpec",
    "SpecError",
    "StepResult",
    "World",
    "WorldEnv",
    "WorldStateError",
    "as_action_chunk",
    "load_scene_spec",
]


def __getattr__(name: str) -> Any:
    if name == "DigitalTwin":
        from scenes.twin import DigitalTwin

        return DigitalTwin
    if name == "WorldEnv":
        from scenes.gym_env import WorldEnv

        return WorldEnv
    raise AttributeError(f"module 'scenes' has no attribute {name!r}")
