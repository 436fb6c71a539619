"""Robots behind LeRobot's interface, as worlds: faithful wrapping, safety limits, watchdog, e-stop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from common.errors import UsageError
from policy_eval.robots import Robot, RobotWorld, SafetyLimits

pytestmark = pytest.mark.sim


@pytest.fixture()
def robot(push_twin, push_spec):
    from policy_eval.robots.twin import TwinRobot

    r = TwinRobot(push_twin)
    yield r
    push_twin.set_variant(push_spec)


def _world(robot, spec, **kw):
    kw.setdefault("realtime", False)
    kw.setdefault("limits", SafetyLimits(deadline_s=None))
    return RobotWorld(
        robot, rate_hz=spec.control.rate_hz, max_steps=spec.task.max_steps, task=spec.task.instruction, **kw
    )


def test_twin_robot_has_lerobots_interface(robot, push_spec):
    assert isinstance(robot, Robot)
    # features are valid while disconnected
    assert list(robot.action_features) == ["ee.dx", "ee.dy", "ee.dz", "gripper.open"]
    assert robot.observation_features["side"] == (128, 128, 3) and robot.observation_features["ee.z"] is float
    assert not robot.is_connected
    with pytest.raises(UsageError, match="not connected"):
        robot.get_observation()
    with robot:
        assert robot.is_connected and robot.is_calibrated
        robot.reset_scene(3)
        obs = robot.get_observation()
        assert obs["side"].shape == (128, 128, 3) and isinstance(obs["ee.x"], float)
        sent = robot.send_action({"ee.dx": 0.3, "ee.dy": 0.0, "ee.dz": 0.0, "gripper.open": 2.0})
        # the action actually sent, after the robot's own clipping
        assert sent["ee.dx"] == pytest.approx(push_spec.control.max_delta) and sent["gripper.open"] == 1.0
    assert not robot.is_connected


def test_robot_world_gives_the_twins_episode(robot, push_twin, push_spec):
    """With limits that never bind, a policy on the twin behind the Robot interface acts as on the twin."""
    from policy_eval.policies import make_policy
    from policy_eval.runner import rollout

    wide = SafetyLimits(
        workspace_low=(-2, -2, -2), workspace_high=(2, 2, 2), max_step_m=1, max_speed_m_s=100, deadline_s=None
    )
    direct = rollout(push_twin, make_policy("image_mild", push_spec, 0), 5)
    world = _world(robot, push_spec, limits=wide)
    wrapped = rollout(world, make_policy("image_mild", push_spec, 0), 5)
    np.testing.assert_array_equal(direct.actions(), wrapped.actions())
    assert direct.success == wrapped.success and direct.length == wrapped.length
    assert all(not st.info.get("interventions") for st in wrapped.steps)
    world.close()


class _Sleepy:
    """image_mild, except that its `at`-th decision takes `seconds`."""

    def __init__(self, spec, at, seconds):
        from policy_eval.policies import make_policy

        self.inner, self.at, self.seconds, self.calls = make_policy("image_mild", spec, 0), at, seconds, 0

    def reset(self, seed=None):
        self.inner.reset(seed)
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        if self.calls == self.at:
            time.sleep(self.seconds)
        return self.inner.act(obs)


def test_watchdog_stops_a_policy_that_misses_the_deadline(push_twin, push_spec):
    from policy_eval.evaluate import robot_summary
    from policy_eval.robots.twin import TwinRobot
    from policy_eval.runner import rollout

    robot = TwinRobot(push_twin, latency_s=0.1)
    world = _world(robot, push_spec, realtime=True, limits=SafetyLimits(deadline_s=0.4))
    ep = rollout(world, _Sleepy(push_spec, at=4, seconds=0.8), 2)
    summary = robot_summary(ep)
    assert summary["stopped"].startswith("watchdog: no action within 0.4 s")
    assert not ep.success and ep.length == 4  # three actions sent, the fourth decision came too late
    # the robot was told to hold (zero motion) from the watchdog's thread, and nothing else after it
    assert robot.sent[-1] == robot.hold_action() and len(robot.sent) == 4
    lat = [st.info["latency_s"] for st in ep.steps if "latency_s" in st.info]
    assert lat[-1] >= 0.8 and max(lat[:-1]) < 0.4
    assert summary["policy_latency_ms"]["max"] >= 800
    world.close()


def test_safety_limits_clip_refuse_and_stop(robot, push_spec):
    world = _world(robot, push_spec, limits=SafetyLimits(max_step_m=0.01, deadline_s=None))
    world.reset(0)
    r = world.step(np.array([[0.03, 0.0, 0.0, 0.5]], np.float32))
    assert r.info["interventions"][0]["what"].startswith("step capped: 0.0300 m -> 0.0100 m")
    assert robot.sent[-1]["ee.dx"] == pytest.approx(0.01)
    r = world.step(np.array([[np.nan, 0.0, 0.0, 0.5]], np.float32))
    assert r.done and r.info["stopped"] == "refused: NaN or inf in the action"
    assert robot.sent[-1] == robot.hold_action()
    # a target outside the workspace box is pulled back to its face
    world.reset(0)
    z = world._current()["ee.z"]
    world.limits = SafetyLimits(workspace_high=(0.75, 0.4, z + 0.01), deadline_s=None)
    r = world.step(np.array([[0.0, 0.0, 0.03, 0.5]], np.float32))
    assert r.info["interventions"][0]["what"] == "workspace: target clipped on z"
    assert robot.sent[-1]["ee.dz"] == pytest.approx(0.01, abs=1e-6)
    # on_violation: stop ends the episode at the first intervention
    world = _world(
        robot, push_spec, limits=SafetyLimits(max_step_m=0.01, on_violation="stop", deadline_s=None)
    )
    world.reset(0)
    r = world.step(np.array([[0.03, 0.0, 0.0, 0.5]], np.float32))
    assert r.done and r.info["stopped"].startswith("safety limit: step capped")


def test_estop_from_another_thread(robot, push_spec):
    world = _world(robot, push_spec)
    world.reset(1)
    threading.Thread(target=world.estop).start()
    time.sleep(0.2)
    r = world.step(np.zeros((3, 4), np.float32))
    assert r.done and r.info["stopped"] == "e-stop" and robot.sent[-1] == robot.hold_action()
    flag = {"n": 0}

    def check():
        flag["n"] += 1
        return flag["n"] > 2

    world = _world(robot, push_spec, estop_check=check)
    world.reset(1)
    r = world.step(np.zeros((5, 4), np.float32))
    assert r.done and r.info["stopped"] == "e-stop" and r.info["step"] == 2
