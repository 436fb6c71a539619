"""Perturbations: named, levelled changes of a scene (or of the observation / action stream), declared
in YAML and applied per seed.

    axis: light_intensity                       # in a sweep config (policy_eval.perturb)
      type: light_intensity
      levels: {dim: {scale: 0.4}, bright: {scale: [1.6, 2.0]}}

    p = Perturbation(axis="light_intensity", level="dim", change=LightIntensity(scale=0.4))
    spec = p.structure(nominal)                 # the scene to build (distractors add bodies)
    variant, params = p.apply(spec, seed=17)    # the scene for seed 17 and the values drawn for it

Each value is fixed, or a range [low, high] drawn uniformly per seed. The draws come from their own
random stream (seed, axis), so the episode's own draws (object poses, a policy's noise) are those of
the unperturbed control on the same seed: a perturbed episode differs from its control only in the
perturbed factor. Every change but distractors is a variant of the built scene (`DigitalTwin.set_variant`);
distractors add bodies, so a twin is built for them. `observation_noise` and `action_latency` leave the
scene alone and act on what the policy sees and does (`policy_eval.perturb.PerturbedPolicy`).

Axis types, after RoboLab's perturbations scaled to our cell: light intensity, direction and colour;
camera pose (position and rotation offsets); table and object colour; distractor cubes; the object's
initial-pose region; friction and mass; observation noise; action latency.
"""

from __future__ import annotations

import colorsys
import zlib
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from common.config import Strict
from common.errors import SpecError
from scenes.spec import Color, SceneSpec

Value = float | tuple[float, float]
"""A fixed value, or a range [low, high] drawn uniformly per seed."""


def _bounded(v: Value, lo: float, hi: float, what: str) -> Value:
    vals = (v,) if isinstance(v, int | float) else tuple(v)
    if len(vals) == 2 and vals[0] > vals[1]:
        raise ValueError(f"range low must be <= high, got {list(vals)}")
    if any(not lo <= x <= hi for x in vals):
        raise ValueError(f"{what} must lie in [{lo}, {hi}], got {v if len(vals) == 1 else list(vals)}")
    return v


def _draw(v: Value, rng: np.random.Generator) -> float:
    """The value for one seed: a fixed value as is (no draw), a range drawn uniformly."""
    if isinstance(v, int | float):
        return float(v)
    return float(rng.uniform(v[0], v[1]))


def _check(lo: float, hi: float, what: str, *names: str) -> Any:
    return field_validator(*names)(lambda cls, v: _bounded(v, lo, hi, what))


def _color_ok(c: Color) -> Color:
    if any(not 0.0 <= x <= 1.0 for x in c):
        raise ValueError(f"colour components must lie in [0, 1], got {list(c)}")
    return c


def _recolor(c: Color, color: Color | None, hue: float, value: float) -> Color:
    if color is not None:
        return color
    if hue == 0.0 and value == 1.0:
        return c
    h, s, v = colorsys.rgb_to_hsv(*c)
    return tuple(
        float(np.clip(x, 0, 1)) for x in colorsys.hsv_to_rgb((h + hue / 360) % 1, s, min(v * value, 1))
    )  # type: ignore[return-value]


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """`v` rotated by `angle` (radians) about the unit vector `axis` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    return v * np.cos(angle) + np.cross(k, v) * np.sin(angle) + k * np.dot(k, v) * (1 - np.cos(angle))


class _Axis(Strict):
    def structure(self, d: dict[str, Any]) -> None:
        """Change the scene's structure (bodies); most axes do not."""

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        """Change `d` (the spec as a dict) for one seed; the values drawn, by name."""
        return {}

    def check_scene(self, spec: SceneSpec) -> None:
        """Raise ValueError (naming the key) if the scene lacks what this change names."""


# ---------------------------------------------------------------------- lights
class LightIntensity(_Axis):
    type: Literal["light_intensity"] = "light_intensity"
    scale: Value = Field(description="every light's intensity times this")
    _v = _check(0.0, 10.0, "scale", "scale")

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        s = _draw(self.scale, rng)
        for ld in d["lights"]:
            ld["intensity"] *= s
        return {"light.intensity_scale": s}


class LightDirection(_Axis):
    type: Literal["light_direction"] = "light_direction"
    tilt_deg: Value = Field(description="tilt of each directional light away from its nominal direction")
    azimuth_deg: Value = Field((0.0, 360.0), description="direction of the tilt (0: towards +x)")
    _t = _check(0.0, 89.0, "tilt_deg", "tilt_deg")
    _a = _check(0.0, 360.0, "azimuth_deg", "azimuth_deg")

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        t, az = np.deg2rad(_draw(self.tilt_deg, rng)), np.deg2rad(_draw(self.azimuth_deg, rng))
        for ld in d["lights"]:
            if ld["type"] != "directional":
                continue
            v = np.asarray(ld["dir"], dtype=np.float64)
            n = np.linalg.norm(v)
            f = v / n
            ref = np.array([0.0, 0.0, 1.0]) if abs(f[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
            u = np.cross(f, ref)
            u /= np.linalg.norm(u)
            w = np.cross(f, u)
            axis = np.cos(az) * u + np.sin(az) * w  # the tilt turns f about an axis perpendicular to it
            ld["dir"] = tuple((n * _rotate(f, axis, t)).tolist())
        return {"light.tilt_deg": float(np.rad2deg(t)), "light.azimuth_deg": float(np.rad2deg(az))}


class LightColor(_Axis):
    type: Literal["light_color"] = "light_color"
    color: Color = Field(description="every light's RGB colour, multiplied component-wise")
    _c = field_validator("color")(lambda cls, v: _color_ok(v))

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        for ld in d["lights"]:
            ld["color"] = tuple(float(a * b) for a, b in zip(ld["color"], self.color, strict=True))
        return {f"light.color_{c}": float(v) for c, v in zip("rgb", self.color, strict=True)}


# ---------------------------------------------------------------------- cameras
class CameraPose(_Axis):
    """Offsets of a camera's position (world frame, metres) and orientation (radians: yaw about the world
    z axis, pitch about the camera's right axis, roll about its viewing axis). RoboLab's external camera
    ranges are x, y ±0.2 m, z ±0.1 m and ±0.2 rad for a cell about twice the size of ours."""

    type: Literal["camera_pose"] = "camera_pose"
    camera: str | None = Field(None, description="the camera moved (default: every camera)")
    x: Value = 0.0
    y: Value = 0.0
    z: Value = 0.0
    roll: Value = 0.0
    pitch: Value = 0.0
    yaw: Value = 0.0
    _p = _check(-0.5, 0.5, "a position offset (m)", "x", "y", "z")
    _r = _check(-1.0, 1.0, "a rotation offset (rad)", "roll", "pitch", "yaw")

    def check_scene(self, spec: SceneSpec) -> None:
        names = [c.name for c in spec.cameras]
        if self.camera is not None and self.camera not in names:
            raise ValueError(f"camera: scene {spec.name!r} has no camera {self.camera!r} (cameras: {names})")

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        vals = {k: _draw(getattr(self, k), rng) for k in ("x", "y", "z", "roll", "pitch", "yaw")}
        for cd in d["cameras"]:
            if self.camera is not None and cd["name"] != self.camera:
                continue
            p, look, up = (np.asarray(cd[k], dtype=np.float64) for k in ("pos", "lookat", "up"))
            dist = np.linalg.norm(look - p)
            f = (look - p) / dist
            right = np.cross(f, up)
            right /= np.linalg.norm(right)
            u = np.cross(right, f)
            f, u = _rotate(f, right, vals["pitch"]), _rotate(u, right, vals["pitch"])
            z = np.array([0.0, 0.0, 1.0])
            f, u = _rotate(f, z, vals["yaw"]), _rotate(u, z, vals["yaw"])
            u = _rotate(u, f, vals["roll"])
            p = p + np.array([vals["x"], vals["y"], vals["z"]])
            cd["pos"], cd["lookat"], cd["up"] = (tuple(v.tolist()) for v in (p, p + dist * f, u))
        return {f"camera.{k}": v for k, v in vals.items()}


# ---------------------------------------------------------------------- appearance
class _Recolor(_Axis):
    """A new colour, or hue (degrees) and value (brightness factor) shifts of the nominal one."""

    color: Color | None = Field(None, description="the new colour (else hue/value shifts)")
    hue_deg: Value = 0.0
    value_scale: Value = 1.0
    _c = field_validator("color")(lambda cls, v: v if v is None else _color_ok(v))
    _h = _check(-180.0, 180.0, "hue_deg", "hue_deg")
    _s = _check(0.05, 5.0, "value_scale", "value_scale")

    def recolor(self, nominal: Color, rng: np.random.Generator, key: str) -> tuple[Color, dict[str, float]]:
        h, v = _draw(self.hue_deg, rng), _draw(self.value_scale, rng)
        return _recolor(nominal, self.color, h, v), {f"{key}.hue_deg": h, f"{key}.value_scale": v}


class TableColor(_Recolor):
    type: Literal["table_color"] = "table_color"

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        d["table"]["color"], params = self.recolor(spec.table.color, rng, "table")
        return params


class ObjectColor(_Recolor):
    type: Literal["object_color"] = "object_color"
    object: str

    def check_scene(self, spec: SceneSpec) -> None:
        _has_object(spec, self.object, "object")

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        od = next(o for o in d["objects"] if o["name"] == self.object)
        od["color"], params = self.recolor(spec.object(self.object).color, rng, self.object)
        return params


def _has_object(spec: SceneSpec, name: str, key: str, movable: bool = False) -> None:
    names = [o.name for o in spec.objects if not (movable and o.fixed)]
    if name not in names:
        what = "movable object" if movable else "object"
        raise ValueError(f"{key}: scene {spec.name!r} has no {what} {name!r} ({what}s: {names})")


class Distractors(_Axis):
    """`count` extra cubes placed per seed in `region` (table coordinates), clear of the scene's objects,
    markers and each other by `clearance`."""

    type: Literal["distractors"] = "distractors"
    count: int = Field(ge=1, le=8)
    size: Value = Field(0.04, description="cube edge, metres")
    color: Color = (0.2, 0.3, 0.85)
    mass: float = Field(0.1, gt=0, le=10)
    x: tuple[float, float] = Field(description="placement region, world x range (m)")
    y: tuple[float, float] = Field(description="placement region, world y range (m)")
    clearance: float = Field(0.03, ge=0, le=0.5, description="free gap to other bodies and markers, metres")
    _s = _check(0.01, 0.15, "size (m)", "size")
    _c = field_validator("color")(lambda cls, v: _color_ok(v))
    _r = _check(-2.0, 2.0, "a region bound (m)", "x", "y")

    def _size(self) -> float:
        return float(self.size) if isinstance(self.size, int | float) else float(self.size[1])

    def structure(self, d: dict[str, Any]) -> None:
        # fixed bodies (one shape for every seed): the largest size; a range scales nothing per seed
        s = self._size()
        for i in range(self.count):
            d["objects"].append(
                {
                    "name": f"distractor{i}",
                    "shape": "box",
                    "size": (s, s, s),
                    "color": self.color,
                    "mass": self.mass,
                    "friction": 0.6,
                    "pose": {
                        "pos": ((self.x[0] + self.x[1]) / 2, (self.y[0] + self.y[1]) / 2 + 0.2 * i, s / 2)
                    },
                }
            )

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        from scenes.spec import sample_initial_poses

        s = self._size()
        poses = sample_initial_poses(spec, seed)  # where the scene's own objects start on this seed
        taken = [
            (p[:2], max(o.size[:2]) / 2 if o.shape == "box" else o.size[0])
            for o in spec.objects
            if not o.name.startswith("distractor")
            for p in [poses[o.name][0]]
        ]
        taken += [(np.asarray(m.pos[:2]), max(m.size[:2]) / 2) for m in spec.markers]
        params: dict[str, float] = {}
        for i in range(self.count):
            for _ in range(200):
                xy = np.array([rng.uniform(*self.x), rng.uniform(*self.y)])
                if all(np.linalg.norm(xy - c) > r + s * 0.71 + self.clearance for c, r in taken):
                    break
            else:
                raise SpecError(
                    f"distractors: no free place for distractor{i} in x {list(self.x)}, y {list(self.y)} "
                    f"on seed {seed}; widen the region or lower count / clearance"
                )
            taken.append((xy, s * 0.71))
            od = next(o for o in d["objects"] if o["name"] == f"distractor{i}")
            od["pose"] = {"pos": (float(xy[0]), float(xy[1]), s / 2), "euler_deg": (0.0, 0.0, 0.0)}
            od["randomize"] = {}
            params.update({f"distractor{i}.x": float(xy[0]), f"distractor{i}.y": float(xy[1])})
        return params

    def check_scene(self, spec: SceneSpec) -> None:
        clash = [o.name for o in spec.objects if o.name.startswith("distractor")]
        if clash:
            raise ValueError(f"type: scene {spec.name!r} already has objects named {clash}")


# ---------------------------------------------------------------------- poses and physics
class ObjectPose(_Axis):
    """The object's initial-pose region: offsets from its nominal pose (a float is a fixed offset),
    replacing the scene's own `randomize` ranges. RoboLab uses ±10/20/30 cm on a larger table."""

    type: Literal["object_pose"] = "object_pose"
    object: str
    x: Value = 0.0
    y: Value = 0.0
    yaw_deg: Value = 0.0
    _p = _check(-0.3, 0.3, "an offset (m)", "x", "y")
    _y = _check(-180.0, 180.0, "yaw_deg", "yaw_deg")

    def check_scene(self, spec: SceneSpec) -> None:
        _has_object(spec, self.object, "object", movable=True)

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        od = next(o for o in d["objects"] if o["name"] == self.object)
        pair = lambda v: (float(v), float(v)) if isinstance(v, int | float) else (float(v[0]), float(v[1]))  # noqa: E731
        # the episode's own pose draw (scenes.spec.sample_initial_poses) then lands in the new region:
        # the same seed draws the same uniform numbers, scaled to the new ranges
        od["randomize"] = {"x": pair(self.x), "y": pair(self.y), "yaw_deg": pair(self.yaw_deg)}
        from scenes.spec import sample_initial_poses

        pos, _ = sample_initial_poses(SceneSpec.model_validate(d), seed)[self.object]
        return {f"{self.object}.x": float(pos[0]), f"{self.object}.y": float(pos[1])}


class _PhysicsScale(_Axis):
    """A physical property of the listed objects (and the table's, for friction) times `scale`."""

    FIELD: ClassVar[str]
    scale: Value
    objects: list[str] | None = Field(
        None, description="the objects changed (default: every movable object, and the table for friction)"
    )
    _v = _check(0.01, 100.0, "scale", "scale")

    def check_scene(self, spec: SceneSpec) -> None:
        for i, name in enumerate(self.objects or []):
            _has_object(spec, name, f"objects.{i}")

    def apply(
        self, d: dict[str, Any], spec: SceneSpec, rng: np.random.Generator, seed: int
    ) -> dict[str, float]:
        s = _draw(self.scale, rng)
        for od in d["objects"]:
            if (self.objects is None or od["name"] in self.objects) and not (
                od["fixed"] and self.FIELD == "mass"
            ):
                od[self.FIELD] *= s
        if self.objects is None and self.FIELD in d["table"]:
            d["table"][self.FIELD] *= s
        return {f"{self.FIELD}_scale": s}


class Friction(_PhysicsScale):
    FIELD: ClassVar[str] = "friction"
    type: Literal["friction"] = "friction"


class Mass(_PhysicsScale):
    FIELD: ClassVar[str] = "mass"
    type: Literal["mass"] = "mass"


# ---------------------------------------------------------------------- the policy's stream
class ObservationNoise(_Axis):
    """Gaussian noise on what the policy sees: pixels (0-255 units, clipped) and proprio (state units)."""

    type: Literal["observation_noise"] = "observation_noise"
    pixel_std: float = Field(0.0, ge=0, le=128)
    state_std: float = Field(0.0, ge=0, le=0.1)

    @model_validator(mode="after")
    def _some(self) -> ObservationNoise:
        if self.pixel_std == 0 and self.state_std == 0:
            raise ValueError("pixel_std or state_std must be > 0")
        return self


class ActionLatency(_Axis):
    """The policy's actions reach the robot `steps` control steps late (the robot holds still meanwhile),
    as a real robot's transport and control stack adds."""

    type: Literal["action_latency"] = "action_latency"
    steps: int = Field(ge=1, le=10)


Change = Annotated[
    LightIntensity
    | LightDirection
    | LightColor
    | CameraPose
    | TableColor
    | ObjectColor
    | Distractors
    | ObjectPose
    | Friction
    | Mass
    | ObservationNoise
    | ActionLatency,
    Field(discriminator="type"),
]
AXIS_TYPES = [
    "light_intensity",
    "light_direction",
    "light_color",
    "camera_pose",
    "table_color",
    "object_color",
    "distractors",
    "object_pose",
    "friction",
    "mass",
    "observation_noise",
    "action_latency",
]


class Perturbation(Strict):
    """One level of one axis, as an evaluation carries it (`EvalConfig.perturbation`)."""

    axis: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_]+$")
    level: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    change: Change

    @property
    def cell(self) -> str:
        return f"{self.axis}={self.level}"

    def structure(self, spec: SceneSpec) -> SceneSpec:
        """The scene to build for this perturbation (the nominal one unless bodies are added)."""
        d = spec.model_dump()
        self.change.structure(d)
        return SceneSpec.model_validate(d)

    def apply(self, spec: SceneSpec, seed: int) -> tuple[SceneSpec, dict[str, float]]:
        """The scene of `seed` (a variant of `spec`, the structure) and the values drawn for it."""
        rng = np.random.default_rng([seed, 0x9E27, zlib.crc32(self.axis.encode())])
        d = spec.model_dump()
        params = self.change.apply(d, spec, rng, seed)
        return SceneSpec.model_validate(d), params

    @property
    def stream(self) -> ObservationNoise | ActionLatency | None:
        """The change of the policy's observation or action stream, if that is what this is."""
        return self.change if isinstance(self.change, ObservationNoise | ActionLatency) else None
