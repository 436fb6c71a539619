"""Failure events fire on hand-made state sequences, at the step where they first hold, and not otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from policy_eval.events import events_from_states, failure_events
from scenes.spec import SceneSpec

CUBE0 = np.array([0.50, -0.08, 0.025])
QUAT = np.array([1.0, 0, 0, 0])


def _two_objects(spec: SceneSpec) -> SceneSpec:
    d = spec.model_dump()
    d["objects"].append({**d["objects"][0], "name": "other", "pose": {"pos": (0.35, 0.1, 0.025)}})
    return SceneSpec.model_validate(d)


def _run(
    spec, ee: list, cube: list, other: list | None = None, width: float = 0.0, success=False, quats=None
):
    """ee [T+1, 3], cube positions [T+1, 3] (and optionally a second object's) -> events."""
    T = len(ee)
    proprio = np.zeros((T, 11))
    proprio[:, :3] = ee
    proprio[:, 3] = width
    objs = [cube] + ([other] if other is not None else [])
    env = np.concatenate(
        [np.concatenate([np.asarray(o), np.tile(QUAT, (T, 1)) if quats is None else quats], 1) for o in objs],
        1,
    )
    return events_from_states(spec, proprio, env, success)


def _line(a, b, n):
    return np.linspace(a, b, n)


def test_a_clean_push_into_the_target(push_spec):
    ee = _line([0.5, -0.2, 0.03], [0.5, 0.10, 0.03], 21)
    cube = np.concatenate([np.tile(CUBE0, (6, 1)), _line(CUBE0, [0.5, 0.15, 0.025], 15)])
    ev = _run(push_spec, ee, cube, success=True)
    assert ev == {"OBJECT_STARTED_MOVING": 7}  # index 6 is still the start of the line


def test_never_touched_and_timed_out_near_goal(push_spec):
    T = push_spec.task.max_steps + 1
    ev = _run(push_spec, np.tile([0.4, 0.0, 0.25], (T, 1)), np.tile(CUBE0, (T, 1)))
    assert ev == {"NEVER_TOUCHED_OBJECT": T - 1}
    near = np.concatenate([np.tile(CUBE0, (5, 1)), _line(CUBE0, [0.5, 0.09, 0.025], T - 5)])  # 1 cm short
    ev = _run(push_spec, np.tile([0.4, 0.0, 0.25], (T, 1)), near)
    assert ev["TIMED_OUT_NEAR_GOAL"] == T - 1 and "NEVER_TOUCHED_OBJECT" not in ev


def test_pushed_past_the_target(push_spec):
    cube = np.concatenate([np.tile(CUBE0, (3, 1)), _line(CUBE0, [0.5, 0.30, 0.025], 20)])
    ev = _run(push_spec, np.tile([0.5, 0.0, 0.03], (23, 1)), cube)
    inside_then_out = np.flatnonzero(cube[:, 1] > 0.20)[0]  # the target's far edge is y = 0.20
    assert ev["PUSHED_PAST_TARGET"] == inside_then_out
    short = np.concatenate([np.tile(CUBE0, (3, 1)), _line(CUBE0, [0.5, 0.05, 0.025], 20)])
    assert "PUSHED_PAST_TARGET" not in _run(push_spec, np.tile([0.5, 0.0, 0.03], (23, 1)), short)


def test_table_hit_workspace_out_of_scene_and_tipping(push_spec):
    ee = np.tile([0.5, 0.0, 0.1], (10, 1))
    ee[4, 2] = 0.001
    ee[7, 0] = 0.95
    cube = np.tile(CUBE0, (10, 1))
    cube[8:] = [1.2, 0.0, -0.3]  # fell off the table
    tilt = np.tile(QUAT, (10, 1))
    tilt[6:] = [np.cos(np.pi / 4), np.sin(np.pi / 4), 0, 0]  # 90 degrees about x
    ev = _run(push_spec, ee, cube, quats=tilt)
    assert ev["GRIPPER_HIT_TABLE"] == 4
    assert ev["OBJECT_TIPPED_OVER"] == 6
    assert ev["LEFT_WORKSPACE"] == 7
    assert ev["OBJECT_OUT_OF_SCENE"] == 8
    assert list(ev) == sorted(ev, key=ev.get)  # in the order they happened


def test_other_objects_bumped_moved_grabbed(push_spec):
    spec = _two_objects(push_spec)
    other0 = np.array([0.35, 0.1, 0.025])
    other = np.tile(other0, (12, 1))
    other[3:] += [0.02, 0, 0]  # bumped 2 cm
    other[6:] += [0.05, 0, 0]  # moved 7 cm
    other[9:, 2] += 0.05  # raised 5 cm
    ee = np.tile([0.6, 0.3, 0.2], (12, 1))
    ee[2] = [0.35, 0.1, 0.04]  # fingertips at the other object
    cube = np.tile(CUBE0, (12, 1))
    cube[10:, 2] += 0.05
    ev = _run(spec, ee, cube, other)
    assert ev["GRIPPER_HIT_OBJECT"] == 2
    assert ev["OBJECT_BUMPED"] == 3 and ev["OBJECT_MOVED"] == 6
    assert ev["WRONG_OBJECT_GRABBED"] == 9 and ev["MULTIPLE_OBJECTS_GRABBED"] == 10
    assert "GRIPPER_HIT_OBJECT" not in _run(
        spec, np.tile([0.6, 0.3, 0.2], (12, 1)), cube, np.tile(other0, (12, 1))
    )


def _lift_episode(spec, cube_z, tcp_z, width):
    target = spec.task.success.params["object"]
    p0 = np.asarray(spec.object(target).pose.pos)
    T = len(cube_z)
    objs = []
    for o in spec.objects:
        traj = np.tile(o.pose.pos, (T, 1)).astype(float)
        if o.name == target:
            traj[:, 2] = cube_z
            traj[:, :2] = p0[:2]
        objs.append(traj)
    proprio = np.zeros((T, 11))
    proprio[:, :2] = p0[:2]
    proprio[:, 2] = tcp_z
    proprio[:, 3] = width
    env = np.concatenate([np.concatenate([o, np.tile(QUAT, (T, 1))], 1) for o in objs], 1)
    return events_from_states(spec, proprio, env, False)


def test_dropped_placed_released_and_closed_on_nothing(lift_spec):
    g = lift_spec.control.gripper_max_width
    z0 = 0.025
    up = [z0, z0, z0, z0 + 0.03, z0 + 0.06, z0 + 0.06]
    hand = [0.2, 0.1, 0.015, 0.045, 0.075, 0.075]
    held = [g, g, 0.6 * g, 0.6 * g, 0.6 * g, 0.6 * g]
    # slips out of the closed gripper at step 6
    ev = _lift_episode(lift_spec, up + [z0, z0], hand + [0.075, 0.075], held + [0.6 * g, 0.6 * g])
    assert ev["TARGET_OBJECT_DROPPED"] == 6
    # put down with the hand (a place), then let go by an open gripper: no drop
    ev = _lift_episode(
        lift_spec,
        up + [z0 + 0.03, z0, z0, z0],
        hand + [0.045, 0.015, 0.015, 0.1],
        held + [0.6 * g, 0.6 * g, g, g],
    )
    assert "TARGET_OBJECT_DROPPED" not in ev and "GRIPPER_FULLY_CLOSED" not in ev
    # opened at reset, closed on nothing
    ev = _lift_episode(lift_spec, [z0] * 6, [0.2, 0.1, 0.015, 0.015, 0.05, 0.1], [g, g, g, 0.3 * g, 0.0, 0.0])
    assert ev["GRIPPER_FULLY_CLOSED"] == 4 and "TARGET_OBJECT_DROPPED" not in ev


@pytest.mark.sim
def test_events_of_twin_episodes(push_twin, push_spec):
    """In the twin: the expert's episode moves the cube and succeeds; a policy that never moves touches nothing."""
    from policy_eval.policies import make_policy
    from policy_eval.runner import rollout

    push_twin.set_variant(push_spec)
    ep = rollout(push_twin, make_policy("expert", push_spec, 0), 3, privileged=True)
    ev = failure_events(push_spec, ep)
    assert ep.success and "OBJECT_STARTED_MOVING" in ev and "NEVER_TOUCHED_OBJECT" not in ev

    class Still:
        def reset(self, seed=None):
            pass

        def act(self, obs):
            return np.zeros((1, 4), np.float32)

    ev = failure_events(push_spec, rollout(push_twin, Still(), 3))
    assert "NEVER_TOUCHED_OBJECT" in ev and "OBJECT_STARTED_MOVING" not in ev
