"""A trust score for every imagined episode: how likely its verdict is the one the real world gives.

    checker = TrustChecker.load("assets/worldmodels/push_cube_tiny/trust.json", spec)
    scores = checker.score(episodes)        # per episode {"trust": p, "features": {...}}

The checker replays each imagined episode through a dynamics ensemble (`worldmodels.ensemble`) that
was trained on states alone, and measures how physically plausible the imagined episode was and how
close its verdict came to flipping:

- `success`: the imagined verdict itself (imagined successes and failures are wrong at different rates);
- `margin`: the deepest the imagined episode got on the success predicate's margin (metres; >= 0
  for a success, `scenes.predicates`), and `margin_abs`, its size: an episode whose verdict was
  decided near the edge is fragile;
- `replay_margin` (`replay_margin_abs`): the same for the ensemble's own rollout of the imagined
  actions from the episode's initial state (elites' mean, open loop); `replay_agrees`: whether that
  rollout gives the same verdict;
- `push_gap`: the largest hand-object distance at an imagined step where the object moved (0 when
  it never moved), and `object_travel`, how far it moved in all: an object pushed from afar is
  physically implausible; `moving_steps`, the steps in which it moved, and `final_speed`, its mean
  step over the last three (a verdict reached by an object still sliding, or one that stopped at the
  edge); `length`: the episode's steps over the task's limit (errors compound);
- `surprise_max`, `surprise_mean`: per imagined step, how far the imagined object moved from where
  the ensemble predicts it from the previous imagined state and action, in units of the ensemble's
  predicted spread (epistemic and aleatoric, plus the read-out noise `surprise_floor`) — physically
  implausible steps score high;
- `epistemic`: the mean disagreement u of the elites along the imagined states (COPlanner's u).

The score is a logistic model of "this verdict is right" on these features (each may enter for
imagined successes and failures separately, `NAME@success`, `NAME@failure`), `sigmoid(bias + sum
w_f * f)`, fitted (`fit_logistic`) on a seed range where the twin's outcomes are known (the choose
range of `benchmarks/evaluator_fidelity.py`, never the report range) and stored with its ensemble
path, threshold and provenance in a `trust.json` beside the world model. Episodes whose trust is
below the threshold are "untrusted": reports set them aside, and an evaluation can re-run them in a
ground-truth world (`trust.fallback: twin`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from common.config import Strict, validate_model
from common.errors import SpecError
from common.io import read_json
from common.types import Episode
from scenes.spec import SceneSpec

FEATURES = (
    "success",
    "margin",
    "margin_abs",
    "push_gap",
    "object_travel",
    "moving_steps",
    "final_speed",
    "length",
    "replay_margin",
    "replay_margin_abs",
    "replay_agrees",
    "surprise_max",
    "surprise_mean",
    "epistemic",
)
TRUST_FILE = "trust.json"
MOVED = 0.002  # an imagined object step longer than this (m) counts as the object moving


def episode_arrays(ep: Episode) -> tuple[np.ndarray, np.ndarray, bool]:
    """(states [T + 1, D + E] with canonical quaternions, actions [T, A], success) of an imagined episode."""
    from worldmodels.ensemble import canonical_quaternions

    obs = [ep.initial_observation] + [s.observation for s in ep.steps]
    if any(o.environment_state is None for o in obs):
        raise SpecError("trust needs imagined episodes with object poses (environment_state)")
    states = np.stack(
        [np.concatenate([o.state, canonical_quaternions(o.environment_state)]) for o in obs]  # type: ignore[arg-type]
    ).astype(np.float32)
    actions = ep.actions().astype(np.float32) if ep.steps else np.zeros((0, 0), np.float32)
    return states, actions, ep.success


class TrustCalibration(Strict):
    """What `trust.json` holds: the ensemble, the logistic model, the threshold, and where they came from."""

    version: int = 1
    ensemble: str = Field(description="dynamics ensemble checkpoint; relative to this file's directory")
    bias: float
    weights: dict[str, float] = Field(
        description="feature name (FEATURES, or NAME@success / NAME@failure) -> coefficient"
    )
    scale: dict[str, float] = Field(default_factory=dict, description="feature name -> divisor applied first")
    threshold: float = Field(0.5, gt=0, lt=1, description="episodes with trust below it are untrusted")
    surprise_floor: float = Field(
        0.002, ge=0, description="read-out noise of the imagined object position (m), added to the spread"
    )
    chosen_on: dict[str, Any] = Field(default_factory=dict, description="seeds and runs the fit used")


def world_trust_file(world: str) -> Path | None:
    """The trust.json a video world model (`worldmodel:PATH`) carries in its directory, if any."""
    from policy_eval.worlds import parse_world

    w = parse_world(world)
    if w.kind != "worldmodel":
        return None
    assert w.path is not None
    own = Path(w.path) / TRUST_FILE
    return own if own.is_file() else None


def load_calibration(path: str | Path) -> TrustCalibration:
    data = read_json(Path(path), SpecError)
    cal = validate_model(TrustCalibration, data, str(path))
    unknown = sorted(n for n in cal.weights if n.partition("@")[0] not in FEATURES or n.count("@") > 1)
    if unknown:
        raise SpecError(f"{path}: weights: unknown features {unknown}; known: {list(FEATURES)}")
    return cal


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))


def feature_value(f: dict[str, float], name: str) -> float:
    """A feature by name; `NAME@success` / `NAME@failure` is NAME on imagined successes / failures only
    (0 on the others), so the model can weigh a feature differently for the two verdicts."""
    base, _, part = name.partition("@")
    if part not in ("", "success", "failure"):
        raise SpecError(f"feature {name!r}: expected NAME, NAME@success or NAME@failure")
    gate = {"": 1.0, "success": f["success"], "failure": 1.0 - f["success"]}[part]
    return float(f[base]) * gate


def design(features: list[dict[str, float]], names: list[str], scale: dict[str, float]) -> np.ndarray:
    """Feature rows [N, F] of the named features, each divided by its scale."""
    return np.array([[feature_value(f, n) / scale.get(n, 1.0) for n in names] for f in features], np.float64)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> tuple[float, np.ndarray]:
    """(bias, weights) of an L2-regularised logistic regression of y (0/1) on x [N, F] by Newton's method."""
    n, f = x.shape
    X = np.concatenate([np.ones((n, 1)), x], 1)
    w = np.zeros(f + 1)
    reg = np.full(f + 1, l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - y) + reg * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), w[1:]


class TrustChecker:
    """Scores imagined episodes of one scene with a dynamics ensemble and a calibration."""

    def __init__(self, calibration: TrustCalibration, ensemble: Any, spec: SceneSpec) -> None:
        from worldmodels.ensemble_world import EnsembleWorld

        self.cal, self.spec = calibration, spec
        self.model = ensemble
        physics: dict[str, float] = {}
        if ensemble.cfg.scene is not None:
            from scenes.randomization import physics_scales

            physics = physics_scales(spec, SceneSpec.model_validate(ensemble.cfg.scene))
        self.world = EnsembleWorld(ensemble, spec, physics=physics, deterministic=True)
        self._physics = self.world._physics

    @classmethod
    def load(cls, path: str | Path, spec: SceneSpec) -> TrustChecker:
        from worldmodels.ensemble import DynamicsEnsemble

        cal = load_calibration(path)
        ens = Path(cal.ensemble)
        if not ens.is_absolute():
            ens = Path(path).parent / ens
        return cls(cal, DynamicsEnsemble.from_pretrained(ens), spec)

    # ------------------------------------------------------------------ features
    def features(self, episodes: list[Episode]) -> list[dict[str, float]]:
        """The trust features of each imagined episode (needs each observation's environment_state)."""
        return [self.episode_features(*episode_arrays(ep)) for ep in episodes]

    def episode_features(self, states: np.ndarray, actions: np.ndarray, success: bool) -> dict[str, float]:
        """The trust features of one imagined episode: states [T + 1, D + E] (proprio, object poses),
        actions [T, A], its verdict."""
        import torch

        d = self.model.cfg.state_dim
        states = np.asarray(states, np.float32)
        actions = np.asarray(actions, np.float32).reshape(-1, self.model.cfg.action_dim)
        initial = self.world._poses(states[0, d:])
        margins = [self.world.judge(s[d:], initial)[1] for s in states[1:]] or [
            self.world.judge(states[0, d:], initial)[1]
        ]
        f: dict[str, float] = {
            "success": float(success),
            "margin": float(max(margins)),
            "margin_abs": abs(float(max(margins))),
        }
        # contact plausibility: how far the hand was from the object when the imagined object moved
        obj_xy = states[:, d : d + 2]
        step = np.linalg.norm(np.diff(obj_xy, axis=0), axis=1)
        gaps = np.linalg.norm(states[:-1, :2] - obj_xy[:-1], axis=1)[step > MOVED]
        f["push_gap"] = float(gaps.max()) if len(gaps) else 0.0
        f["object_travel"] = float(step.sum())
        f["moving_steps"] = float((step > MOVED).sum())
        f["final_speed"] = float(step[-3:].mean()) if len(step) else 0.0
        f["length"] = len(actions) / max(1, self.spec.task.max_steps)
        T = len(actions)
        if T == 0:
            f.update(
                replay_margin=f["margin"],
                replay_margin_abs=f["margin_abs"],
                replay_agrees=1.0,
                surprise_max=0.0,
                surprise_mean=0.0,
                epistemic=0.0,
            )
            return f
        s = torch.from_numpy(states[:-1])
        a = torch.from_numpy(actions)
        phys = self._physics.expand(T, -1)
        means, var = self.model.predict(s, a, phys)  # [K, T, S]
        mean = means.mean(0)
        floor = self.cal.surprise_floor
        spread = (means.var(0, unbiased=False) + var.mean(0) + floor**2).sqrt()
        obj = slice(d, d + 2)  # the first object's x, y: what the verdicts of these tasks read
        z = ((torch.from_numpy(states[1:])[:, obj] - mean[:, obj]) / spread[:, obj]).norm(dim=-1)
        u = (means.std(0, unbiased=False) / self.model.out_std).mean(-1)
        # the ensemble's own open-loop rollout of the imagined actions from the initial state
        x = torch.from_numpy(states[:1])
        replay = []
        for t in range(T):
            x = self.model.step(x, a[t : t + 1], phys[:1], None).next
            replay.append(self.world.judge(x[0, d:].numpy(), initial)[1])
        f.update(
            replay_margin=float(max(replay)),
            replay_margin_abs=abs(float(max(replay))),
            replay_agrees=float((max(replay) >= 0) == success),
            surprise_max=float(z.max()),
            surprise_mean=float(z.mean()),
            epistemic=float(u.mean()),
        )
        return f

    def trust(self, features: list[dict[str, float]]) -> np.ndarray:
        names = list(self.cal.weights)
        x = design(features, names, self.cal.scale)
        w = np.array([self.cal.weights[n] for n in names])
        return _sigmoid(self.cal.bias + x @ w)

    def score(self, episodes: list[Episode]) -> list[dict[str, Any]]:
        """Per episode: {"trust": p in [0, 1], "trusted": p >= threshold, "trust_features": {...}}."""
        feats = self.features(episodes)
        return [
            {"trust": float(p), "trusted": bool(p >= self.cal.threshold), "trust_features": f}
            for p, f in zip(self.trust(feats), feats, strict=True)
        ]


def write_calibration(path: Path, cal: TrustCalibration) -> None:
    from common.io import atomic_write_text

    atomic_write_text(path, json.dumps(cal.model_dump(mode="json"), indent=2))
