"""What a world is: `SceneSpec` (strict YAML), the Genesis digital twin, its splat renderer,
randomisation of a spec and the authoring verbs.

Importing this package is cheap. `DigitalTwin` (Genesis) and `WorldEnv` (gymnasium) load on first
attribute access. The vocabulary every package speaks (observations, the World and Policy
protocols, episodes, errors) lives one floor down, in `common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scenes.spec import SceneSpec, load_scene_spec

if TYPE_CHECKING:
    from scenes.gym_env import WorldEnv
    from scenes.twin import DigitalTwin

__all__ = ["DigitalTwin", "SceneSpec", "WorldEnv", "load_scene_spec"]


def __getattr__(name: str) -> object:
    if name == "DigitalTwin":
        from scenes.twin import DigitalTwin

        return DigitalTwin
    if name == "WorldEnv":
        from scenes.gym_env import WorldEnv

        return WorldEnv
    raise AttributeError(f"module 'scenes' has no attribute {name!r}")
