"""`LeRobotRobot`: a robot from the `lerobot` package (any `lerobot.robots.Robot`: SO-100/101, Koch, ...)
behind `RobotWorld`. LeRobot is an optional extra (`pip install lerobot`); nothing else needs it, and an
object with LeRobot's interface can be wrapped without it (tests use a fake).

LeRobot's arms take joint-position targets (`<joint>.pos`) and report the same keys, so the hold action is
the present position of every joint. LeRobot robots cannot reset a table or judge a task: `RobotWorld` asks
`reset_fn` (a person) to reset, and `dreamtwin record` asks the person for each outcome.
"""

from __future__ import annotations

from typing import Any

from common.errors import UsageError
from policy_eval.robots.base import Robot


class LeRobotRobot:
    """Wraps `robot` (LeRobot's `Robot` interface) and adds `hold_action()`."""

    def __init__(self, robot: Any) -> None:
        if not isinstance(robot, Robot):
            raise UsageError(f"{type(robot).__name__} does not implement LeRobot's Robot interface")
        missing = [k for k in robot.action_features if k not in robot.observation_features]
        if missing:
            raise UsageError(
                f"{robot.name}: actions {missing} have no matching observation, so the robot cannot be held "
                "where it is; LeRobotRobot drives position-controlled arms (<joint>.pos in both)"
            )
        self.robot, self.name = robot, f"lerobot:{robot.name}"

    @classmethod
    def from_config(cls, config: Any) -> LeRobotRobot:
        """A real robot from a `lerobot` robot config (e.g. `SO101FollowerConfig(port=...)`)."""
        try:
            from lerobot.robots import make_robot_from_config
        except ImportError:
            raise UsageError(
                "LeRobotRobot.from_config needs the lerobot package: pip install lerobot"
            ) from None
        return cls(make_robot_from_config(config))

    @property
    def observation_features(self) -> dict[str, Any]:
        return dict(self.robot.observation_features)

    @property
    def action_features(self) -> dict[str, Any]:
        return dict(self.robot.action_features)

    @property
    def is_connected(self) -> bool:
        return bool(self.robot.is_connected)

    @property
    def is_calibrated(self) -> bool:
        return bool(self.robot.is_calibrated)

    def connect(self, calibrate: bool = True) -> None:
        self.robot.connect(calibrate=calibrate)

    def calibrate(self) -> None:
        self.robot.calibrate()

    def configure(self) -> None:
        self.robot.configure()

    def get_observation(self) -> dict[str, Any]:
        return dict(self.robot.get_observation())

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        return dict(self.robot.send_action(action))

    def disconnect(self) -> None:
        self.robot.disconnect()

    def hold_action(self) -> dict[str, Any]:
        """Every joint's present position as its target."""
        obs = self.robot.get_observation()
        return {k: float(obs[k]) for k in self.robot.action_features}

    def __enter__(self) -> LeRobotRobot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.is_connected:
            self.disconnect()
