"""The worlds an evaluation can run in, by name: `twin`, `worldmodel:PATH` or `ensemble:PATH`.

    world = make_world("worldmodel:assets/worldmodels/push_cube_tiny", spec)
    observations = world.reset_batch(seeds=[0, 1, 2])       # every world starts from the twin's
    results = world.step_batch([chunk0, chunk1, chunk2])    # initial observation for that seed

`twin` is the `DigitalTwin` itself (a `World`; the runner steps its episodes one after another).
An imagined world is a `BatchedWorld` as well as a `World` (`reset_batch(seeds)`,
`step_batch(chunks)`: a chunk of an episode that has ended is ignored and its
result is None) and advances all its episodes in one forward pass.

`ensemble:PATH` is a dynamics ensemble over states (`worldmodels.ensemble`) whose frames are the
twin's renderer posed at the predicted state (`DigitalTwin.show`, no physics); evaluated without
rendering it needs seconds for policies that read states.

An imagined world starts each episode from the observation the twin shows at reset for the same
seed (frames, proprio and object poses), so that every policy meets the same initial scenes in
every world.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import SpecError, UsageError
from common.io import files_sha256
from common.types import Observation, StepResult, World
from scenes.spec import SceneSpec

if TYPE_CHECKING:
    from worldmodels.ensemble_world import EnsembleWorld
    from worldmodels.video_world import VideoWorld


@dataclass(frozen=True)
class WorldName:
    kind: str  # "twin" | "worldmodel" | "ensemble"
    path: str | None = None

    def __str__(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path}"


def parse_world(text: str) -> WorldName:
    """'twin', 'worldmodel:PATH' (a `save_pretrained` directory of a video world model) or
    'ensemble:PATH' (of a dynamics ensemble)."""
    kind, sep, path = text.partition(":")
    if kind == "twin" and not sep:
        return WorldName("twin")
    if kind in ("worldmodel", "ensemble") and path:
        return WorldName(kind, path)
    raise SpecError(f"world {text!r}: expected 'twin', 'worldmodel:PATH' or 'ensemble:PATH'")


def world_fingerprint(world: WorldName) -> str | None:
    """sha256 of a world model's `config.json`, `model.safetensors` (and `trust.json`): what makes two evaluations of
    `worldmodel:PATH` the same evaluation. None for the twin (its identity is the scene spec) and for a
    directory without those files (loading it reports that)."""
    if world.path is None:
        return None
    files = [Path(world.path) / name for name in ("config.json", "model.safetensors")]
    if not all(f.is_file() for f in files):
        return None
    trust = Path(world.path) / "trust.json"  # scores every imagined episode: part of what the run computed
    return files_sha256(files + ([trust] if trust.is_file() else []))


class _TwinStarted:
    """A learned world (`inner`, batched) whose episodes start from the twin's initial observation for each
    seed; the `World` protocol over its batched API (a None chunk, for an ended episode, is ignored)."""

    inner: Any
    twin: World
    action_dim: int

    def reset_batch(self, seeds: list[int]) -> list[Observation]:
        raise NotImplementedError

    def reset(self, seed: int, options: dict[str, Any] | None = None) -> Observation:
        return self.reset_batch([seed])[0]

    def step(self, action_chunk: np.ndarray) -> StepResult:
        r = self.step_batch([action_chunk])[0]
        if r is None:
            raise UsageError("step after the episode ended; call reset")
        return r

    def step_batch(self, chunks: list[np.ndarray | None]) -> list[StepResult | None]:
        zero = np.zeros((1, self.action_dim), np.float32)
        results: list[StepResult | None] = self.inner.step_batch([zero if c is None else c for c in chunks])
        return results


class StateImaginedWorld(_TwinStarted):
    """A dynamics ensemble (`EnsembleWorld`) started, for each seed, from the twin's initial state."""

    def __init__(self, world: EnsembleWorld, twin: World) -> None:
        self.ensemble = self.inner = world
        self.twin = twin
        self.action_dim = world.action_dim
        self.world_id = "ensemble"

    def physics_of(self, spec: SceneSpec) -> dict[str, float]:
        """The physics scale factors of `spec` relative to the scene the ensemble was trained in."""
        from scenes.randomization import physics_scales

        trained = self.ensemble.model.cfg.scene
        return physics_scales(spec, SceneSpec.model_validate(trained)) if trained is not None else {}

    def dress(self, spec: SceneSpec) -> None:
        """The twin now wears the variant `spec`: the ensemble is told its physics."""
        self.ensemble.set_physics(self.physics_of(spec))

    def reset_batch(self, seeds: list[int]) -> list[Observation]:
        return self.ensemble.reset_batch([self.twin.reset(s) for s in seeds], list(seeds))


class ImaginedWorld(_TwinStarted):
    """A video world model started, for each seed, from the twin's initial observation."""

    def __init__(self, video_world: VideoWorld, twin: World, physics: dict[str, float] | None = None) -> None:
        """`physics`: the twin's physics scale factors (`scenes.randomization.physics_scales`), given to a
        world model conditioned on physics."""
        self.video = self.inner = video_world
        self.twin = twin
        self.physics = dict(physics or {})
        self.action_dim = video_world.action_dim
        self.world_id = "worldmodel"

    def dress(self, spec: SceneSpec) -> None:
        """The twin now wears the variant `spec`: a physics-conditioned model is told its physics."""
        from scenes.randomization import physics_scales

        trained = self.video.cfg.scene
        self.physics = physics_scales(spec, SceneSpec.model_validate(trained)) if trained is not None else {}

    def reset_batch(self, seeds: list[int]) -> list[Observation]:
        from worldmodels.video_world import Context

        contexts = [Context.from_observations([self.twin.reset(s)], physics=self.physics) for s in seeds]
        return self.video.reset_batch(contexts, list(seeds))


def check_scene_matches(model_scene: dict[str, Any] | None, spec: SceneSpec, path: str) -> None:
    """A world model must be evaluated in the scene it was trained on (cameras and image size)."""
    if model_scene is None:
        return
    trained = SceneSpec.model_validate(model_scene)
    mine = {c.name: tuple(c.resolution) for c in spec.cameras}
    theirs = {c.name: tuple(c.resolution) for c in trained.cameras}
    missing = {k: v for k, v in theirs.items() if mine.get(k) != v}
    if missing:
        raise SpecError(
            f"world model {path} was trained on cameras {theirs}; the evaluation scene has {mine} "
            f"(set scene_overrides, e.g. cameras.0.resolution: {list(next(iter(theirs.values())))})"
        )


def make_world(
    name: str | WorldName,
    spec: SceneSpec,
    *,
    render: bool = True,
    twin: World | None = None,
    device: str = "cpu",
    samples: int | None = None,
    sampler_steps: int | None = None,
    sampler_spacing: str | None = None,
    sampler_precision: str | None = None,
) -> World:
    """Build the named world for `spec`; `twin` may be a prebuilt DigitalTwin of the same scene."""
    w = parse_world(name) if isinstance(name, str) else name
    if twin is None:
        from scenes.twin import DigitalTwin

        twin = DigitalTwin(spec, render=render or w.kind == "worldmodel")
    if w.kind == "twin":
        return twin
    assert w.path is not None
    if w.kind == "ensemble":
        return _ensemble_world(w.path, spec, twin, render)
    from worldmodels.video_model import VideoWorldModel
    from worldmodels.video_world import VideoWorld

    model = VideoWorldModel.from_pretrained(w.path)
    video = VideoWorld(
        model,
        model.cfg.sampler.updated(
            samples=samples, steps=sampler_steps, spacing=sampler_spacing, precision=sampler_precision
        ),
        device=device,
    )
    check_scene_matches(video.cfg.scene, spec, w.path)
    physics: dict[str, float] = {}
    if (
        video.cfg.scene is not None
    ):  # the evaluation scene's physics relative to the one the model was trained in
        from scenes.randomization import physics_scales

        physics = physics_scales(spec, SceneSpec.model_validate(video.cfg.scene))
    world = ImaginedWorld(video, twin, physics)
    world.world_id = str(w)
    return world


def _ensemble_world(path: str, spec: SceneSpec, twin: World, render: bool) -> StateImaginedWorld:
    from scenes.randomization import physics_scales
    from worldmodels.ensemble import DynamicsEnsemble
    from worldmodels.ensemble_world import EnsembleWorld

    model = DynamicsEnsemble.from_pretrained(path)
    physics: dict[str, float] = {}
    if model.cfg.scene is not None:
        physics = physics_scales(spec, SceneSpec.model_validate(model.cfg.scene))
    show = getattr(twin, "show", None) if render else None
    world = StateImaginedWorld(EnsembleWorld(model, spec, renderer=show, physics=physics), twin)
    world.world_id = f"ensemble:{path}"
    return world
