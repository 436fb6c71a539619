"""SceneSpec: what a world is, as strict, versioned YAML.

    spec = load_scene_spec("configs/scenes/push_cube.yaml")
    spec.objects[0].name, spec.task.instruction, spec.hash()

Unknown keys, wrong types, missing mesh files and unknown predicate names are rejected with one
line naming the file and the key path. Lengths are metres, angles degrees, colours RGB in [0, 1].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import numpy as np
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from common.config import Strict, format_validation_error, load_model
from common.errors import SpecError
from common.io import stable_hash
from scenes.predicates import PREDICATES

SPEC_VERSION: Final = 1

Vec3 = tuple[float, float, float]
Color = tuple[float, float, float]
Range = tuple[float, float]


def _color_ok(c: Color) -> Color:
    if any(not 0.0 <= x <= 1.0 for x in c):
        raise ValueError(f"colour components must lie in [0, 1], got {list(c)}")
    return c


def _range_ok(r: Range) -> Range:
    if r[0] > r[1]:
        raise ValueError(f"range low must be <= high, got {list(r)}")
    return r


class Pose(Strict):
    pos: Vec3 = (0.0, 0.0, 0.0)
    euler_deg: Vec3 = Field((0.0, 0.0, 0.0), description="extrinsic x-y-z rotation, degrees")

    def quat(self) -> np.ndarray:
        return euler_deg_to_quat(self.euler_deg)


class PoseRandomization(Strict):
    """Uniform offsets added to the initial pose at every reset, drawn from the episode seed."""

    x: Range = (0.0, 0.0)
    y: Range = (0.0, 0.0)
    z: Range = (0.0, 0.0)
    yaw_deg: Range = (0.0, 0.0)

    _ok = field_validator("x", "y", "z", "yaw_deg")(lambda cls, v: _range_ok(v))


class RobotSpec(Strict):
    type: Literal["franka_panda"] = "franka_panda"
    mjcf: str = Field("xml/franka_emika_panda/panda.xml", description="path inside Genesis's assets")
    base_pos: Vec3 = (0.0, 0.0, 0.0)
    init_ee_pos: Vec3 = Field((0.45, 0.0, 0.30), description="hand position at reset (reached by IK)")
    init_gripper: float = Field(1.0, ge=0.0, le=1.0, description="gripper opening at reset, 0 closed 1 open")


class TableSpec(Strict):
    """A fixed box whose top face is the z = 0 plane the robot stands on."""

    size: Vec3 = (1.2, 1.2, 0.05)
    center_xy: tuple[float, float] = (0.4, 0.0)
    color: Color = (0.76, 0.70, 0.60)
    friction: float = Field(1.0, gt=0)

    _c = field_validator("color")(lambda cls, v: _color_ok(v))


def _existing_file(v: str | None, info: ValidationInfo, what: str) -> str | None:
    if v is None:
        return v
    base = Path((info.context or {}).get("base_dir", "."))
    path = (base / v).resolve()
    if not path.is_file():
        raise ValueError(f"{what} file not found: {path}")
    return str(path)


class AppearanceSpec(Strict):
    """Where a body's Gaussians come from when not sampled from its shape."""

    kind: Literal["splat", "point_cloud"] = Field(description="3DGS PLY, or a coloured point-cloud PLY")
    file: str

    _f = field_validator("file")(lambda cls, v, info: _existing_file(v, info, "appearance"))


class ObjectSpec(Strict):
    name: str = Field(min_length=1)
    shape: Literal["box", "sphere", "cylinder", "mesh"]
    size: tuple[float, ...] = Field(
        description="box: [x, y, z]; sphere: [radius]; cylinder: [radius, height]; mesh: [scale]"
    )
    mesh: str | None = Field(None, description="mesh file (OBJ/PLY/GLB/STL), relative to the spec file")
    color: Color = (0.8, 0.1, 0.1)
    mass: float = Field(0.1, gt=0)
    friction: float = Field(1.0, gt=0)
    fixed: bool = False
    pose: Pose = Pose()
    randomize: PoseRandomization = PoseRandomization()
    appearance: AppearanceSpec | None = Field(None, description="splat renderer: Gaussians from a file")

    _c = field_validator("color")(lambda cls, v: _color_ok(v))

    @model_validator(mode="after")
    def _shape_fields(self) -> ObjectSpec:
        need = {"box": 3, "sphere": 1, "cylinder": 2, "mesh": 1}[self.shape]
        if len(self.size) != need:
            raise ValueError(f"size for a {self.shape} needs {need} number(s), got {list(self.size)}")
        if any(s <= 0 for s in self.size):
            raise ValueError(f"size must be positive, got {list(self.size)}")
        if (self.shape == "mesh") != (self.mesh is not None):
            raise ValueError("`mesh` is required for shape mesh and only allowed there")
        return self

    _m = field_validator("mesh")(lambda cls, v, info: _existing_file(v, info, "mesh"))

    def half_height(self) -> float:
        """Distance from the centre to the bottom when upright (mesh: unknown, 0)."""
        return {"box": self.size[-1] / 2, "sphere": self.size[0], "cylinder": self.size[-1] / 2}.get(
            self.shape, 0.0
        )


class MarkerSpec(Strict):
    """A visual-only flat box (e.g. a target region drawn on the table); no collision, no mass."""

    name: str
    size: Vec3
    pos: Vec3
    color: Color = (0.1, 0.7, 0.2)

    _c = field_validator("color")(lambda cls, v: _color_ok(v))


class CameraSpec(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_]+$")
    pos: Vec3
    lookat: Vec3
    up: Vec3 = (0.0, 0.0, 1.0)
    attach: Literal["hand"] | None = Field(
        None,
        description="a robot link the camera is mounted on (a wrist camera): pos, lookat and up are then in "
        "that link's frame (the hand's z axis points from the wrist to the fingertips) and the camera "
        "moves with it",
    )
    fov: float = Field(45.0, gt=1, lt=179, description="vertical field of view, degrees")
    resolution: tuple[int, int] = Field((128, 128), description="[width, height] in pixels")

    @field_validator("resolution")
    @classmethod
    def _res(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1 or v[1] < 1:
            raise ValueError(f"resolution must be positive [width, height], got {list(v)}")
        return v

    def in_world(self, link_pos: np.ndarray, link_quat: np.ndarray) -> CameraSpec:
        """This camera with pos, lookat and up in the world, for a mounted camera whose link is at
        (`link_pos`, wxyz `link_quat`); a fixed camera is returned as it is."""
        if self.attach is None:
            return self
        R, p = quat_to_rot(link_quat), np.asarray(link_pos, dtype=np.float64)
        pos, lookat, up = (
            tuple(float(x) for x in v) for v in (p + R @ self.pos, p + R @ self.lookat, R @ self.up)
        )
        return self.model_copy(update={"pos": pos, "lookat": lookat, "up": up, "attach": None})

    @model_validator(mode="after")
    def _not_degenerate(self) -> CameraSpec:
        fwd = np.subtract(self.lookat, self.pos)
        if np.linalg.norm(fwd) < 1e-6:
            raise ValueError("camera pos and lookat coincide")
        if np.linalg.norm(np.cross(fwd, self.up)) < 1e-6:
            raise ValueError("camera up is parallel to its viewing direction")
        return self


class LightSpec(Strict):
    type: Literal["directional", "point"] = "directional"
    dir: Vec3 = (-1.0, -1.0, -1.0)
    pos: Vec3 = (0.0, 0.0, 2.0)
    color: Color = (1.0, 1.0, 1.0)
    intensity: float = Field(5.0, ge=0)


class ControlSpec(Strict):
    rate_hz: float = Field(10.0, gt=0)
    action_space: Literal["ee_delta_pos_gripper"] = "ee_delta_pos_gripper"
    max_delta: float = Field(0.03, gt=0, description="largest ee displacement per control step, metres")
    workspace_low: Vec3 = (0.2, -0.45, 0.005)
    workspace_high: Vec3 = (0.8, 0.45, 0.55)
    ee_quat: tuple[float, float, float, float] = Field((0.0, 1.0, 0.0, 0.0), description="hand wxyz")
    gripper_max_width: float = Field(0.04, gt=0, description="per finger, metres")

    def next_target(self, target: np.ndarray, tcp: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """The controller's new ee target (float64 [3]) for an ee delta action: the delta scaled down
        to `max_delta`, the target kept in the workspace and never more than 2 x `max_delta` ahead
        of the hand at `tcp` (no wind-up when the hand is blocked)."""
        delta = np.asarray(delta, np.float64)
        norm = np.linalg.norm(delta)
        if norm > self.max_delta:
            delta = delta * (self.max_delta / norm)
        new = np.clip(np.asarray(target, np.float64) + delta, self.workspace_low, self.workspace_high)
        return tcp + np.clip(new - tcp, -2 * self.max_delta, 2 * self.max_delta)

    def targets(self, tcp: np.ndarray, deltas: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
        """float64 [T, 3]: the ee target the controller holds in each of T consecutive states whose hand is
        at `tcp` [T, 3] and whose actions' ee deltas are `deltas` [T, 3], from `start` (the target held in
        the first state; by default the hand itself, as after a reset) through `next_target`."""
        tcp, deltas = np.asarray(tcp, np.float64), np.asarray(deltas, np.float64)
        out = np.zeros((len(tcp), 3))
        t = tcp[0] if start is None else np.asarray(start, np.float64)
        for k in range(len(tcp)):
            out[k] = t
            t = self.next_target(t, tcp[k], deltas[k])
        return out


class PhysicsSpec(Strict):
    dt: float = Field(0.01, gt=0, le=0.05)
    substeps: int = Field(1, ge=1)
    backend: Literal["auto", "cpu", "gpu"] = "auto"


class SplatSpec(Strict):
    """Options of the Gaussian-splat renderer (used when `renderer: splat`)."""

    spacing: float = Field(0.004, gt=0, description="surface distance between sampled Gaussians, metres")
    table_spacing: float = Field(0.01, gt=0, description="coarser spacing for the large table")
    backend: Literal["auto", "torch", "gsplat"] = "auto"


class SuccessSpec(Strict):
    name: str
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _check_params(self) -> SuccessSpec:
        if self.name not in PREDICATES:
            raise ValueError(f"unknown success predicate {self.name!r}; registered: {PREDICATES.names()}")
        entry = PREDICATES.get(self.name)
        try:
            entry.params.model_validate(self.params)
        except ValidationError as e:
            raise ValueError(
                format_validation_error(e, entry.params, "params").replace(": ", ".", 1)
            ) from None
        return self

    def typed_params(self) -> Strict:
        return PREDICATES.get(self.name).params.model_validate(self.params)


class TaskSpec(Strict):
    instruction: str = ""
    success: SuccessSpec | None = Field(None, description="none: episodes never succeed (free play)")
    max_steps: int = Field(60, ge=1, description="control steps before the episode is truncated")


class SceneSpec(Strict):
    version: Literal[1] = SPEC_VERSION
    name: str = Field(min_length=1)
    robot: RobotSpec = RobotSpec()
    table: TableSpec = TableSpec()
    objects: list[ObjectSpec] = []
    markers: list[MarkerSpec] = []
    cameras: list[CameraSpec] = []
    lights: list[LightSpec] = [LightSpec()]
    control: ControlSpec = ControlSpec()
    physics: PhysicsSpec = PhysicsSpec()
    renderer: Literal["genesis", "splat"] = "genesis"
    splat: SplatSpec = SplatSpec()
    task: TaskSpec = TaskSpec()

    @model_validator(mode="after")
    def _names(self) -> SceneSpec:
        for kind, items in (("objects", self.objects), ("cameras", self.cameras), ("markers", self.markers)):
            names = [i.name for i in items]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"duplicate {kind} names: {sorted(dup)}")
        target = self.task.success.params.get("object") if self.task.success else None
        if target is not None and target not in {o.name for o in self.objects}:
            raise ValueError(f"task.success.params.object {target!r} is not one of the scene's objects")
        steps = self.physics_steps_per_control()
        if abs(steps * self.physics.dt * self.control.rate_hz - 1.0) > 1e-6:
            raise ValueError(
                f"control.rate_hz ({self.control.rate_hz}) must divide 1/physics.dt ({1 / self.physics.dt:g})"
            )
        return self

    def physics_steps_per_control(self) -> int:
        return max(1, round(1.0 / (self.control.rate_hz * self.physics.dt)))

    def object(self, name: str) -> ObjectSpec:
        return _by_name(self.objects, name, "object", self.name)

    def camera(self, name: str) -> CameraSpec:
        return _by_name(self.cameras, name, "camera", self.name)

    def hash(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


_Named = TypeVar("_Named", ObjectSpec, CameraSpec)


def _by_name(items: list[_Named], name: str, kind: str, scene: str) -> _Named:
    """The entry of a spec list called `name`; SpecError listing the names there are."""
    for item in items:
        if item.name == name:
            return item
    raise SpecError(f"scene {scene!r} has no {kind} {name!r}; {kind}s: {[i.name for i in items]}")


def load_scene_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> SceneSpec:
    return load_model(SceneSpec, path, overrides)


def euler_deg_to_quat(euler_deg: Vec3 | np.ndarray) -> np.ndarray:
    """Extrinsic x-y-z Euler angles (degrees) -> quaternion wxyz (float64 [4])."""
    rx, ry, rz = np.deg2rad(np.asarray(euler_deg, dtype=np.float64)) / 2
    qx = np.array([np.cos(rx), np.sin(rx), 0, 0])
    qy = np.array([np.cos(ry), 0, np.sin(ry), 0])
    qz = np.array([np.cos(rz), 0, 0, np.sin(rz)])
    return quat_mul(qz, quat_mul(qy, qx))


def quat_to_rot(q: np.ndarray) -> np.ndarray:
    """wxyz quaternion (normalised here) -> rotation matrix [3, 3]."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of wxyz quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def sample_initial_poses(spec: SceneSpec, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Object name -> (pos [3], quat wxyz [4]) at reset, drawn from `seed` alone."""
    rng = np.random.default_rng([seed, 0x5CE4E])
    out = {}
    for obj in spec.objects:
        r = obj.randomize
        offset = np.array([rng.uniform(*r.x), rng.uniform(*r.y), rng.uniform(*r.z)])
        yaw = rng.uniform(*r.yaw_deg)
        pos = np.asarray(obj.pose.pos, dtype=np.float64) + offset
        euler = np.asarray(obj.pose.euler_deg, dtype=np.float64) + np.array([0.0, 0.0, yaw])
        out[obj.name] = (pos, euler_deg_to_quat(euler))
    return out
