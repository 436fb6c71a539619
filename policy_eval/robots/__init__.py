"""Robots behind LeRobot's `Robot` interface (`Robot`), as worlds with safety limits (`RobotWorld`,
`SafetyLimits` for tool-centre-point deltas, `JointLimits` for joint-position targets), and their adapters:
`twin.TwinRobot` (the digital twin as a stand-in arm), `replay.ReplayRobot` (recorded episodes played back),
`lerobot.LeRobotRobot` (a robot from the optional `lerobot` package)."""

from policy_eval.robots.base import JointLimits, Robot, RobotWorld, SafetyLimits

__all__ = ["JointLimits", "Robot", "RobotWorld", "SafetyLimits"]
