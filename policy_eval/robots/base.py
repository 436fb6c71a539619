"""Robots behind LeRobot's `Robot` interface, and `RobotWorld`, which makes any of them a `World` with
safety limits between the policy and the robot, real-time pacing and a watchdog.

`Robot` has the members and semantics of LeRobot's (`lerobot/robots/robot.py`): `observation_features`
and `action_features` (feature name -> `float` or a shape tuple, valid while disconnected),
`is_connected`, `connect(calibrate=True)`, `is_calibrated`, `calibrate()`, `configure()`,
`get_observation() -> dict`, `send_action(action: dict) -> dict` (the action actually sent, after the
robot's own clipping), `disconnect()`. Our adapters add `hold_action()` (the action that keeps the
robot where it is: what the watchdog and the e-stop send) and, where the robot can tell,
`reset_scene(seed)` and `success()`.

An observation dict becomes our `Observation` by feature kind: every shape feature [H, W, 3] is a camera
image, the float features in declaration order are the proprio `state`. An action chunk's rows are
sent as dicts over `action_features` in declaration order.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field, model_validator

from common.config import Strict
from common.errors import UsageError
from common.types import Observation, StepResult


@runtime_checkable
class Robot(Protocol):
    """LeRobot's `Robot` interface (see the module docstring)."""

    name: str

    @property
    def observation_features(self) -> dict[str, Any]: ...

    @property
    def action_features(self) -> dict[str, Any]: ...

    @property
    def is_connected(self) -> bool: ...

    def connect(self, calibrate: bool = True) -> None: ...

    @property
    def is_calibrated(self) -> bool: ...

    def calibrate(self) -> None: ...

    def configure(self) -> None: ...

    def get_observation(self) -> dict[str, Any]: ...

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]: ...

    def disconnect(self) -> None: ...


@runtime_checkable
class HoldingRobot(Robot, Protocol):
    """A `Robot` that can say how to keep still: what the watchdog and the e-stop send."""

    def hold_action(self) -> dict[str, Any]: ...


def camera_features(features: dict[str, Any]) -> list[str]:
    return [k for k, v in features.items() if isinstance(v, tuple) and len(v) == 3]


def float_features(features: dict[str, Any]) -> list[str]:
    return [k for k, v in features.items() if v is float]


class SafetyLimits(Strict):
    """What may reach a robot that takes tool-centre-point deltas + a gripper opening
    (`ee_delta_pos_gripper`, the twin's action space): every action is checked against these, and
    every change made or refusal is logged in the episode."""

    workspace_low: tuple[float, float, float] = (0.25, -0.4, 0.01)
    workspace_high: tuple[float, float, float] = (0.75, 0.4, 0.45)
    max_step_m: float = Field(0.03, gt=0, description="largest tool displacement asked in one control step")
    max_speed_m_s: float = Field(0.3, gt=0, description="largest tool speed asked (displacement x rate)")
    gripper_low: float = Field(0.0, ge=0, le=1)
    gripper_high: float = Field(1.0, ge=0, le=1)
    deadline_s: float | None = Field(
        0.5,
        gt=0,
        description="watchdog: stop the robot when no action arrives this long after an observation",
    )
    on_violation: Literal["clip", "stop"] = Field(
        "clip", description="clip: send the nearest safe action; stop: hold the robot and end the episode"
    )

    @model_validator(mode="after")
    def _ordered(self) -> SafetyLimits:
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high, strict=True)):
            raise ValueError("workspace_low must be below workspace_high on every axis")
        if self.gripper_low > self.gripper_high:
            raise ValueError("gripper_low must not exceed gripper_high")
        return self

    def filter(
        self, action: np.ndarray, current: dict[str, float], rate_hz: float
    ) -> tuple[np.ndarray | None, list[str]]:
        """(the safe action or None when it must be refused, what was done to it); `current`: the robot's
        latest float readings (`ee.x`, `ee.y`, `ee.z`: the tool centre point)."""
        tcp = np.array([current["ee.x"], current["ee.y"], current["ee.z"]], np.float64)
        a = np.asarray(action, np.float64)
        if a.shape != (4,):
            return None, [f"refused: action of shape {list(a.shape)}, expected [4]"]
        if not np.isfinite(a).all():
            return None, ["refused: NaN or inf in the action"]
        notes: list[str] = []
        delta = a[:3].copy()
        cap = min(self.max_step_m, self.max_speed_m_s / rate_hz)
        norm = float(np.linalg.norm(delta))
        if norm > cap * (1 + 1e-6):  # a step of exactly the cap, rounded to float32, is within it
            delta *= cap / norm
            notes.append(f"step capped: {norm:.4f} m -> {cap:.4f} m")
        target = tcp + delta
        inside = np.clip(target, self.workspace_low, self.workspace_high)
        if not np.allclose(inside, target):
            delta = inside - tcp
            axes = "".join("xyz"[i] for i in range(3) if not math.isclose(inside[i], target[i]))
            notes.append(f"workspace: target clipped on {axes}")
        grip = float(np.clip(a[3], self.gripper_low, self.gripper_high))
        if grip != a[3]:
            notes.append(f"gripper clipped: {a[3]:.3f} -> {grip:.3f}")
        return np.array([*delta, grip], np.float32), notes


class JointLimits(Strict):
    """What may reach a position-controlled robot (LeRobot arms: `<joint>.pos` targets): every target kept in
    its range and within `max_step` of the present position; the same watchdog and violation policy."""

    low: dict[str, float] = Field(description="action feature -> lowest target")
    high: dict[str, float] = Field(description="action feature -> highest target")
    max_step: float | dict[str, float] = Field(
        description="largest change of a target from the present position in one control step (per feature)"
    )
    deadline_s: float | None = Field(0.5, gt=0)
    on_violation: Literal["clip", "stop"] = "clip"

    def filter(
        self, action: np.ndarray, current: dict[str, float], rate_hz: float, names: list[str] | None = None
    ) -> tuple[np.ndarray | None, list[str]]:
        names = names or list(self.low)
        a = np.asarray(action, np.float64)
        if a.shape != (len(names),):
            return None, [f"refused: action of shape {list(a.shape)}, expected [{len(names)}]"]
        if not np.isfinite(a).all():
            return None, ["refused: NaN or inf in the action"]
        notes, out = [], a.copy()
        for i, n in enumerate(names):
            step = self.max_step if isinstance(self.max_step, float) else self.max_step.get(n)
            if n in current and step is not None:
                lo_s, hi_s = current[n] - step, current[n] + step
                if not lo_s <= out[i] <= hi_s:
                    notes.append(f"{n}: step capped to {step:g}")
                    out[i] = min(max(out[i], lo_s), hi_s)
            if n in self.low and out[i] < self.low[n]:
                notes.append(f"{n}: below {self.low[n]:g}")
                out[i] = self.low[n]
            if n in self.high and out[i] > self.high[n]:
                notes.append(f"{n}: above {self.high[n]:g}")
                out[i] = self.high[n]
        return out.astype(np.float32), notes


class RobotWorld:
    """Any `Robot` as a `World` (`eval`, `perturb`, `record` and `validate` run on it unchanged).

    Between the policy and the robot: `limits` (every action filtered, each intervention logged), a
    watchdog (when `limits.deadline_s` passes after an observation without an action, the robot gets
    its hold action from the watchdog's thread and the episode ends with the reason), an e-stop
    (`estop()` from any thread, or `estop_check` polled before every action), and real-time pacing
    (`realtime`: one action per control period of the wall clock; the clock does not stop while the
    policy thinks, and each step's policy latency is recorded). Step info carries `latency_s`,
    `interventions` and, when the episode was stopped, `stopped` (why).

    The robot's scene is reset through `robot.reset_scene(seed)` when it has one, else through
    `reset_fn(seed)` (for a real robot: a person resetting the table). Success is `outcome_fn(seed,
    steps, stopped)` at the end of the episode when given (a person's verdict: `ask_outcome`; the
    episode then runs to `max_steps` or a stop), else `robot.success()` after every step when the robot
    can judge it, else unknown (False, with `success_known` False in the info).
    """

    def __init__(
        self,
        robot: Any,
        *,
        rate_hz: float,
        max_steps: int,
        task: str = "",
        limits: SafetyLimits | JointLimits | None = None,
        realtime: bool = True,
        reset_fn: Callable[[int], None] | None = None,
        estop_check: Callable[[], bool] | None = None,
        world_id: str | None = None,
        outcome_fn: Callable[[int, int, str | None], bool] | None = None,
    ) -> None:
        if not isinstance(robot, Robot):
            raise UsageError(f"{type(robot).__name__} does not implement the Robot interface")
        if not isinstance(robot, HoldingRobot):
            raise UsageError(
                f"{type(robot).__name__} has no hold_action() (what the watchdog sends); "
                "wrap a LeRobot robot in policy_eval.robots.lerobot.LeRobotRobot"
            )
        self.robot: HoldingRobot = robot
        self.rate_hz, self.max_steps, self.task = rate_hz, max_steps, task
        self.limits = limits or SafetyLimits()
        self.realtime, self.reset_fn, self.estop_check = realtime, reset_fn, estop_check
        self.outcome_fn = outcome_fn
        self._judge = outcome_fn is None and hasattr(robot, "success")
        self._seed = 0
        self.world_id = world_id or f"robot:{getattr(robot, 'name', type(robot).__name__)}"
        self.actions = list(robot.action_features)
        self.action_dim = len(self.actions)
        self.cameras = camera_features(robot.observation_features)
        self.state_keys = float_features(robot.observation_features)
        self._lock = threading.RLock()
        self._timer: threading.Timer | None = None
        self._stopped: str | None = None
        self._estop = threading.Event()
        self._steps = 0
        self._last: Observation | None = None
        self._obs_time = 0.0
        self._next_tick = 0.0

    # ------------------------------------------------------------------ observations
    def _observe(self) -> Observation:
        raw = self.robot.get_observation()
        images = {c: np.asarray(raw[c], np.uint8) for c in self.cameras}
        state = np.array([raw[k] for k in self.state_keys], np.float32)
        # ground truth where the robot has it (a twin stand-in); the runner hides it from unprivileged policies
        env = self.robot.environment_state() if hasattr(self.robot, "environment_state") else None
        self._last = Observation(
            images=images,
            state=state,
            task=self.task,
            environment_state=env,
            timestamp=self._steps / self.rate_hz,
        )
        return self._last

    def _current(self) -> dict[str, float]:
        """The latest float readings by feature name."""
        assert self._last is not None
        return dict(zip(self.state_keys, map(float, self._last.state), strict=True))

    # ------------------------------------------------------------------ stopping
    def estop(self, reason: str = "e-stop") -> None:
        """Stop now, from any thread: the robot holds and the episode ends at its next step."""
        self._estop.set()
        self._halt(reason)

    def _halt(self, reason: str) -> None:
        with self._lock:
            if self._stopped is None:
                self._stopped = reason
                if self.robot.is_connected:
                    self.robot.send_action(self.robot.hold_action())

    def _on_deadline(self) -> None:
        self._halt(f"watchdog: no action within {self.limits.deadline_s} s of the observation")

    def _arm(self) -> None:
        self._disarm()
        self._obs_time = time.perf_counter()
        if self.limits.deadline_s is not None:
            self._timer = threading.Timer(self.limits.deadline_s, self._on_deadline)
            self._timer.daemon = True
            self._timer.start()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ------------------------------------------------------------------ World protocol
    def reset(self, seed: int, options: dict[str, Any] | None = None) -> Observation:
        if options:
            raise UsageError(f"RobotWorld.reset: unknown options {sorted(options)}")
        self._disarm()
        if not self.robot.is_connected:
            self.robot.connect(calibrate=True)
        if hasattr(self.robot, "reset_scene"):
            self.robot.reset_scene(seed)
        elif self.reset_fn is not None:
            self.reset_fn(seed)
        else:
            raise UsageError(f"{self.world_id}: cannot reset its scene; pass reset_fn (e.g. ask a person)")
        self._stopped, self._steps, self._seed = None, 0, seed
        self._estop.clear()
        obs = self._observe()
        self._next_tick = time.perf_counter()
        self._arm()
        return obs

    def step(self, action_chunk: np.ndarray) -> StepResult:
        latency = time.perf_counter() - self._obs_time
        self._disarm()
        if self._last is None:
            raise UsageError("RobotWorld.step called before reset(seed)")
        observations: list[Observation] = []
        notes: list[dict[str, Any]] = []
        chunk = np.asarray(action_chunk, dtype=np.float64)
        if chunk.ndim == 1:
            chunk = chunk[None]
        success = False
        for action in chunk if chunk.ndim == 2 else [chunk]:
            if self._stopped is None and self.estop_check is not None and self.estop_check():
                self.estop()
            if self._stopped is not None:
                break
            if isinstance(self.limits, JointLimits):
                safe, what = self.limits.filter(action, self._current(), self.rate_hz, self.actions)
            else:
                safe, what = self.limits.filter(action, self._current(), self.rate_hz)
            notes += [{"step": self._steps, "what": w} for w in what]
            if safe is None or (what and self.limits.on_violation == "stop"):
                self._halt(what[0] if safe is None else f"safety limit: {what[0]}")
                break
            if self.realtime:
                self._next_tick += 1.0 / self.rate_hz
                wait = self._next_tick - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                else:  # late: the policy (or the robot) overran the control period
                    self._next_tick = time.perf_counter()
            with self._lock:
                if self._stopped is not None:
                    break
                self.robot.send_action(dict(zip(self.actions, (float(x) for x in safe), strict=True)))
            self._steps += 1
            observations.append(self._observe())
            success = self._judge and bool(self.robot.success())  # type: ignore[attr-defined]
            if success or self._steps >= self.max_steps:
                break
        done = success or self._steps >= self.max_steps or self._stopped is not None
        if done and self.outcome_fn is not None:
            success = bool(self.outcome_fn(self._seed, self._steps, self._stopped))
        if not observations:
            observations.append(self._last)
        info: dict[str, Any] = {
            "success": success,
            "success_known": self._judge or self.outcome_fn is not None,
            "step": self._steps,
            "latency_s": latency,
            "interventions": notes,
        }
        if self._stopped is not None:
            info["stopped"] = self._stopped
        if not done:
            self._arm()
        return StepResult(observations=observations, done=done, info=info)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(self.limits, JointLimits):
            low = [self.limits.low.get(n, -np.inf) for n in self.actions]
            high = [self.limits.high.get(n, np.inf) for n in self.actions]
            return np.array(low, np.float32), np.array(high, np.float32)
        m = min(self.limits.max_step_m, self.limits.max_speed_m_s / self.rate_hz)
        lo = np.array([-m, -m, -m, self.limits.gripper_low], np.float32)
        return lo, np.array([m, m, m, self.limits.gripper_high], np.float32)

    def close(self) -> None:
        self._disarm()
        if self.robot.is_connected:
            self.robot.disconnect()


def ask_outcome(seed: int, steps: int, stopped: str | None) -> bool:
    """A person's verdict at the terminal (`RobotWorld(outcome_fn=ask_outcome)`, `record --outcome prompt`)."""
    why = f", stopped: {stopped}" if stopped else ""
    prompt = f"episode seed {seed} ended after {steps} steps{why}. Success? [y/n] "
    while True:
        try:
            answer = input(prompt).strip().lower()
        except EOFError:
            raise UsageError(f"episode seed {seed}: no answer at the outcome prompt (stdin closed)") from None
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no"):
            return False
