"""Robots behind LeRobot's `Robot` interface (`Robot`), as worlds with safety limits (`RobotWorld`), and
their adapters: `TwinRobot` (the digital twin as a stand-in arm)."""

from policy_eval.robots.base import Robot, RobotWorld, SafetyLimits

__all__ = ["Robot", "RobotWorld", "SafetyLimits"]
