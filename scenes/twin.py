"""DigitalTwin: a `World` built from a SceneSpec on the Genesis physics engine.

    twin = DigitalTwin(load_scene_spec("configs/scenes/push_cube.yaml"))
    obs = twin.reset(seed=0)
    result = twin.step(np.array([[0.0, 0.01, 0.0, 0.0]], np.float32))  # [K, 4]

Actions are end-effector (tool-centre-point, between the fingertips) position deltas in metres
plus a gripper opening in [0, 1] (0 closed, 1 open), executed at the spec's control rate through
Genesis inverse kinematics and joint PD control, the hand held pointing down.

Genesis is imported on first construction, never at module import. One process initialises
Genesis once (backend chosen by the first twin); any number of twins may then be built. A build
says on stderr what it is doing and how long it took: the first one on a machine compiles
Genesis's physics kernels for minutes (cached afterwards). Where the twin reaches into Genesis's
internals, it goes through `scenes.genesis_compat`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.errors import SpecError, UsageError
from common.types import Observation, StepResult, as_action_chunk
from scenes import genesis_compat
from scenes.spec import CameraSpec, ObjectSpec, SceneSpec, quat_to_rot, sample_initial_poses

if TYPE_CHECKING:
    from scenes.splat.twin_renderer import SplatTwinRenderer

ACTION_DIM = 4
TCP_OFFSET = 0.1034  # hand origin -> point between the fingertips, along the hand's z axis (m)
ARM_DOFS = 7
STATE_NAMES = ["ee_x", "ee_y", "ee_z", "gripper_width"] + [f"joint{i}" for i in range(1, 8)]
ACTION_NAMES = ["d_ee_x", "d_ee_y", "d_ee_z", "gripper"]
# Franka Panda joint gains and force limits: 7 arm joints, then the 2 fingers
PANDA_KP = np.array([4500, 4500, 3500, 3500, 2000, 2000, 2000, 100, 100], dtype=np.float32)
PANDA_KV = np.array([450, 450, 350, 350, 200, 200, 200, 10, 10], dtype=np.float32)
PANDA_FORCE = np.array([87, 87, 87, 87, 12, 12, 12, 100, 100], dtype=np.float32)
PANDA_READY = [0.0, -0.4, 0.0, -2.2, 0.0, 1.9, 0.785]  # arm joints the home pose's IK starts from

_GENESIS: dict[str, Any] = {}


def genesis(backend: str = "auto") -> Any:
    """Import and initialise Genesis once per process; returns the `genesis` module."""
    if "gs" in _GENESIS:
        if backend not in ("auto", _GENESIS["backend"]):
            raise UsageError(
                f"Genesis is already initialised with backend {_GENESIS['backend']!r} in this process; "
                f"cannot switch to {backend!r}"
            )
        return _GENESIS["gs"]
    if "PYOPENGL_PLATFORM" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["PYOPENGL_PLATFORM"] = "egl"
    genesis_compat.patch_cpuinfo()
    import genesis as gs

    if backend == "auto":
        import torch

        backend = "gpu" if torch.cuda.is_available() else "cpu"
    level = os.environ.get("DREAMTWIN_GENESIS_LOG", "error")  # Genesis's own warnings are noisy
    gs.init(backend=gs.gpu if backend == "gpu" else gs.cpu, precision="32", logging_level=level, seed=0)
    _GENESIS.update(gs=gs, backend=backend)
    return gs


def build_message(scene_name: str, cache_dir: Path) -> str:
    """What a scene build is about to do: a first build compiles Genesis's kernels for minutes."""
    where = str(cache_dir).replace(str(Path.home()), "~", 1)
    if genesis_compat.kernel_cache_is_warm(cache_dir):
        return f"building the Genesis scene {scene_name!r} (physics kernels cached in {where})"
    return (
        f"building the Genesis scene {scene_name!r} (first run compiles physics kernels: "
        f"~3 min on 2 cores, cached in {where})"
    )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


class DigitalTwin:
    """A `World` on Genesis. `render=False` skips cameras (observations carry no images)."""

    action_dim = ACTION_DIM
    background_color = (0.55, 0.62, 0.70)

    def __init__(self, spec: SceneSpec, *, render: bool = True) -> None:
        self.spec = spec
        self.built_spec = spec  # the spec the scene was built from; set_variant accepts its variants
        self.render_enabled = render and bool(spec.cameras)
        self.world_id = f"twin:{spec.name}"
        self._gs = genesis(spec.physics.backend)
        _say(build_message(spec.name, genesis_compat.kernel_cache_dir()))
        t0 = time.perf_counter()
        self._build()
        self.build_seconds = time.perf_counter() - t0
        _say(f"built the Genesis scene {spec.name!r} in {self.build_seconds:.1f} s")
        self._R_ee = quat_to_rot(np.asarray(spec.control.ee_quat, dtype=np.float64))
        self._home_qpos = self._solve_home()
        self._step_count: int | None = None
        self.renderer = spec.renderer
        self._splat: Any = None
        self._built_inertia = self._inertial_properties()
        self._force_render = False
        self._light_nodes: list[Any] | None = None

    # ---------------------------------------------------------------- build
    def _build(self) -> None:
        """Create, populate and build the Genesis scene (compiles kernels on a cold cache)."""
        gs, spec = self._gs, self.spec
        self.scene = gs.Scene(
            sim_options=gs.options.SimOptions(dt=spec.physics.dt, substeps=spec.physics.substeps),
            rigid_options=gs.options.RigidOptions(box_box_detection=True),
            vis_options=self._vis_options(),
            show_viewer=False,
        )
        self._add_bodies()
        self.cameras = {
            c.name: self.scene.add_camera(
                res=tuple(c.resolution), pos=c.pos, lookat=c.lookat, up=c.up, fov=c.fov, GUI=False
            )
            for c in spec.cameras
        }
        self.scene.build()
        self._configure_robot()

    def _vis_options(self) -> Any:
        """The rasteriser's lights and background (no shadows)."""
        lights = []
        for li in self.spec.lights:
            d = {"type": li.type, "color": li.color, "intensity": li.intensity}
            d.update(dir=li.dir) if li.type == "directional" else d.update(pos=li.pos)
            lights.append(d)
        return self._gs.options.VisOptions(
            lights=lights,
            shadow=False,
            background_color=self.background_color,
            ambient_light=(0.25, 0.25, 0.25),
        )

    def _add_bodies(self) -> None:
        """Table, markers, objects and robot, in that order (the order fixes Genesis's indices)."""
        gs, spec = self._gs, self.spec
        t = spec.table
        self.table = self.scene.add_entity(
            gs.morphs.Box(size=t.size, pos=(t.center_xy[0], t.center_xy[1], -t.size[2] / 2), fixed=True),
            material=gs.materials.Rigid(friction=t.friction),
            surface=gs.surfaces.Default(color=t.color),
        )
        self.markers = [
            self.scene.add_entity(
                gs.morphs.Box(size=m.size, pos=m.pos, fixed=True, collision=False),
                surface=gs.surfaces.Default(color=m.color),
            )
            for m in spec.markers
        ]
        self.objects = {o.name: self._add_object(o) for o in spec.objects}
        self.robot = self.scene.add_entity(gs.morphs.MJCF(file=spec.robot.mjcf, pos=spec.robot.base_pos))

    def _configure_robot(self) -> None:
        """Joint PD gains and force limits of the built robot; its hand link and DOF groups."""
        r = self.robot
        r.set_dofs_kp(PANDA_KP)
        r.set_dofs_kv(PANDA_KV)
        r.set_dofs_force_range(-PANDA_FORCE, PANDA_FORCE)
        self.hand = r.get_link("hand")
        self._arm = np.arange(ARM_DOFS)
        self._fingers = np.arange(ARM_DOFS, ARM_DOFS + 2)

    def _add_object(self, o: ObjectSpec) -> Any:
        gs = self._gs
        pos, quat = o.pose.pos, tuple(o.pose.quat())
        if o.shape == "box":
            morph = gs.morphs.Box(size=o.size, pos=pos, quat=quat, fixed=o.fixed)
            volume = float(np.prod(o.size))
        elif o.shape == "sphere":
            morph = gs.morphs.Sphere(radius=o.size[0], pos=pos, quat=quat, fixed=o.fixed)
            volume = 4 / 3 * np.pi * o.size[0] ** 3
        elif o.shape == "cylinder":
            morph = gs.morphs.Cylinder(radius=o.size[0], height=o.size[1], pos=pos, quat=quat, fixed=o.fixed)
            volume = np.pi * o.size[0] ** 2 * o.size[1]
        else:
            from scenes.splat.sample import load_mesh

            assert o.mesh is not None  # ObjectSpec requires a file for shape "mesh"
            mesh = load_mesh(o.mesh, o.size[0])
            volume = abs(float(mesh.volume)) if mesh.is_volume else float(np.prod(mesh.extents))
            morph = gs.morphs.Mesh(file=o.mesh, scale=o.size[0], pos=pos, quat=quat, fixed=o.fixed)
        return self.scene.add_entity(
            morph,
            material=gs.materials.Rigid(rho=o.mass / max(volume, 1e-9), friction=o.friction),
            surface=gs.surfaces.Default(color=o.color),
        )

    def _solve_home(self) -> np.ndarray:
        q = _np(self.robot.get_dofs_position()).astype(np.float64)
        q[:ARM_DOFS] = PANDA_READY
        self.robot.set_qpos(q)
        target = np.asarray(self.spec.robot.init_ee_pos, dtype=np.float64)
        q = self._ik(target, init_qpos=q)
        q[ARM_DOFS:] = self.spec.robot.init_gripper * self.spec.control.gripper_max_width
        return q

    def _ik(self, tcp_target: np.ndarray, init_qpos: np.ndarray | None = None) -> np.ndarray:
        hand_pos = tcp_target - self._R_ee @ np.array([0.0, 0.0, TCP_OFFSET])
        q = self.robot.inverse_kinematics(
            link=self.hand,
            pos=hand_pos,
            quat=np.asarray(self.spec.control.ee_quat),
            init_qpos=init_qpos,
            max_samples=4,
            seed=0,
        )
        return _np(q).astype(np.float64)

    # ---------------------------------------------------------------- variants
    def set_variant(self, spec: SceneSpec) -> None:
        """Re-dress the built scene as `spec`, a variant of the spec it was built from: object and
        table colours, friction, mass, pose ranges, lights and camera poses may differ; anything
        structural (shapes, sizes, names, resolutions, physics, control) may not. Every variable
        field is set, so nothing of an earlier variant leaks into the next episode."""
        from scenes.randomization import variable_fields

        if variable_fields(spec) != variable_fields(self.built_spec):
            raise SpecError(
                f"scene {spec.name!r} is not a variant of the built scene {self.built_spec.name!r}: only colours, "
                "friction, mass, pose ranges, lights and camera poses may differ"
            )
        for o in spec.objects:
            ent = self.objects[o.name]
            ent.set_friction(o.friction)
            if not o.fixed:
                self._set_mass(o.name, o.mass)
            self._recolor(ent, o.color)
        self.table.set_friction(spec.table.friction)
        self._recolor(self.table, spec.table.color)
        for m, ent in zip(spec.markers, self.markers, strict=True):
            self._recolor(ent, m.color)
        if self.cameras:
            self._set_lights(spec)
            for c in spec.cameras:
                self.cameras[c.name].set_pose(pos=c.pos, lookat=c.lookat, up=c.up)
            genesis_compat.refresh_renderer(self.scene)
        if self._splat is not None and spec.model_dump() != self.spec.model_dump():
            self._splat = None  # rebuilt on next use with the variant's colours and cameras
        self.spec = spec
        self._force_render = True

    def _inertial_properties(self) -> dict[str, tuple[list[int], Any]]:
        solver = self.scene.sim.rigid_solver
        out = {}
        for name, ent in self.objects.items():
            idx = [lk.idx for lk in ent.links if not lk.is_fixed]
            if idx:
                out[name] = (idx, solver.get_links_mass(idx).clone())
        return out

    def _set_mass(self, name: str, mass: float) -> None:
        """Set an object's mass from its built link masses; its rotational inertia stays as built.

        Genesis cannot write a primitive's inertia, and scaling it by the mass ratio at every change
        accumulates rounding, which would make an episode depend on the variants its twin ran
        before (and so on the worker). Mass alone is set absolutely, so a variant is the same
        whatever the history.
        """
        if name not in self._built_inertia:
            return
        idx, m0 = self._built_inertia[name]
        self.scene.sim.rigid_solver.set_links_mass(m0 * (mass / float(m0.sum())), idx, scale_inertia=False)

    def _recolor(self, entity: Any, color: tuple[float, float, float]) -> None:
        if self.cameras:
            genesis_compat.recolor(self.scene, entity, color)

    def _set_lights(self, spec: SceneSpec) -> None:
        if self.scene.visualizer.context is None:
            return
        if self._light_nodes is None:  # Genesis's light nodes, in the built spec's order
            self._light_nodes = genesis_compat.light_nodes(self.scene, self.built_spec.lights)
        for li, node in zip(spec.lights, self._light_nodes, strict=True):
            genesis_compat.set_light(self.scene, node, li)

    # ---------------------------------------------------------------- World protocol
    def reset(self, seed: int, options: dict[str, Any] | None = None) -> Observation:
        """Put the scene in the initial state drawn from `seed` alone."""
        if options:
            raise UsageError(f"DigitalTwin.reset: unknown options {sorted(options)}")
        self.scene.reset()
        self.robot.set_qpos(self._home_qpos, zero_velocity=True)
        self.robot.control_dofs_position(self._home_qpos)
        self._initial_poses = sample_initial_poses(self.spec, seed)
        for name, ent in self.objects.items():
            pos, quat = self._initial_poses[name]
            ent.set_pos(pos, zero_velocity=True)
            ent.set_quat(quat, zero_velocity=True)
        self._target = self._tcp_pos()
        self._gripper_cmd = self.spec.robot.init_gripper
        self._step_count = 0
        self.seed = seed
        return self._observe()

    def step(self, action_chunk: np.ndarray) -> StepResult:
        if self._step_count is None:
            raise UsageError("DigitalTwin.step called before reset(seed)")
        chunk = as_action_chunk(action_chunk, ACTION_DIM)
        ctrl = self.spec.control
        observations, success, done = [], False, False
        for action in chunk:
            target = ctrl.next_target(self._target, self._tcp_pos(), action[:3])
            self._target = target
            self._gripper_cmd = float(np.clip(action[3], 0.0, 1.0))
            q = self._ik(target, init_qpos=_np(self.robot.get_qpos()).astype(np.float64))
            self.robot.control_dofs_position(q[:ARM_DOFS], self._arm)
            width = self._gripper_cmd * ctrl.gripper_max_width
            self.robot.control_dofs_position(np.array([width, width]), self._fingers)
            for _ in range(self.spec.physics_steps_per_control()):
                self.scene.step()
            self._step_count += 1
            obs = self._observe()
            observations.append(obs)
            success = self.success()
            done = success or self._step_count >= self.spec.task.max_steps
            if done:
                break
        info = {
            "success": success,
            "truncated": done and not success,
            "step": self._step_count,
            "object_poses": {
                n: {"pos": p.tolist(), "quat": q.tolist()} for n, (p, q) in self.object_poses().items()
            },
        }
        return StepResult(observations=observations, done=done, info=info)

    def replay(self, seed: int, actions: np.ndarray) -> bool:
        """Open loop: reset to `seed` and step the recorded `actions` [T, A] as one chunk (the twin stops at
        success or the episode's end); whether the task was solved. No actions means no steps: a failure."""
        self.reset(seed)
        return len(actions) > 0 and bool(self.step(actions).info["success"])

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension action limits: ee deltas beyond max_delta are scaled down, gripper in [0, 1]."""
        m = self.spec.control.max_delta
        return np.array([-m, -m, -m, 0.0], np.float32), np.array([m, m, m, 1.0], np.float32)

    # ---------------------------------------------------------------- state
    def _tcp_pos(self) -> np.ndarray:
        hand_pos = _np(self.hand.get_pos()).astype(np.float64)
        hand_R = quat_to_rot(_np(self.hand.get_quat()).astype(np.float64))
        return hand_pos + hand_R @ np.array([0.0, 0.0, TCP_OFFSET])

    def object_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            n: (_np(e.get_pos()).astype(np.float64), _np(e.get_quat()).astype(np.float64))
            for n, e in self.objects.items()
        }

    def success(self) -> bool:
        from scenes.predicates import PREDICATES

        s = self.spec.task.success
        if s is None:
            return False
        return PREDICATES.get(s.name).fn(s.typed_params(), self.object_poses(), self._initial_poses)

    def proprio(self) -> np.ndarray:
        q = _np(self.robot.get_qpos()).astype(np.float32)
        return np.concatenate([self._tcp_pos().astype(np.float32), [q[7] + q[8]], q[:ARM_DOFS]]).astype(
            np.float32
        )

    def environment_state(self) -> np.ndarray:
        """float32 [7 * n_objects]: per object pos xyz + quat wxyz, in spec order."""
        poses = self.object_poses()
        return np.concatenate([np.concatenate(poses[o.name]) for o in self.spec.objects]).astype(np.float32)

    @contextmanager
    def rendering(self, enabled: bool) -> Iterator[None]:
        """Temporarily switch camera rendering on or off (physics is unaffected)."""
        before = self.render_enabled
        self.render_enabled = enabled and bool(self.cameras)
        try:
            yield
        finally:
            self.render_enabled = before

    @property
    def splat_renderer(self) -> SplatTwinRenderer:
        """The Gaussian-splat renderer bound to this twin's bodies (built on first use)."""
        if self._splat is None:
            from scenes.splat.twin_renderer import SplatTwinRenderer

            o = self.spec.splat
            self._splat = SplatTwinRenderer(
                self, spacing=o.spacing, table_spacing=o.table_spacing, backend=o.backend
            )
        return self._splat

    def render(self, renderer: str | None = None) -> dict[str, np.ndarray]:
        """Camera name -> uint8 [H, W, 3] of the current state, from `renderer` (genesis | splat;
        default: the spec's choice)."""
        if (renderer or self.renderer) == "splat":
            return self.splat_renderer.images()
        return self.render_genesis()

    def camera_specs(self) -> list[CameraSpec]:
        """The scene's cameras posed in the world at the current state (a wrist camera where its link is)."""
        hand = None
        if any(c.attach for c in self.spec.cameras):
            hand = (_np(self.hand.get_pos()).astype(np.float64), _np(self.hand.get_quat()).astype(np.float64))
        return [c.in_world(*hand) if c.attach and hand else c for c in self.spec.cameras]

    def render_genesis(self, segmentation: bool = False) -> dict[str, Any]:
        """Genesis's own renderer; with `segmentation`, name -> (rgb, link-level segmentation ids)."""
        out = {}
        force, self._force_render = self._force_render, False
        posed = {c.name: c for c in self.camera_specs()}
        for name, cam in self.cameras.items():
            mounted = self.spec.camera(name).attach is not None
            if mounted:  # a mounted camera moves with its link
                c = posed[name]
                cam.set_pose(pos=c.pos, lookat=c.lookat, up=c.up)
            rgb, _, seg, _ = cam.render(
                rgb=True, depth=False, segmentation=segmentation, normal=False, force_render=force or mounted
            )
            img = np.ascontiguousarray(_np(rgb).astype(np.uint8))
            out[name] = (img, _np(seg)) if segmentation else img
        return out

    def set_state(
        self,
        state: np.ndarray,
        environment_state: np.ndarray,
        seed: int = 0,
        *,
        previous: tuple[np.ndarray, np.ndarray] | None = None,
        target: np.ndarray | None = None,
    ) -> Observation:
        """Start an episode at a given kinematic state instead of a seed's initial one: the arm and objects as
        `show` poses them, the controller holding that pose and gripper width, the task's initial poses
        those given. `step` then simulates from there (how synthetic transitions are checked against the
        physics). Velocities are zero unless `previous` (proprio, environment_state) one control step
        earlier is given: then the arm's joints and the objects move at the finite-difference velocity
        between the two. The controller's ee target is the hand's own position unless `target` (where the
        controller was driving the hand, a trajectory's history gives it) is given."""
        self.reset(seed)
        with self.rendering(False):
            obs = self.show(state, environment_state)
        if previous is not None:
            self._set_velocities(state, environment_state, *previous)
        q = _np(self.robot.get_qpos()).astype(np.float64)
        self.robot.control_dofs_position(q[:ARM_DOFS], self._arm)
        self.robot.control_dofs_position(q[ARM_DOFS : ARM_DOFS + 2], self._fingers)
        self._target = self._tcp_pos() if target is None else np.asarray(target, np.float64).copy()
        self._gripper_cmd = float(
            np.clip(float(state[3]) / (2 * self.spec.control.gripper_max_width), 0.0, 1.0)
        )
        self._initial_poses = self.object_poses()
        return obs

    def _set_velocities(
        self, state: np.ndarray, env: np.ndarray, prev_state: np.ndarray, prev_env: np.ndarray
    ) -> None:
        """Joint and object linear velocities from two kinematic states one control step apart."""
        dt = self.spec.physics.dt * self.spec.physics_steps_per_control()
        state, prev_state = np.asarray(state, np.float64), np.asarray(prev_state, np.float64)
        qd = (state[4 : 4 + ARM_DOFS] - prev_state[4 : 4 + ARM_DOFS]) / dt
        self.robot.set_dofs_velocity(qd, self._arm)
        env, prev_env = np.asarray(env, np.float64), np.asarray(prev_env, np.float64)
        for i, o in enumerate(self.spec.objects):
            ent = self.objects[o.name]
            if ent.n_dofs == 6:  # a free body: linear then angular velocity
                v = (env[7 * i : 7 * i + 3] - prev_env[7 * i : 7 * i + 3]) / dt
                ent.set_dofs_velocity(np.concatenate([v, np.zeros(3)]))

    def posed_by_ee(self, state: np.ndarray) -> np.ndarray:
        """A proprio `state` [11] (ee xyz, width, 7 joints) made to agree with itself by its end effector:
        the joints that put the hand there as the controller holds it (inverse kinematics from the state's
        own joints), and the end effector where those joints put it; the width kept. A generator that
        samples the end effector and the joints side by side (`datagen synth`) records its states so, the
        end effector being the part its actions move. Leaves the arm in that pose."""
        state = np.asarray(state, np.float64)
        if state.shape != (4 + ARM_DOFS,):
            raise UsageError(f"posed_by_ee needs a proprio state [{4 + ARM_DOFS}], got {list(state.shape)}")
        init = np.concatenate([state[4 : 4 + ARM_DOFS], [state[3] / 2, state[3] / 2]])
        q = self._ik(state[:3], init_qpos=init)
        q[ARM_DOFS:] = state[3] / 2
        self.robot.set_qpos(q, zero_velocity=True)
        return np.concatenate([self._tcp_pos(), state[3:4], q[:ARM_DOFS]]).astype(np.float32)

    def show(self, state: np.ndarray, environment_state: np.ndarray) -> Observation:
        """The observation of a kinematic state, rendered without simulating: the arm's joints and the
        gripper width from proprio `state` [11] (ee xyz, width, 7 joints), the objects' poses from
        `environment_state` [7 * n_objects]. Leaves the physics in that state; `reset` starts over."""
        state = np.asarray(state, np.float64)
        env = np.asarray(environment_state, np.float64)
        if state.shape != (4 + ARM_DOFS,) or env.shape != (7 * len(self.spec.objects),):
            raise UsageError(
                f"show needs state [{4 + ARM_DOFS}] and environment_state [{7 * len(self.spec.objects)}], "
                f"got {list(state.shape)} and {list(env.shape)}"
            )
        q = np.concatenate([state[4 : 4 + ARM_DOFS], [state[3] / 2, state[3] / 2]])
        self.robot.set_qpos(q, zero_velocity=True)
        for i, o in enumerate(self.spec.objects):
            ent = self.objects[o.name]
            ent.set_pos(env[7 * i : 7 * i + 3], zero_velocity=True)
            ent.set_quat(env[7 * i + 3 : 7 * i + 7], zero_velocity=True)
        self._force_render = True
        return Observation(
            images=self.render() if self.render_enabled else {},
            state=state.astype(np.float32),
            task=self.spec.task.instruction,
            environment_state=env.astype(np.float32),
        )

    def _observe(self) -> Observation:
        return Observation(
            images=self.render() if self.render_enabled else {},
            state=self.proprio(),
            task=self.spec.task.instruction,
            environment_state=self.environment_state(),
            timestamp=(self._step_count or 0) / self.spec.control.rate_hz,
        )


def preview_images(twin: DigitalTwin, seed: int, splat: bool = True) -> dict[str, np.ndarray]:
    """Camera name -> the Genesis render and (with `splat`) the splat render of the scene reset at `seed`,
    side by side: what `dreamtwin scenes preview` and the scene editor show."""
    twin.reset(seed=seed)
    genesis_imgs = twin.render("genesis")
    splat_imgs = twin.render("splat") if splat else {}
    return {
        cam.name: np.concatenate([genesis_imgs[cam.name]] + ([splat_imgs[cam.name]] if splat else []), axis=1)
        for cam in twin.spec.cameras
    }
