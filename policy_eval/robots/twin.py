"""`TwinRobot`: the digital twin behind LeRobot's `Robot` interface — the stand-in for a real arm in
tests, demos and `dreamtwin record`, with optional command latency, observation noise and a held-out
scene variant (appearance and physics the world model never saw)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from common.config import Strict, load_model
from common.errors import SpecError, UsageError
from policy_eval.robots.base import RobotWorld, SafetyLimits, ask_outcome
from scenes.spec import SceneSpec

JOINTS = [f"joint{i}.pos" for i in range(1, 8)]
STATE = ["ee.x", "ee.y", "ee.z", "gripper.width", *JOINTS]
ACTIONS = ["ee.dx", "ee.dy", "ee.dz", "gripper.open"]


class TwinRobot:
    """A `DigitalTwin` as a `Robot` (see `policy_eval.robots.base`).

    `latency_s`: every command waits this long before it reaches the arm (a bus, a network).
    `obs_noise`: std of Gaussian noise on the proprio readings (seeded per episode).
    `variant`: a spec the twin is dressed as at every reset (`DigitalTwin.set_variant`: colours, lights,
    cameras, friction, mass), e.g. a held-out appearance the world model never saw.
    """

    name = "twin"

    def __init__(
        self,
        twin: Any,
        *,
        latency_s: float = 0.0,
        obs_noise: float = 0.0,
        variant: SceneSpec | None = None,
    ) -> None:
        self.twin, self.spec = twin, twin.spec
        self.latency_s, self.obs_noise, self.variant = latency_s, obs_noise, variant
        self._connected = False
        self._obs: Any = None
        self._gripper = float(self.spec.robot.init_gripper)
        self._rng = np.random.default_rng(0)
        self._result: Any = None
        self.sent: list[dict[str, float]] = []

    # -- LeRobot's Robot interface
    @property
    def observation_features(self) -> dict[str, Any]:
        cams = {c.name: (c.resolution[1], c.resolution[0], 3) for c in self.spec.cameras}
        return {**dict.fromkeys(STATE, float), **cams}

    @property
    def action_features(self) -> dict[str, Any]:
        return dict.fromkeys(ACTIONS, float)

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        if self._connected:
            raise UsageError("TwinRobot is already connected")
        self._connected = True
        if calibrate and not self.is_calibrated:
            self.calibrate()
        self.configure()

    @property
    def is_calibrated(self) -> bool:
        return True  # the twin's joints are exact

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def _need(self) -> None:
        if not self._connected:
            raise UsageError("TwinRobot is not connected (call connect())")
        if self._obs is None:
            raise UsageError("TwinRobot has no scene yet (call reset_scene(seed))")

    def get_observation(self) -> dict[str, Any]:
        self._need()
        state = np.asarray(self._obs.state, np.float64)
        if self.obs_noise:
            state = state + self._rng.normal(0.0, self.obs_noise, state.shape)
        out: dict[str, Any] = {k: float(v) for k, v in zip(STATE, state, strict=True)}
        out.update({c: img.copy() for c, img in self._obs.images.items()})
        return out

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        self._need()
        missing = [k for k in ACTIONS if k not in action]
        if missing:
            raise UsageError(f"TwinRobot.send_action: missing {missing}")
        a = np.array([float(action[k]) for k in ACTIONS], np.float32)
        if self.latency_s:
            time.sleep(self.latency_s)
        self._result = self.twin.step(a[None])
        self._obs = self._result.last
        # what reached the arm: the delta scaled down to max_delta and the opening clipped, as the twin's
        # controller does
        d = a[:3].astype(np.float64)
        m, norm = self.spec.control.max_delta, float(np.linalg.norm(d))
        if norm > m:
            d *= m / norm
        self._gripper = float(np.clip(a[3], 0.0, 1.0))
        sent = dict(zip(ACTIONS, [*map(float, d), self._gripper], strict=True))
        self.sent.append(sent)
        return sent

    def disconnect(self) -> None:
        if not self._connected:
            raise UsageError("TwinRobot is not connected")
        self._connected = False

    def __enter__(self) -> TwinRobot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._connected:
            self.disconnect()

    # -- our additions
    def hold_action(self) -> dict[str, float]:
        return {"ee.dx": 0.0, "ee.dy": 0.0, "ee.dz": 0.0, "gripper.open": self._gripper}

    def reset_scene(self, seed: int) -> None:
        if self.variant is not None:
            self.twin.set_variant(self.variant)
        self._obs = self.twin.reset(seed)
        self._gripper = float(self.spec.robot.init_gripper)
        self._rng = np.random.default_rng([seed, 0x70B0])
        self._result = None
        self.sent = []

    def environment_state(self) -> np.ndarray:
        """The twin's object poses (privileged ground truth: recorded, never shown to unprivileged policies)."""
        self._need()
        return np.asarray(self.twin.environment_state(), np.float32)

    def success(self) -> bool:
        return bool(self._result is not None and self._result.info.get("success"))


class TwinRobotConfig(Strict):
    """A `TwinRobot` stand-in as a job declares it (`configs/robots/*.yaml`, `dreamtwin record --robot`)."""

    kind: Literal["twin"] = "twin"
    variant: dict[str, Any] = Field(
        {},
        description="dotted-key overrides of the scene the robot's twin is dressed as (a held-out appearance "
        "or physics: table.color, lights.0.intensity, objects.0.friction, ...); the policies are not told",
    )
    latency_s: float = Field(0.0, ge=0, description="delay before every command reaches the arm")
    obs_noise: float = Field(0.0, ge=0, description="std of Gaussian noise on the proprio readings")
    limits: SafetyLimits = Field(default_factory=SafetyLimits)
    realtime: bool = Field(False, description="pace actions by the wall clock (a real robot always is)")
    outcome: Literal["robot", "prompt"] = Field(
        "robot",
        description="who judges success: the robot's state, or a person asked at the terminal after every "
        "episode (`record --outcome prompt`, one worker)",
    )

    def variant_spec(self, spec: SceneSpec) -> SceneSpec | None:
        """`spec` with the variant's overrides, checked as a scene (None without a variant)."""
        if not self.variant:
            return None
        from common.config import set_dotted
        from scenes.randomization import variable_fields

        data = spec.model_dump(mode="json")
        for key, value in self.variant.items():
            set_dotted(data, key, value, "robot variant")
        try:
            variant = SceneSpec.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            raise SpecError(f"robot variant: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        if variable_fields(variant) != variable_fields(spec):
            raise SpecError(
                "robot variant: only what a built twin can change (colours, lights, cameras, friction, mass)"
            )
        return variant

    def world(self, twin: Any, spec: SceneSpec) -> RobotWorld:
        robot = TwinRobot(
            twin, latency_s=self.latency_s, obs_noise=self.obs_noise, variant=self.variant_spec(spec)
        )
        return RobotWorld(
            robot,
            rate_hz=spec.control.rate_hz,
            max_steps=spec.task.max_steps,
            task=spec.task.instruction,
            limits=self.limits,
            realtime=self.realtime,
            world_id="robot:twin",
            outcome_fn=ask_outcome if self.outcome == "prompt" else None,
        )


def load_robot_config(path: str | Path) -> TwinRobotConfig:
    return load_model(TwinRobotConfig, path)
