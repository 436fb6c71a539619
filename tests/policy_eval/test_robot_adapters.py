"""Robot adapters without a simulator: a LeRobot-interface arm (a fake of LeRobot's Robot) behind joint
limits and the watchdog, and recorded episodes played back."""

from __future__ import annotations

import time

import numpy as np
import pytest

from common.errors import UsageError
from policy_eval.robots import JointLimits, Robot, RobotWorld
from policy_eval.robots.base import ask_outcome
from policy_eval.robots.lerobot import LeRobotRobot
from policy_eval.robots.replay import ReplayRobot
from policy_eval.runner import rollout

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


class FakeSO101:
    """LeRobot's Robot interface as `lerobot.robots.so101_follower` implements it: `<joint>.pos` readings
    and targets in [-100, 100], a `front` camera; the arm moves at most 5 units a step towards its target."""

    name = "so101_follower"

    def __init__(self) -> None:
        self.pos = np.zeros(len(JOINTS))
        self.connected = False
        self.received: list[dict[str, float]] = []

    @property
    def observation_features(self) -> dict:
        return {**{f"{j}.pos": float for j in JOINTS}, "front": (48, 64, 3)}

    @property
    def action_features(self) -> dict:
        return {f"{j}.pos": float for j in JOINTS}

    @property
    def is_connected(self) -> bool:
        return self.connected

    def connect(self, calibrate: bool = True) -> None:
        self.connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        if not self.connected:
            raise ConnectionError("not connected")
        img = np.full((48, 64, 3), int(abs(self.pos[0])) % 256, np.uint8)
        return {**{f"{j}.pos": float(p) for j, p in zip(JOINTS, self.pos, strict=True)}, "front": img}

    def send_action(self, action: dict) -> dict:
        target = np.clip([action[f"{j}.pos"] for j in JOINTS], -100, 100)
        self.pos += np.clip(target - self.pos, -5, 5)
        sent = {f"{j}.pos": float(t) for j, t in zip(JOINTS, target, strict=True)}
        self.received.append(sent)
        return sent

    def disconnect(self) -> None:
        self.connected = False


class Reach:
    """Asks every joint for +50 at once (far more than one step allows); optionally sleeps at a decision."""

    def __init__(self, sleep_at: int | None = None, seconds: float = 0.0) -> None:
        self.sleep_at, self.seconds, self.calls = sleep_at, seconds, 0

    def reset(self, seed=None):
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        if self.calls == self.sleep_at:
            time.sleep(self.seconds)
        return np.full((1, len(JOINTS)), 50.0, np.float32)


def _limits(**kw):
    names = [f"{j}.pos" for j in JOINTS]
    return JointLimits(low=dict.fromkeys(names, -90.0), high=dict.fromkeys(names, 40.0), max_step=2.0, **kw)


def _world(robot, **kw):
    kw.setdefault("limits", _limits(deadline_s=None))
    kw.setdefault("realtime", False)
    return RobotWorld(LeRobotRobot(robot), rate_hz=30, max_steps=8, reset_fn=lambda seed: None, **kw)


def test_lerobot_arm_behind_joint_limits():
    fake = FakeSO101()
    assert isinstance(fake, Robot)
    world = _world(fake)
    assert world.action_dim == 6 and world.cameras == ["front"]
    ep = rollout(world, Reach(), 0)
    assert ep.length == 8 and ep.initial_observation.images["front"].shape == (48, 64, 3)
    # every target was within 2 of the present position, never above 40
    assert all(abs(r["shoulder_pan.pos"] - 2.0 * i) <= 1e-5 for i, r in enumerate(fake.received, start=1))
    notes = [n["what"] for st in ep.steps for n in st.info.get("interventions", [])]
    assert notes.count("shoulder_pan.pos: step capped to 2") == 8


def test_lerobot_arm_held_by_the_watchdog():
    fake = FakeSO101()
    world = _world(fake, limits=_limits(deadline_s=0.2), realtime=True)
    ep = rollout(world, Reach(sleep_at=3, seconds=0.5), 0)
    assert ep.steps[-1].info["stopped"].startswith("watchdog")
    # the hold: every joint's present position as its target
    hold = fake.received[-1]
    assert hold == {f"{j}.pos": float(p) for j, p in zip(JOINTS, fake.pos, strict=True)}


def test_a_person_judges_outcomes_where_the_robot_cannot(monkeypatch):
    ep = rollout(_world(FakeSO101()), Reach(), 0)
    assert not ep.success and ep.steps[-1].info["success_known"] is False
    asked: list[tuple[int, int, str | None]] = []
    world = _world(
        FakeSO101(), outcome_fn=lambda seed, steps, stopped: asked.append((seed, steps, stopped)) or True
    )
    ep = rollout(world, Reach(), 7)
    assert ep.success and ep.length == 8 and asked == [(7, 8, None)]  # asked once, at the end
    assert ep.steps[-1].info["success_known"] is True
    # at the terminal: unclear answers are asked again; a closed stdin is a clear error
    answers = iter(["maybe", "", "Y"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert ask_outcome(3, 8, None) is True

    def closed(prompt: str) -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", closed)
    with pytest.raises(UsageError, match="seed 3: no answer"):
        ask_outcome(3, 8, "watchdog")


def test_robots_are_checked_at_the_boundary():
    class NoReset(FakeSO101):
        pass

    with pytest.raises(UsageError, match="cannot reset its scene"):
        RobotWorld(LeRobotRobot(NoReset()), rate_hz=30, max_steps=4).reset(0)

    class VelocityArm(FakeSO101):
        @property
        def action_features(self) -> dict:
            return {f"{j}.vel": float for j in JOINTS}

    with pytest.raises(UsageError, match="cannot be held where it is"):
        LeRobotRobot(VelocityArm())
    with pytest.raises(UsageError, match="no hold_action"):
        RobotWorld(FakeSO101(), rate_hz=30, max_steps=4)
    world = _world(FakeSO101())
    world.reset(0)
    r = world.step(np.full((1, 6), np.inf, np.float32))
    assert r.done and r.info["stopped"] == "refused: NaN or inf in the action"


def test_replay_robot_plays_recorded_episodes_back():
    rng = np.random.default_rng(0)
    eps = [
        {
            "frames": rng.integers(0, 255, (6, 1, 3, 8, 8), dtype=np.uint8),
            "state": rng.normal(size=(6, 3)).astype(np.float32),
            "success": np.array([False] * 5 + [k == 1]),
        }
        for k in range(2)
    ]
    robot = ReplayRobot(eps, [70, 71], ["side"], ["a0", "a1"], state_names=["ee.x", "ee.y", "ee.z"])
    world = RobotWorld(robot, rate_hz=10, max_steps=10, realtime=False)

    class Zero:
        def reset(self, seed=None):
            pass

        def act(self, obs):
            return np.zeros((1, 2), np.float32)

    from policy_eval.robots import SafetyLimits  # noqa: F401  (ee limits do not apply: two-dim actions)

    world.limits = JointLimits(low={}, high={}, max_step={}, deadline_s=None)
    ep = rollout(world, Zero(), 71)
    assert ep.success and ep.length == 5
    np.testing.assert_array_equal(
        ep.steps[2].observation.images["side"], eps[1]["frames"][3, 0].transpose(1, 2, 0)
    )
    np.testing.assert_array_equal(ep.initial_observation.state, eps[1]["state"][0])
    assert len(robot.asked) == 5
    with pytest.raises(UsageError, match="no recorded episode with seed 5"):
        world.reset(5)


def test_a_step_of_exactly_the_cap_is_no_intervention():
    from policy_eval.robots import SafetyLimits

    limits = SafetyLimits(deadline_s=None)  # 3 cm a step at 10 Hz
    here = {"ee.x": 0.5, "ee.y": 0.0, "ee.z": 0.2}
    for step in ([0.03, 0.0, 0.0], np.float32([0.018, 0.024, 0.0]), [0.0, 0.0, -0.03]):
        safe, notes = limits.filter(np.array([*step, 1.0], np.float32), here, 10.0)
        assert notes == [] and safe is not None
        np.testing.assert_array_equal(safe[:3], np.float32(step))
    safe, notes = limits.filter(np.array([0.0301, 0.0, 0.0, 1.0], np.float32), here, 10.0)
    assert notes == ["step capped: 0.0301 m -> 0.0300 m"] and safe is not None
