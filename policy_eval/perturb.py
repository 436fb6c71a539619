"""Perturbation analysis: every policy, on the same seeds, in the unperturbed scene (the control) and under
each level of each perturbation axis; success per cell with Beta intervals, the paired difference to
the control, failure events, and which axes hurt which policy most.

    dreamtwin perturb --config configs/perturbations/push_cube.yaml [--world twin|worldmodel:PATH] \
        [--policies a,b] [--episodes N] --out runs/perturb

A sweep is evaluations with a perturbation attached (`EvalConfig.perturbation`): each cell is one
`dreamtwin eval` run in `out/cells/<axis>=<level>/` (the control in `out/cells/control/`), resumable,
with workers, Ray and adaptive stopping exactly as `eval`. Episode (policy, seed) of a cell meets the
initial scene of the control's episode (policy, seed) changed only in the perturbed factor
(`scenes.perturbations`). When every cell is done, `out/` gets:
- `episodes.jsonl`: every cell's episodes, each with its `cell`, `perturbation` (axis, level, values
  drawn) and failure `events` (`policy_eval.events`), written atomically,
- `results.json`: per cell and policy the success rate with its Beta(k+1, n-k+1) 95% interval (RoboLab's),
  failure-event counts, and the paired difference to the control over the seeds both ran (Newcombe's
  interval for paired proportions, `significant` when it excludes 0); per axis a logistic fit of success
  on each value drawn from a range; a ranking of (policy, cell) by harm,
- `report.html`: heatmaps, per-axis curves, failure-event bars, a frame strip per level.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from common.config import Strict
from common.errors import DreamTwinError, SpecError
from common.io import atomic_write_text
from common.machine import machine_fingerprint
from common.types import Observation, Policy, StepResult, World
from policy_eval.evaluate import EpisodeLog, EvalConfig, run_eval, unique_rows
from policy_eval.metrics import beta_posterior_interval, paired_difference
from scenes.perturbations import AXIS_TYPES, ActionLatency, Change, ObservationNoise, Perturbation
from scenes.spec import SceneSpec

CONTROL = "control"
SWEEP_VERSION = 1


# ---------------------------------------------------------------------- the sweep config
class AxisConfig(Strict):
    type: Literal[tuple(AXIS_TYPES)]  # type: ignore[valid-type]
    levels: dict[str, Change] = Field(min_length=1, description="level name -> the change's values")

    @model_validator(mode="before")
    @classmethod
    def _tag(cls, data: Any) -> Any:
        """Each level is validated as the axis's type (the type is written once, on the axis)."""
        if isinstance(data, dict) and isinstance(data.get("levels"), dict):
            levels = {}
            for name, v in data["levels"].items():
                if isinstance(v, dict) and v.get("type", data.get("type")) != data.get("type"):
                    raise ValueError(f"levels.{name}.type: the type belongs to the axis, not to a level")
                levels[name] = {"type": data.get("type"), **v} if isinstance(v, dict) else v
            data = {**data, "levels": levels}
        return data


class PerturbConfig(EvalConfig):
    """An evaluation's settings (the policies, world, seeds, workers...) and the axes swept."""

    out: str = "runs/perturb"
    strips: int = Field(1, ge=0, description="episodes per policy and cell kept as frame strips")
    axes: dict[str, AxisConfig] = Field(min_length=1)

    def cells(self) -> list[Perturbation | None]:
        """The control (None), then every axis's levels in the order declared."""
        out: list[Perturbation | None] = [None]
        for axis, ax in self.axes.items():
            out += [Perturbation(axis=axis, level=lvl, change=ch) for lvl, ch in ax.levels.items()]
        return out

    def cell_config(self, p: Perturbation | None) -> EvalConfig:
        base = self.model_dump(exclude={"axes", "out", "perturbation", "report", "ground_truth"})
        out = Path(self.out) / "cells" / (CONTROL if p is None else p.cell)
        return EvalConfig(**base, out=str(out), perturbation=p)


def load_perturb_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PerturbConfig:
    """The sweep in `path` (YAML), validated strictly and against its scene: a bad axis, level or object
    is one line naming the file and the key."""
    from common.config import load_model

    cfg = load_model(PerturbConfig, path, overrides)
    spec = cfg.load_scene()
    for axis, ax in cfg.axes.items():
        for level, change in ax.levels.items():
            try:
                change.check_scene(spec)
            except ValueError as e:
                raise SpecError(f"{path}: axes.{axis}.levels.{level}.{e}") from None
    return cfg


# ---------------------------------------------------------------------- applying a perturbation
class PerturbedTwin:
    """The twin dressed, at every reset, as the perturbed scene of that seed (a `World`; anything else is
    the twin's). `spec` is the structure the twin was built from. With `objects`, observations carry the
    poses of the first `objects` objects only (what a learned world trained without the added bodies
    knows; they are still in the frames)."""

    def __init__(
        self, twin: Any, spec: SceneSpec, perturbation: Perturbation | None, objects: int | None = None
    ) -> None:
        self.twin, self.base_spec, self.perturbation, self.objects = twin, spec, perturbation, objects
        self._added: np.ndarray | None = None

    def _known(self, obs: Observation) -> Observation:
        if self.objects is None or obs.environment_state is None:
            return obs
        return dataclasses.replace(obs, environment_state=obs.environment_state[: 7 * self.objects])

    def variant(self, seed: int) -> SceneSpec:
        return (
            self.base_spec if self.perturbation is None else self.perturbation.apply(self.base_spec, seed)[0]
        )

    def reset(self, seed: int, options: dict[str, Any] | None = None) -> Observation:
        if hasattr(self.twin, "set_variant"):
            self.twin.set_variant(self.variant(seed))
        obs = self.twin.reset(seed, options)
        self._added = (
            None if obs.environment_state is None else obs.environment_state[7 * (self.objects or 0) :]
        )
        return self._known(obs)

    def show(self, state: np.ndarray, environment_state: np.ndarray) -> Observation:
        """The twin posed at a learned world's state; added bodies stay where they started."""
        env = np.asarray(environment_state)
        if self.objects is not None and self._added is not None:
            env = np.concatenate([env[: 7 * self.objects], self._added])
        return self._known(self.twin.show(state, env))

    def step(self, action_chunk: np.ndarray) -> StepResult:
        r: StepResult = self.twin.step(action_chunk)
        if self.objects is None:
            return r
        return dataclasses.replace(r, observations=[self._known(o) for o in r.observations])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.twin, name)


class PerturbedPolicy:
    """A policy seeing noisy observations (`observation_noise`) or acting late (`action_latency`: the robot
    holds still for the first `steps` control steps, then executes each action `steps` steps late)."""

    def __init__(
        self, policy: Policy, change: ObservationNoise | ActionLatency, spec: SceneSpec, axis: str
    ) -> None:
        self.policy, self.change, self.salt = policy, change, zlib.crc32(axis.encode())
        self.hold = np.array([0.0, 0.0, 0.0, spec.robot.init_gripper], np.float32)
        self.privileged = getattr(policy, "privileged", False)

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)
        self.rng = np.random.default_rng([seed or 0, 0x0B5, self.salt])
        self.queue: collections.deque[np.ndarray] = collections.deque()
        if isinstance(self.change, ActionLatency):
            self.queue.extend(self.hold.copy() for _ in range(self.change.steps))

    def act(self, observation: Observation) -> np.ndarray:
        c = self.change
        if isinstance(c, ObservationNoise):
            images = {
                k: np.clip(v.astype(np.float32) + self.rng.normal(0, c.pixel_std, v.shape), 0, 255).astype(
                    np.uint8
                )
                if c.pixel_std > 0
                else v
                for k, v in observation.images.items()
            }
            state = observation.state + self.rng.normal(0, c.state_std, observation.state.shape).astype(
                observation.state.dtype
            )
            observation = dataclasses.replace(observation, images=images, state=state)
            return np.asarray(self.policy.act(observation), np.float32)
        chunk = np.atleast_2d(np.asarray(self.policy.act(observation), np.float32))
        if chunk.shape[1] == len(self.hold):
            self.hold[3] = chunk[-1, 3]  # a late robot holds the gripper where it was last commanded
        self.queue.extend(chunk)
        return np.stack([self.queue.popleft() for _ in range(len(chunk))])


# ---------------------------------------------------------------------- statistics
def logistic_fits(rows: list[dict[str, Any]], min_rows: int = 8) -> dict[str, Any]:
    """Per policy and value drawn from a range (over one axis's episodes): success ~ logistic(a + b x)."""
    from policy_eval.trust import fit_logistic

    by: dict[tuple[str, str], list[tuple[float, bool]]] = collections.defaultdict(list)
    for r in rows:
        for k, v in (r.get("perturbation") or {}).get("params", {}).items():
            by[(r["policy"], k)].append((float(v), bool(r["success"])))
    out: dict[str, Any] = {}
    for (policy, param), pts in sorted(by.items()):
        x = np.array([p[0] for p in pts])
        y = np.array([p[1] for p in pts], float)
        if len(pts) < min_rows or np.ptp(x) < 1e-9 or len(set(x.round(9))) < 3:
            continue  # a fixed value, not a range
        mu, sd = float(x.mean()), float(x.std())
        bias, w = fit_logistic(((x - mu) / sd)[:, None], y)
        out.setdefault(policy, {})[param] = {
            "slope_per_unit": float(w[0] / sd),
            "intercept": float(bias - w[0] * mu / sd),
            "n": len(pts),
            "range": [float(x.min()), float(x.max())],
            "success_rate": float(y.mean()),
        }
    return out


def summarise_sweep(cfg: PerturbConfig, cells: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """results.json of a sweep from every cell's episode rows (keyed by cell name, the control first)."""
    from policy_eval.events import EVENTS

    control = {(r["policy"], r["seed"]): bool(r["success"]) for r in cells[CONTROL]}
    out_cells: dict[str, Any] = {}
    harm = []
    for name, rows in cells.items():
        p = next((r.get("perturbation") for r in rows if r.get("perturbation")), None) or {}
        entry: dict[str, Any] = {
            "axis": p.get("axis"),
            "level": p.get("level"),
            "type": p.get("type"),
            "change": p.get("change"),
            "policies": {},
        }
        for pol in cfg.policies:
            mine = sorted((r for r in rows if r["policy"] == pol), key=lambda r: r["seed"])
            n, k = len(mine), sum(bool(r["success"]) for r in mine)
            lo, hi = beta_posterior_interval(k, n)
            events = collections.Counter(e for r in mine for e in r.get("events", {}))
            pe: dict[str, Any] = {
                "success_rate": k / n if n else None,
                "ci_low": lo,
                "ci_high": hi,
                "n": n,
                "successes": k,
                "events": {e: events[e] for e in EVENTS if events[e]},
            }
            if name != CONTROL:
                pairs = [
                    (bool(r["success"]), control[(pol, r["seed"])])
                    for r in mine
                    if (pol, r["seed"]) in control
                ]
                pe["diff"] = paired_difference([a for a, _ in pairs], [b for _, b in pairs])
                if pe["diff"]["value"] is not None:
                    harm.append({"policy": pol, "cell": name, "axis": p.get("axis"), **pe["diff"]})
            entry["policies"][pol] = pe
        out_cells[name] = entry
    axes: dict[str, Any] = {}
    for axis in cfg.axes:
        rows = [r for name, rs in cells.items() if name.startswith(f"{axis}=") for r in rs]
        worst = {}
        for pol in cfg.policies:
            diffs = [h for h in harm if h["axis"] == axis and h["policy"] == pol]
            if diffs:
                w = min(diffs, key=lambda h: h["value"])
                worst[pol] = {"cell": w["cell"], "diff": w["value"], "significant": w["significant"]}
        axes[axis] = {"type": cfg.axes[axis].type, "worst": worst, "fits": logistic_fits(rows)}
    harm.sort(key=lambda h: (h["value"], h["ci_high"]))
    return {
        "version": SWEEP_VERSION,
        "scene": cfg.load_scene().name,
        "world": cfg.world,
        "policies": cfg.policies,
        "seeds": cfg.seeds(),
        "cells": out_cells,
        "axes": axes,
        "most_harmful": harm,
        "machine": machine_fingerprint(),
    }


# ---------------------------------------------------------------------- the job
def _check_sweep(cfg: PerturbConfig, out: Path) -> None:
    resolved = {"job": "perturb", "config": cfg.fingerprint()}
    path = out / "sweep.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if {k: previous.get(k) for k in resolved} != resolved:
            raise DreamTwinError(f"{out} holds a different perturbation sweep; use another --out")
    else:
        atomic_write_text(path, json.dumps({**resolved, "machine": machine_fingerprint()}, indent=2))


class CellRunner:
    """Runs whole cells of a sweep, one after another, each as an `eval` run with one local worker; one per
    sweep worker. Keeps a twin per scene structure (the nominal one, one with distractors...) across cells."""

    def __init__(self, cfg: PerturbConfig, world: World | None = None) -> None:
        self.cfg, self.cells = cfg, cfg.cells()
        self.twins: dict[str, Any] = {}
        if world is not None:
            self.twins[self._key(cfg.load_scene())] = world

    @classmethod
    def from_json(cls, cfg_json: str) -> CellRunner:
        return cls(PerturbConfig.model_validate_json(cfg_json))

    @staticmethod
    def _key(spec: SceneSpec) -> str:
        from scenes.randomization import variable_fields

        return json.dumps(variable_fields(spec), sort_keys=True)

    def run(self, index: int) -> tuple[int, int]:
        """Run (or resume) cell `index`; (index, episodes logged)."""
        ccfg = self.cfg.cell_config(self.cells[index]).model_copy(
            update={"workers": 1, "backend": "local", "ray_address": None}
        )
        structure = ccfg.load_scene()
        key = self._key(structure)
        if key not in self.twins:
            from scenes.twin import DigitalTwin

            render = self.cfg.render or self.cfg.world.startswith("worldmodel")
            self.twins[key] = DigitalTwin(structure, render=render)
        run_eval(ccfg, progress=False, world=self.twins[key])
        return index, len(unique_rows(EpisodeLog(Path(ccfg.out) / "episodes.jsonl").read()))


def run_sweep(cfg: PerturbConfig, *, progress: bool = True, world: World | None = None) -> dict[str, Any]:
    """Run (or resume) every cell of the sweep, then write the sweep's episodes, results and report.

    Cells are fanned out to `cfg.workers` local processes or Ray actors (`CellRunner`), each running whole
    cells with its own twins; `world`, a prebuilt twin of the scene, is used by a single local worker (tests
    pass one).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from common.pool import WorkerPool

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_sweep(cfg, out)
    cells = cfg.cells()
    local = CellRunner(cfg, world) if cfg.workers == 1 and cfg.backend == "local" else None
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with (
        WorkerPool(
            "policy_eval.perturb:CellRunner.from_json",
            (cfg.model_dump_json(),),
            workers=cfg.workers,
            backend=cfg.backend,
            address=cfg.ray_address,
            local=local,
        ) as pool,
        Progress(*columns, disable=not progress, transient=False) as bar,
    ):
        task = bar.add_task(
            f"perturbation cells in {cfg.world} ({len(cfg.policies)} policies x {cfg.episodes} seeds each)",
            total=len(cells),
        )
        for _ in pool.map_unordered("run", list(range(len(cells)))):
            bar.advance(task)
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for p in cells:
        name = CONTROL if p is None else p.cell
        log = EpisodeLog(Path(cfg.cell_config(p).out) / "episodes.jsonl")
        by_cell[name] = [{**r, "cell": name} for r in unique_rows(log.read())]
    rows = [r for rs in by_cell.values() for r in rs]
    atomic_write_text(out / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    results = summarise_sweep(cfg, by_cell)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    from policy_eval.perturb_report import write_sweep_report

    write_sweep_report(out, results, cfg)
    return results


def harm_table(results: dict[str, Any], limit: int = 12) -> Any:
    """The (policy, cell) pairs whose success fell most against the control, with paired intervals."""
    from rich.table import Table

    t = Table(
        title=f"{results['scene']} in {results['world']}: largest drops against the control (paired over seeds)"
    )
    t.add_column("policy", no_wrap=True)
    t.add_column("cell", overflow="fold")
    for col in ("ctrl", "pert", "diff", "95% CI", "sig"):
        t.add_column(col, justify="right", no_wrap=True)
    ctrl = results["cells"][CONTROL]["policies"]
    for h in results["most_harmful"][:limit]:
        cell = results["cells"][h["cell"]]["policies"][h["policy"]]
        t.add_row(
            h["policy"],
            h["cell"],
            f"{ctrl[h['policy']]['success_rate']:.2f}",
            f"{cell['success_rate']:.2f}",
            f"{h['value']:+.2f}",
            f"[{h['ci_low']:+.2f}, {h['ci_high']:+.2f}]",
            "*" if h["significant"] else "",
        )
    return t
