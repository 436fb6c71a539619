"""COPlanner's uncertainty-aware MPC (UP-MPC) as a policy wrapper around any policy.

    dreamtwin eval --policies configs/policies/mpc_image_medium.yaml,image_medium ...   # a YAML names one
    policy = UPMPC(make_policy("image_medium", spec), DynamicsEnsemble.from_pretrained(path), spec,
                   MPCConfig(base="image_medium", ensemble=path, mode="conservative", rate=1.0))

At every decision the base policy proposes its action; `ntraj - 1` more candidates perturb it
(Gaussian, `spread` x the controller's `max_delta` on the end-effector deltas `dims`; the unperturbed one is
always a candidate). Each candidate is rolled `horizon` steps through the dynamics ensemble, one random
elite member per step sampling its Gaussian (COPlanner's model rollout), from the current state. The
later actions of a rollout hold the candidate (`later: hold`), or come from a copy of the base policy
fed the predicted state (`later: policy`, for policies that act from states; image policies would need
a render per rollout step). Reward r_t is the task predicate's margin at the predicted state, in cm
(`scenes.predicates`: negative outside the goal, growing towards it); u_t is the elites' disagreement.
The score Σ γ_r^t r_t − rate · Σ γ_u^t u_t (`conservative`: avoid what the model does not know) or
+ rate · Σ γ_u^t u_t (`optimistic`: seek it, for exploration) or no uncertainty term (`plain`) picks
the candidate whose first action is executed (the base policy's own unless another scores `min_gain`
higher). `none` executes a candidate drawn at random: the
perturbed base policy itself, without planning (the baseline every mode is compared with).

The current state is the proprio and the object poses: the simulator's (`environment_state`) when the
observation carries it (`privileged: true`), else the target object found by its colour in the first
camera's image (`policy_eval.policies.perception`, identity orientation), as the image policies see it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from common.config import Strict, load_model
from common.errors import SpecError, UsageError
from common.types import Observation, Policy
from scenes.spec import SceneSpec


class MPCConfig(Strict):
    """A UP-MPC policy: its base policy, the dynamics ensemble, COPlanner's knobs."""

    version: int = 1
    type: Literal["up_mpc"] = "up_mpc"
    base: str = Field(description="registered policy name or checkpoint directory")
    ensemble: str = Field(
        description="dynamics ensemble checkpoint (relative paths: from the repository root)"
    )
    mode: Literal["conservative", "optimistic", "plain", "none"] = "conservative"
    ntraj: int = Field(5, ge=1, description="candidate first actions")
    horizon: int = Field(5, ge=1)
    rate: float = Field(1.0, ge=0, description="weight of the uncertainty term")
    gamma_r: float = Field(0.97, gt=0, le=1)
    gamma_u: float = Field(0.97, gt=0, le=1)
    spread: float = Field(0.5, ge=0, description="perturbation std, as a fraction of max_delta")
    dims: list[int] = Field(
        [0, 1, 2], min_length=1, description="action dimensions perturbed (the ee deltas)"
    )
    later: Literal["hold", "policy"] = "hold"
    min_gain: float = Field(
        0.0, ge=0, description="keep the base policy's action unless a candidate scores this much higher"
    )
    privileged: bool = Field(
        False, description="plan from the simulator's object poses (else from the image)"
    )


def load_mpc_config(path: str | Path) -> MPCConfig:
    return load_model(MPCConfig, path)


def is_mpc_config(name: str) -> bool:
    from policy_eval.policies.base import policy_yaml_type

    return policy_yaml_type(name) == "up_mpc"


class UPMPC:
    """The `Policy` protocol: the base policy's action, improved by planning in the ensemble."""

    def __init__(self, base: Policy, model: Any, spec: SceneSpec, cfg: MPCConfig, seed: int = 0) -> None:
        from scenes.randomization import physics_scales
        from worldmodels.ensemble_world import EnsembleWorld

        self.base, self.model, self.spec, self.cfg = base, model, spec, cfg
        self.privileged = cfg.privileged
        physics = physics_scales(spec, SceneSpec.model_validate(model.cfg.scene)) if model.cfg.scene else {}
        self.world = EnsembleWorld(model, spec, physics=physics)  # its predicate, margin and physics inputs
        lo, hi = spec.control.max_delta, spec.control.max_delta
        self.low = np.array([-lo, -lo, -lo, 0.0], np.float32)
        self.high = np.array([hi, hi, hi, 1.0], np.float32)
        self.base_seed = seed
        self.last: dict[str, Any] = {}
        if not cfg.privileged:
            from policy_eval.policies.scripted import _target_object

            self.obj = _target_object(spec)
            o = spec.object(self.obj)
            fixed = [c for c in spec.cameras if not c.attach]
            if not fixed:
                raise SpecError("an image-based UP-MPC needs a fixed camera in the scene")
            from scenes.camera import PinholeCamera

            self.camera = fixed[0]
            self.pinhole = PinholeCamera.from_spec(self.camera)
            self.color, self.centre_z = o.color, o.half_height()
            self.estimate: np.ndarray | None = None
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        import torch

        self.base.reset(seed)
        key = [self.base_seed, 0 if seed is None else seed, 0x3C9A]
        self.rng = np.random.default_rng(key)
        self.gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        self.estimate = None
        self.initial: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    # ------------------------------------------------------------------ the state the plan starts from
    def _state(self, obs: Observation) -> np.ndarray | None:
        d, e = self.model.cfg.state_dim, self.model.cfg.env_dim
        if obs.environment_state is not None:
            env = obs.environment_state
        elif self.privileged:
            raise UsageError("a privileged UP-MPC needs observation.environment_state")
        else:
            from policy_eval.policies.perception import locate_on_table

            img = obs.images.get(self.camera.name)
            if img is None:
                raise UsageError(f"UP-MPC needs an image from camera {self.camera.name!r}")
            found = locate_on_table(img, self.pinhole, self.color, self.centre_z)
            if found is not None:
                self.estimate = np.asarray(found, np.float64)
            if self.estimate is None:
                return None
            env = np.zeros(e, np.float32)
            i = [o.name for o in self.spec.objects].index(self.obj)
            env[7 * i : 7 * i + 3] = self.estimate
            env[7 * i + 3] = 1.0
        if obs.state.shape != (d,) or env.shape != (e,):
            raise UsageError(f"UP-MPC's ensemble plans from state [{d}] + object poses [{e}]")
        return np.concatenate([obs.state, env]).astype(np.float32)

    # ------------------------------------------------------------------ planning
    def act(self, observation: Observation) -> np.ndarray:
        import torch

        a0 = np.asarray(self.base.act(observation), np.float32)
        s = self._state(observation)
        if s is None:  # nothing to plan from yet
            return a0
        c = self.cfg
        d = self.model.cfg.state_dim
        if self.initial is None:
            self.initial = self.world._poses(s[d:])
        first = a0[0]
        cands = np.repeat(first[None], c.ntraj, 0)
        if c.ntraj > 1:
            noise = self.rng.normal(0.0, c.spread * self.spec.control.max_delta, (c.ntraj - 1, len(c.dims)))
            cands[1:, c.dims] += noise.astype(np.float32)
        cands = np.clip(cands, self.low, self.high)
        x = torch.from_numpy(np.repeat(s[None], c.ntraj, 0))
        phys = self.world._physics.expand(c.ntraj, -1)
        policies = [copy.deepcopy(self.base) for _ in range(c.ntraj)] if c.later == "policy" else []
        reward = np.zeros(c.ntraj)
        unc = np.zeros(c.ntraj)
        acts = torch.from_numpy(cands)
        for h in range(c.horizon):
            if h > 0 and c.later == "policy":
                acts = torch.from_numpy(
                    np.stack([self._policy_action(p, x[i].numpy()) for i, p in enumerate(policies)])
                )
            step = self.model.step(x, acts, phys, self.gen, sample=True)
            x = step.next
            margins = np.array([self.world.judge(row[d:], self.initial)[1] for row in x.numpy()])
            reward += c.gamma_r**h * margins * 100.0
            unc += c.gamma_u**h * step.uncertainty.numpy()
        sign = {"conservative": -1.0, "optimistic": 1.0, "plain": 0.0, "none": 0.0}[c.mode]
        score = reward + sign * c.rate * unc
        best = int(self.rng.integers(c.ntraj)) if c.mode == "none" else int(np.argmax(score))
        if c.mode != "none" and score[best] - score[0] < c.min_gain:
            best = 0  # no candidate is clearly better than the base policy's own action
        self.last = {"scores": score.tolist(), "uncertainty": unc.tolist(), "chosen": best}
        out = a0.copy()
        out[0] = cands[best]
        return out

    def _policy_action(self, policy: Policy, state: np.ndarray) -> np.ndarray:
        d = self.model.cfg.state_dim
        obs = Observation(
            images={}, state=state[:d], task=self.spec.task.instruction, environment_state=state[d:]
        )
        return np.clip(np.asarray(policy.act(obs), np.float32)[0], self.low, self.high)


def make_mpc_policy(path: str, spec: SceneSpec, seed: int = 0) -> UPMPC:
    """The UP-MPC policy a YAML file describes (its base built as the evaluation builds policies)."""
    from policy_eval.policies.base import make_policy
    from worldmodels.ensemble import DynamicsEnsemble

    cfg = load_mpc_config(path)
    ens = Path(cfg.ensemble)
    if not ens.is_absolute() and not ens.exists():
        ens = Path(path).parent / ens
    return UPMPC(make_policy(cfg.base, spec, seed), DynamicsEnsemble.from_pretrained(ens), spec, cfg, seed)
