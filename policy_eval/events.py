"""Failure events of an episode, computed from its state at every step (the twin's simulator state, or an
imagined world's state read-out).

    events = failure_events(spec, episode)      # {"OBJECT_STARTED_MOVING": 12, "PUSHED_PAST_TARGET": 31}

Each event maps to the first step (0 = the initial observation) at which it held. RoboLab's events that
apply to a table-top cell with movable objects, plus our own:

- OBJECT_STARTED_MOVING: the task's object left its initial position (by `moved_m`).
- OBJECT_BUMPED / OBJECT_MOVED: another object was displaced by `moved_m` / by `far_m`.
- OBJECT_OUT_OF_SCENE: an object left the table top (or fell below it).
- OBJECT_TIPPED_OVER: an object's up axis turned more than `tipped_deg` from its initial one.
- GRIPPER_HIT_TABLE: the fingertips reached the table surface (`table_m`).
- GRIPPER_HIT_OBJECT: the fingertips came within contact distance of an object other than the task's.
- GRIPPER_FULLY_CLOSED: the gripper, open at reset, closed on nothing.
- WRONG_OBJECT_GRABBED / MULTIPLE_OBJECTS_GRABBED / TARGET_OBJECT_DROPPED: objects raised by `lift_m`
  other than the task's, two at once, and the task's object falling out of a gripper that did not open.
- NEVER_TOUCHED_OBJECT (ours): the task's object never moved.
- PUSHED_PAST_TARGET (ours): the task's object reached its target region and ended beyond it.
- LEFT_WORKSPACE (ours): the fingertips left the controller's workspace.
- TIMED_OUT_NEAR_GOAL (ours): the episode failed at its step limit within `near_m` of success.

Proprio is `[ee_x, ee_y, ee_z, gripper_width, joints...]` and the environment state 7 numbers
(position, quaternion wxyz) per object in the scene's order, as the twin reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from common.types import Episode
from scenes.spec import SceneSpec

EVENTS = [
    "OBJECT_STARTED_MOVING",
    "OBJECT_BUMPED",
    "OBJECT_MOVED",
    "OBJECT_OUT_OF_SCENE",
    "OBJECT_TIPPED_OVER",
    "GRIPPER_HIT_TABLE",
    "GRIPPER_HIT_OBJECT",
    "GRIPPER_FULLY_CLOSED",
    "WRONG_OBJECT_GRABBED",
    "MULTIPLE_OBJECTS_GRABBED",
    "TARGET_OBJECT_DROPPED",
    "NEVER_TOUCHED_OBJECT",
    "PUSHED_PAST_TARGET",
    "LEFT_WORKSPACE",
    "TIMED_OUT_NEAR_GOAL",
]


@dataclass(frozen=True)
class Thresholds:
    moved_m: float = 0.01
    far_m: float = 0.05
    tipped_deg: float = 45.0
    table_m: float = 0.004
    contact_m: float = 0.012  # finger half-width beyond an object's half-extent
    lift_m: float = 0.03
    near_m: float = 0.02
    closed_frac: float = 0.1


def _up_axis(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / max(float(np.linalg.norm(q)), 1e-12)
    return np.array([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])


def task_object(spec: SceneSpec) -> str | None:
    """The object the task's success predicate is about (else the first movable object)."""
    if spec.task.success is not None and "object" in spec.task.success.params:
        return str(spec.task.success.params["object"])
    return next((o.name for o in spec.objects if not o.fixed), None)


def failure_events(spec: SceneSpec, episode: Episode, th: Thresholds = Thresholds()) -> dict[str, int]:
    """The events of `episode` (in `spec`'s scene) with the first step at which each held."""
    obs = [episode.initial_observation] + [s.observation for s in episode.steps]
    if any(o.environment_state is None for o in obs):
        return {}  # a world without object state (an imagined world without a read-out)
    proprio = np.stack([np.asarray(o.state, np.float64) for o in obs])
    env = np.stack([np.asarray(o.environment_state, np.float64) for o in obs])
    return events_from_states(spec, proprio, env, episode.success, th)


def events_from_states(
    spec: SceneSpec, proprio: np.ndarray, env: np.ndarray, success: bool, th: Thresholds = Thresholds()
) -> dict[str, int]:
    """Events from proprio [T+1, D] and environment states [T+1, 7 * objects] (index 0: at reset)."""
    names = [o.name for o in spec.objects]
    n = len(names)
    if env.shape[1] < 7 * n:
        return {}
    pos = env[:, : 7 * n].reshape(len(env), n, 7)[:, :, :3]
    quat = env[:, : 7 * n].reshape(len(env), n, 7)[:, :, 3:]
    tcp, width = proprio[:, :3], proprio[:, 3]
    target = task_object(spec)
    ti = names.index(target) if target in names else None
    out: dict[str, int] = {}

    def fire(name: str, mask: Any) -> None:
        hits = np.flatnonzero(np.asarray(mask))
        if hits.size and name not in out:
            out[name] = int(hits[0])

    disp = np.linalg.norm(pos[:, :, :2] - pos[:1, :, :2], axis=-1)  # [T+1, n]
    rise = pos[:, :, 2] - pos[:1, :, 2]
    half = np.array([max(o.size[:2]) / 2 if o.shape == "box" else o.size[0] for o in spec.objects])
    movable = np.array([not o.fixed for o in spec.objects])
    others = [i for i in range(n) if i != ti and movable[i]]

    if ti is not None:
        fire("OBJECT_STARTED_MOVING", disp[:, ti] > th.moved_m)
        if not (disp[:, ti] > th.moved_m).any():
            out["NEVER_TOUCHED_OBJECT"] = len(env) - 1
        # dropped: while up, the object fell away from a gripper that was not opened (a placed object
        # goes down with the hand; a released one is let go by an open gripper)
        up = np.r_[False, rise[:-1, ti] > th.lift_m]
        fall = np.r_[0.0, -np.diff(pos[:, ti, 2])] - np.r_[0.0, -np.diff(tcp[:, 2])]
        gmax = spec.control.gripper_max_width
        fire("TARGET_OBJECT_DROPPED", up & (fall > th.moved_m) & (width < 0.9 * gmax))
    for i in others:
        fire("OBJECT_BUMPED", disp[:, i] > th.moved_m)
        fire("OBJECT_MOVED", disp[:, i] > th.far_m)
        fire("WRONG_OBJECT_GRABBED", rise[:, i] > th.lift_m)
        near = np.linalg.norm(tcp[:, :2] - pos[:, i, :2], axis=-1) < half[i] + th.contact_m
        low = tcp[:, 2] < pos[:, i, 2] + half[i] + th.contact_m
        fire("GRIPPER_HIT_OBJECT", near & low)
    fire("MULTIPLE_OBJECTS_GRABBED", (rise[:, movable] > th.lift_m).sum(axis=1) >= 2)

    t = spec.table
    lo = np.asarray(t.center_xy) - np.asarray(t.size[:2]) / 2
    hi = np.asarray(t.center_xy) + np.asarray(t.size[:2]) / 2
    outside = ((pos[:, :, :2] < lo) | (pos[:, :, :2] > hi)).any(-1) | (pos[:, :, 2] < -0.02)
    fire("OBJECT_OUT_OF_SCENE", outside[:, movable].any(1))
    ups = np.stack([[_up_axis(q) for q in row] for row in quat])  # [T+1, n, 3]
    cos = np.clip((ups * ups[:1]).sum(-1), -1, 1)
    fire("OBJECT_TIPPED_OVER", (np.degrees(np.arccos(cos)) > th.tipped_deg)[:, movable].any(1))

    fire("GRIPPER_HIT_TABLE", tcp[:, 2] < th.table_m)
    if width[0] > 0.5 * gmax:  # open at reset: closing fully means it closed on nothing
        fire("GRIPPER_FULLY_CLOSED", width < th.closed_frac * gmax)
    wl, wh = np.asarray(spec.control.workspace_low), np.asarray(spec.control.workspace_high)
    fire("LEFT_WORKSPACE", ((tcp < wl - 0.01) | (tcp > wh + 0.01)).any(1))

    succ = spec.task.success
    near = False
    if succ is not None:
        from scenes.predicates import PREDICATES

        poses = lambda t: {o: (pos[t, i], quat[t, i]) for i, o in enumerate(names)}  # noqa: E731
        margin = PREDICATES.get(succ.name).margin(succ.typed_params(), poses(-1), poses(0))
        near = margin > -th.near_m
    if succ is not None and succ.name == "object_in_region" and ti is not None:
        center = np.asarray(succ.params["center"], np.float64)
        size = np.asarray(succ.params["size"], np.float64)
        inside = np.min(size / 2 - np.abs(pos[:, ti, :2] - center), axis=-1)
        reached = np.flatnonzero(inside >= 0)
        approach = center - pos[0, ti, :2]
        if reached.size and inside[-1] < 0 and float(np.dot(pos[-1, ti, :2] - center, approach)) > 0:
            out["PUSHED_PAST_TARGET"] = int(np.flatnonzero(inside[reached[0] :] < 0)[0] + reached[0])
    if not success and len(env) - 1 >= spec.task.max_steps and near:
        out["TIMED_OUT_NEAR_GOAL"] = len(env) - 1
    return dict(sorted(out.items(), key=lambda kv: (kv[1], EVENTS.index(kv[0]))))
