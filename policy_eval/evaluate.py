"""Offline policy evaluation job: every policy on the same seeds, in the twin or an imagined world.

    dreamtwin eval --scene configs/scenes/push_cube.yaml --policies image_expert,bc_final \
        --world twin --episodes 50 --seed 0 --out runs/eval_twin
    dreamtwin eval --config configs/eval/demo.yaml --world worldmodel:assets/worldmodels/push_cube_tiny \
        --ground-truth runs/eval_twin --report --out runs/eval_wm

Writes into `out/`:
- `config.json`: the resolved job config (a rerun must match it),
- `episodes.jsonl`: one line per finished episode, appended and fsynced as it finishes — a rerun
  of the same command skips what is there (resume); a killed run loses at most the episodes in flight,
- `results.json`: per policy `{success_rate, ci_low, ci_high, n, successes, mean_length, ...}`, the
  ranking, and with `ground_truth` a `metrics` object (Pearson, Spearman, Kendall, MMRV with
  bootstrap intervals), written atomically,
- `videos/<policy>.mp4` (first seed), `strips/<policy>/seed-<s>.png` (first `strips` seeds),
- `report.html` with `report: true`.

Episodes run in rounds of seeds; with `adaptive`, a policy stops getting new rounds once its Wilson
interval's half-width is under `adaptive.half_width`. Within a round, episodes are grouped into
batches (one forward pass per step in an imagined world) and fanned out to `workers` local
processes or Ray actors, each with its own world. Episode (policy, seed) is deterministic, so the
results do not depend on workers or interruptions, nor on batching in float32; bfloat16 imagination
rounds differently in large batches (64 and up on CPU) and can change a few outcomes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from common.config import Strict, load_model
from common.errors import DreamTwinError, SpecError
from common.io import append_jsonl, atomic_write_text, read_json
from common.machine import machine_fingerprint
from common.types import BatchedWorld, Episode, World
from policy_eval.metrics import wilson_interval
from scenes.perturbations import Perturbation

if TYPE_CHECKING:
    from rich.table import Table

    from scenes.spec import SceneSpec

RESULTS_VERSION = 2
# settings that decide where and how fast a job runs, not what it computes (left out of the fingerprint)
RUN_SETTINGS = ("out", "workers", "backend", "ray_address", "batch_size", "ground_truth", "report")


class AdaptiveStop(Strict):
    half_width: float = Field(
        gt=0, le=0.5, description="stop a policy when its 95% interval's half-width is below this"
    )
    min_episodes: int = Field(10, ge=1, description="never stop a policy before this many episodes")
    round: int = Field(10, ge=1, description="seeds per round; stopping is decided between rounds")


class TrustSettings(Strict):
    enabled: bool = Field(
        True, description="score imagined episodes with the world model's trust.json when it has one"
    )
    calibration: str | None = Field(None, description="another trust.json (policy_eval.trust) to score with")
    fallback: Literal["none", "twin"] = Field(
        "none", description="re-run untrusted imagined episodes in the twin (out/fallback/)"
    )


class EvalConfig(Strict):
    scene: str = Field(description="SceneSpec YAML path")
    scene_overrides: dict[str, Any] = Field(
        {}, description="dotted-key overrides of the scene, e.g. cameras.0.resolution"
    )
    policies: list[str] = Field(min_length=1, description="registered policy names or checkpoint directories")
    world: str = Field("twin", description="twin | worldmodel:PATH | ensemble:PATH")
    episodes: int = Field(10, ge=1)
    seed: int = Field(0, ge=0, description="episode i uses seed + i for every policy")
    out: str = "runs/eval"
    videos: bool = True
    render: bool = True
    strips: int = Field(2, ge=0, description="episodes per policy kept as frame strips for the report")
    samples: int | None = Field(
        None, ge=1, description="world model: samples per step (default: the model's)"
    )
    sampler_steps: int | None = Field(
        None, ge=1, description="world model: denoising steps (default: the model's)"
    )
    sampler_spacing: Literal["diffusers", "uniform"] | None = Field(
        None,
        description="world model: where the denoising steps fall (default: the model's; see SamplerConfig)",
    )
    sampler_precision: Literal["float32", "bfloat16"] | None = Field(
        None, description="world model: number format of the network passes (default: the model's)"
    )
    adaptive: AdaptiveStop | None = None
    batch_size: int = Field(32, ge=1, description="episodes per forward pass in an imagined world")
    workers: int = Field(1, ge=1)
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ground_truth: str | None = Field(None, description="an eval output directory in the ground-truth world")
    report: bool = False
    trust: TrustSettings = Field(default_factory=TrustSettings)
    perturbation: Perturbation | None = Field(
        None, description="one level of one perturbation axis applied to every episode (policy_eval.perturb)"
    )

    @field_validator("policies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from policy_eval.policies import policy_info

        for p in v:
            policy_info(p)  # raises naming the unknown policy and the registered ones
        if len(set(v)) != len(v):
            raise ValueError(f"policies listed twice: {v}")
        return v

    @field_validator("world")
    @classmethod
    def _world(cls, v: str) -> str:
        from policy_eval.worlds import parse_world

        return str(parse_world(v))

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.episodes)]

    def fingerprint(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(RUN_SETTINGS))

    def load_scene(self, structure: bool = True) -> SceneSpec:
        """The scene the world is built from (with a perturbation's added bodies, if any; without them when
        `structure` is False)."""
        from scenes.spec import load_scene_spec

        spec = load_scene_spec(self.scene, dict(self.scene_overrides) or None)
        return spec if self.perturbation is None or not structure else self.perturbation.structure(spec)

    def trust_file(self) -> Path | None:
        """The trust.json that scores this evaluation's imagined episodes, if any."""
        from policy_eval.trust import world_trust_file
        from policy_eval.worlds import parse_world

        if not self.trust.enabled or parse_world(self.world).kind != "worldmodel":
            return None
        if self.trust.calibration is not None:
            return Path(self.trust.calibration)
        return world_trust_file(self.world)


def load_eval_config(path: str | Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
    return load_model(EvalConfig, path, overrides)


class EpisodeLog:
    """Append-only JSON-lines log of finished episodes; a torn last line (crash) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        lines = self.path.read_text().splitlines()
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise SpecError(f"{self.path}: line {i + 1} is corrupted (not JSON)") from None
        return rows

    def repair(self) -> None:
        """Drop a torn trailing line so that appends start on a clean line."""
        if self.path.exists():
            good = [json.dumps(r) for r in self.read()]
            atomic_write_text(self.path, "".join(g + "\n" for g in good))

    def append(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path, row)


def unique_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (policy, seed): the first logged (a rerun never appends a finished episode, but a
    log assembled by hand might)."""
    seen, out = set(), []
    for r in rows:
        key = (r["policy"], r["seed"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def summarise(rows: list[dict[str, Any]], policies: list[str]) -> dict[str, Any]:
    per_policy = {}
    rows = unique_rows(rows)
    for p in policies:
        mine = sorted((r for r in rows if r["policy"] == p), key=lambda r: r["seed"])
        n, k = len(mine), sum(bool(r["success"]) for r in mine)
        lo, hi = wilson_interval(k, n)
        entry = {
            "success_rate": k / n if n else 0.0,
            "ci_low": lo,
            "ci_high": hi,
            "n": n,
            "successes": k,
            "mean_length": sum(r["length"] for r in mine) / n if n else 0.0,
        }
        for key in ("success_prob", "uncertainty", "trust"):  # imagined worlds report these per episode
            vals = [r[key] for r in mine if r.get(key) is not None]
            if vals:
                entry[f"mean_{key}"] = float(np.mean(vals))
        if any("trusted" in r for r in mine):
            kept = [r for r in mine if r.get("trusted", True)]
            trusted: dict[str, Any] = {
                "n": len(kept),
                "set_aside": n - len(kept),
                "success_rate": sum(bool(r["success"]) for r in kept) / len(kept) if kept else None,
            }
            fell_back = [r for r in mine if not r.get("trusted", True)]
            if fell_back and all("fallback_success" in r for r in fell_back):
                final = [bool(r.get("fallback_success", r["success"])) for r in mine]
                trusted["with_fallback"] = float(np.mean(final))
            entry["trusted"] = trusted
        per_policy[p] = entry
    ranking = sorted(policies, key=lambda p: (-per_policy[p]["success_rate"], -per_policy[p]["ci_low"], p))
    return {"version": RESULTS_VERSION, "policies": per_policy, "ranking": ranking}


def robot_summary(ep: Episode) -> dict[str, Any]:
    """On a robot: why the episode was stopped (if it was), its safety interventions, policy latency, and
    `success_known: False` where neither the robot nor a person judged the outcome."""
    out: dict[str, Any] = {}
    lat = [st.info["latency_s"] for st in ep.steps if "latency_s" in st.info]
    if lat:
        out["policy_latency_ms"] = {"mean": 1000 * float(np.mean(lat)), "max": 1000 * float(np.max(lat))}
    notes = [n for st in ep.steps for n in st.info.get("interventions", [])]
    if lat or notes:
        out["interventions"] = notes
    stopped = next((st.info["stopped"] for st in ep.steps if "stopped" in st.info), None)
    if stopped is not None:
        out["stopped"] = stopped
    if ep.steps and ep.steps[-1].info.get("success_known") is False:  # nobody judged it: not a failure
        out["success_known"] = False
    return out


def slug(policy: str) -> str:
    """A file-name-safe form of a policy name or checkpoint path."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in policy.strip("/")).strip("._") or "policy"


# ---------------------------------------------------------------------- executing episodes
class Evaluator:
    """Runs batches of (policy, seed) episodes in one world and writes their media; one per worker."""

    def __init__(self, cfg: EvalConfig, world: World | BatchedWorld | None = None) -> None:
        from policy_eval.policies import policy_info

        self.cfg = cfg
        self.spec = cfg.load_scene()
        self.out = Path(cfg.out)
        self.infos = {p: policy_info(p) for p in cfg.policies}
        # a learned world knows the objects of the scene it was trained in: bodies a perturbation adds are
        # in its first frame, but not in its state, its success judge or its trust score
        self.judge_spec = self.spec if cfg.world == "twin" else self._known_objects(self.spec)
        # a batched world is used as given; a twin (or any World) is wrapped in cfg.world
        self.world = world if isinstance(world, BatchedWorld) else self._make_world(world)
        trust = cfg.trust_file()
        if trust is not None:
            from policy_eval.trust import TrustChecker

            self.trust: TrustChecker | None = TrustChecker.load(trust, self.judge_spec)
        else:
            self.trust = None

    def _make_world(self, twin: World | None) -> World | BatchedWorld:
        """`cfg.world` around `twin` (built when None); a perturbed evaluation's twin is dressed as each
        seed's perturbed scene at reset, and an imagined world gets the perturbed scene's physics."""
        from policy_eval.worlds import make_world

        cfg, spec = self.cfg, self.spec
        world_spec = spec
        if cfg.perturbation is not None:
            from policy_eval.perturb import PerturbedTwin
            from scenes.twin import DigitalTwin

            if twin is None:
                twin = DigitalTwin(spec, render=cfg.render or cfg.world.startswith("worldmodel"))
            known = None if cfg.world == "twin" else len(self.judge_spec.objects)
            twin = PerturbedTwin(twin, spec, cfg.perturbation, objects=known)
            world_spec = self._known_objects(cfg.perturbation.apply(spec, cfg.seed)[0])
        elif twin is not None and hasattr(twin, "set_variant") and getattr(twin, "spec", spec) != spec:
            twin.set_variant(spec)  # a shared twin left dressed as another evaluation's variant
        return make_world(
            cfg.world,
            world_spec,
            render=cfg.render,
            twin=twin,
            samples=cfg.samples,
            sampler_steps=cfg.sampler_steps,
            sampler_spacing=cfg.sampler_spacing,
            sampler_precision=cfg.sampler_precision,
        )

    def _known_objects(self, spec: SceneSpec) -> SceneSpec:
        """`spec` with only the unperturbed scene's objects (a perturbation appends its bodies after them)."""
        n = len(self.cfg.load_scene(structure=False).objects)
        return spec if len(spec.objects) == n else spec.model_copy(update={"objects": spec.objects[:n]})

    @classmethod
    def from_json(cls, cfg_json: str) -> Evaluator:
        return cls(EvalConfig.model_validate_json(cfg_json))

    def run(self, pairs: list[tuple[str, int]]) -> list[dict[str, Any]]:
        from policy_eval.events import failure_events

        t0 = time.perf_counter()
        episodes = self.episodes(pairs)
        scores = self.trust.score(episodes) if self.trust is not None else [{} for _ in episodes]
        seconds = (time.perf_counter() - t0) / max(len(pairs), 1)
        rows = []
        for (p, s), ep, score in zip(pairs, episodes, scores, strict=True):
            self._media(p, s, ep)
            row = {**ep.summary(), "policy": p, "seconds": seconds}
            last = ep.steps[-1].info if ep.steps else {}
            if "success_prob" in last:
                row["success_prob"] = float(last["success_prob"])
            unc = [st.info["uncertainty"] for st in ep.steps if "uncertainty" in st.info]
            if unc:
                row["uncertainty"] = float(np.mean(unc))
            row.update(score)
            row.update(robot_summary(ep))
            row["events"] = failure_events(self.judge_spec, ep)
            rows.append(row)
        return rows

    def episodes(self, pairs: list[tuple[str, int]]) -> list[Episode]:
        """Roll out (policy, seed) pairs in this evaluator's world (one batch in an imagined world)."""
        from policy_eval import runner

        policies = [self._policy(p) for p, _ in pairs]
        if isinstance(self.world, BatchedWorld):
            episodes = runner.rollout_batch(
                self.world,
                policies,
                [s for _, s in pairs],
                policy_ids=[p for p, _ in pairs],
                privileged=[self.infos[p].privileged for p, _ in pairs],
                scene_hash=self.spec.hash(),
            )
        else:
            episodes = [
                runner.rollout(
                    self.world,
                    policy,
                    s,
                    policy_id=p,
                    privileged=self.infos[p].privileged,
                    scene_hash=self.spec.hash(),
                )
                for (p, s), policy in zip(pairs, policies, strict=True)
            ]
        pert = self.cfg.perturbation
        if pert is not None:
            for (_, s), ep in zip(pairs, episodes, strict=True):
                ep.perturbation = {
                    "axis": pert.axis,
                    "level": pert.level,
                    "type": pert.change.type,
                    "change": pert.change.model_dump(mode="json", exclude={"type"}),
                    "params": pert.apply(self.spec, s)[1],
                }
        return episodes

    def _policy(self, name: str) -> Any:
        """The policy `name`, seeing and acting through the perturbed stream when that is what is perturbed."""
        from policy_eval.policies import make_policy

        policy = make_policy(name, self.spec, seed=self.cfg.seed)
        pert = self.cfg.perturbation
        if pert is not None and pert.stream is not None:
            from policy_eval.perturb import PerturbedPolicy

            return PerturbedPolicy(policy, pert.stream, self.spec, pert.axis)
        return policy

    def _media(self, policy: str, seed: int, ep: Episode) -> None:
        from common.video import VideoSettings, encode_video

        if not (self.cfg.render and self.spec.cameras):
            return
        cam = self.spec.cameras[0].name
        index = seed - self.cfg.seed
        if self.cfg.videos and index == 0:
            encode_video(
                ep.frames(cam),
                self.out / "videos" / f"{slug(policy)}.mp4",
                self.spec.control.rate_hz,
                VideoSettings(codec="libx264", crf=18),
            )
        if index < self.cfg.strips:
            write_strip(self.out / "strips" / slug(policy) / f"seed-{seed}.png", ep.frames(cam))


def write_strip(path: Path, frames: np.ndarray, count: int = 8) -> None:
    """Save `count` evenly spaced frames side by side as one PNG (atomically)."""
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    strip = np.concatenate([frames[i] for i in idx], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(strip).save(tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- the job
def _check_out(cfg: EvalConfig, spec: Any, out: Path) -> None:
    from policy_eval.worlds import parse_world, world_fingerprint

    resolved = {
        "job": "eval",
        "config": cfg.fingerprint(),
        "scene_hash": spec.hash(),
        # the weights, not just the path: a checkpoint retrained in place must not resume old episodes
        "world_hash": world_fingerprint(parse_world(cfg.world)),
    }
    cfg_path = out / "config.json"
    if cfg_path.exists():
        previous = json.loads(cfg_path.read_text())
        if isinstance(previous.get("config"), dict):  # a field added since at its default is the same job
            fields = EvalConfig.model_fields
            previous["config"] = {
                **{
                    k: v
                    for k, v in resolved["config"].items()
                    if k in fields
                    and not fields[k].is_required()
                    and v == fields[k].get_default(call_default_factory=True)
                },
                **previous["config"],
            }
        if {k: previous.get(k) for k in resolved} != resolved:
            names = {
                "config": "config",
                "scene_hash": "scene",
                "world_hash": "world-model weights",
                "job": "job",
            }
            what = ", ".join(names[k] for k in resolved if previous.get(k) != resolved[k])
            raise DreamTwinError(
                f"{out} holds results of a different evaluation ({what} differ); use another --out"
            )
    else:
        atomic_write_text(cfg_path, json.dumps({**resolved, "machine": machine_fingerprint()}, indent=2))


def stopped_policies(cfg: EvalConfig, rows: list[dict[str, Any]], upto_seed: int) -> set[str]:
    """Policies whose interval, over the episodes with seed < upto_seed, is narrow enough to stop."""
    if cfg.adaptive is None:
        return set()
    out = set()
    for p in cfg.policies:
        mine = [r for r in rows if r["policy"] == p and r["seed"] < upto_seed]
        n, k = len(mine), sum(bool(r["success"]) for r in mine)
        lo, hi = wilson_interval(k, n)
        if n >= cfg.adaptive.min_episodes and (hi - lo) / 2 < cfg.adaptive.half_width:
            out.add(p)
    return out


def _rounds(cfg: EvalConfig) -> Iterator[list[int]]:
    seeds = cfg.seeds()
    size = cfg.adaptive.round if cfg.adaptive else len(seeds)
    for i in range(0, len(seeds), size):
        yield seeds[i : i + size]


def evaluator_pool(cfg: EvalConfig, world: World | BatchedWorld | None) -> Any:
    """The worker pool that runs `cfg`'s episodes: one `Evaluator` per worker (in this process around
    `world` when one is given)."""
    from common.pool import WorkerPool

    return WorkerPool(
        "policy_eval.evaluate:Evaluator.from_json",
        (cfg.model_dump_json(),),
        workers=cfg.workers,
        backend=cfg.backend,
        address=cfg.ray_address,
        local=Evaluator(cfg, world) if world is not None else None,
    )


def run_eval(
    cfg: EvalConfig, *, progress: bool = True, world: World | BatchedWorld | None = None
) -> dict[str, Any]:
    """Run (or resume) the evaluation described by `cfg`; returns the results dict.

    `world` may be a prebuilt World for the same scene (tests reuse one twin; for an imagined world a
    twin is enough, the model is loaded around it); by default each worker builds the one `cfg.world` names.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    spec = cfg.load_scene()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_out(cfg, spec, out)
    log = EpisodeLog(out / "episodes.jsonl")
    log.repair()
    rows = unique_rows(log.read())
    done = {(r["policy"], r["seed"]) for r in rows}
    started = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with (
        evaluator_pool(cfg, world) as pool,
        Progress(*columns, disable=not progress, transient=False) as bar,
    ):
        where = cfg.world + (f", {cfg.perturbation.cell}" if cfg.perturbation else "")
        task = bar.add_task(f"episodes in {where}", total=len(cfg.policies) * cfg.episodes)
        bar.update(task, completed=len(done))
        for seeds in _rounds(cfg):
            stopped = stopped_policies(cfg, rows, seeds[0])
            todo = [(p, s) for s in seeds for p in cfg.policies if p not in stopped and (p, s) not in done]
            bar.update(
                task,
                total=len(cfg.policies) * cfg.episodes
                - sum(cfg.episodes - sum(1 for r in rows if r["policy"] == p) for p in stopped),
            )
            size = cfg.batch_size if (cfg.world != "twin") else 1
            batches = [todo[i : i + size] for i in range(0, len(todo), size)]
            for result in pool.map_unordered("run", batches):
                for row in result:
                    log.append(row)
                    rows.append(row)
                    done.add((row["policy"], row["seed"]))
                bar.advance(task, len(result))

    if cfg.trust.fallback == "twin" and cfg.world != "twin":
        rows = _fallback(cfg, rows, world, progress)
    results = summarise(rows, cfg.policies)
    results.update(
        scene=spec.name,
        scene_hash=spec.hash(),
        seeds=cfg.seeds(),
        world=cfg.world,
        wall_seconds_this_run=time.perf_counter() - started,
        episode_seconds=float(sum(r.get("seconds", 0.0) for r in rows)),
        # the twin's outcomes can depend on the CPU (docs/results.md): say which machine this was
        machine=machine_fingerprint(),
    )
    if cfg.ground_truth:
        results["metrics"] = agreement_with(rows, cfg.policies, Path(cfg.ground_truth))
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    if cfg.report:
        from policy_eval.report import write_report

        write_report(out, results, cfg)
    return results


def _fallback(
    cfg: EvalConfig, rows: list[dict[str, Any]], world: World | BatchedWorld | None, progress: bool
) -> list[dict[str, Any]]:
    """Re-run the untrusted imagined episodes in the twin (resumably, in `out/fallback/`); the rows with
    `fallback_success` added to each untrusted one."""

    if any("trusted" not in r for r in rows):
        raise DreamTwinError(
            f"trust.fallback: twin needs trust scores, and {cfg.world} has no {cfg.trust_file() or 'trust.json'}"
            " (set trust.calibration)"
        )
    out = Path(cfg.out) / "fallback"
    fb = cfg.model_copy(
        update={
            "world": "twin",
            "out": str(out),
            "trust": TrustSettings(enabled=False),
            "ground_truth": None,
            "report": False,
            "adaptive": None,
            "videos": False,
            "strips": 0,
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    log = EpisodeLog(out / "episodes.jsonl")
    log.repair()
    have = {(r["policy"], r["seed"]): r for r in unique_rows(log.read())}
    todo = [
        (r["policy"], r["seed"]) for r in rows if not r["trusted"] and (r["policy"], r["seed"]) not in have
    ]
    if todo:
        if progress:
            print(f"re-running {len(todo)} untrusted episodes in the twin ({out})")
        with evaluator_pool(fb, world) as pool:
            for result in pool.map_unordered("run", [[pair] for pair in todo]):
                for row in result:
                    log.append(row)
                    have[(row["policy"], row["seed"])] = row
    return [
        r if r["trusted"] else {**r, "fallback_success": bool(have[(r["policy"], r["seed"])]["success"])}
        for r in rows
    ]


def load_results(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(results.json, episode rows) of an eval output directory."""
    results = read_json(
        path / "results.json",
        DreamTwinError,
        "not found (ground truth must be a finished `dreamtwin eval` output directory)",
    )
    return results, unique_rows(EpisodeLog(path / "episodes.jsonl").read())


def agreement_with(
    rows: list[dict[str, Any]], policies: list[str], gt_dir: Path, n_boot: int = 2000
) -> dict[str, Any]:
    """Pearson / Spearman / Kendall / MMRV of this run's success rates against a ground-truth run's,
    on the policies and seeds both ran, with a paired bootstrap over seeds for each metric."""
    from policy_eval.metrics import bootstrap_agreement

    gt_results, gt_rows = load_results(gt_dir)
    mine = {(r["policy"], r["seed"]): bool(r["success"]) for r in rows}
    real = {(r["policy"], r["seed"]): bool(r["success"]) for r in gt_rows}
    common = [p for p in policies if any((p, s) in real for (q, s) in mine if q == p)]
    if len(common) < 2:
        raise DreamTwinError(
            f"ground truth {gt_dir} shares fewer than 2 policies (with common seeds) with this evaluation: "
            f"it has {sorted(gt_results.get('policies', {}))}"
        )
    pred_out, real_out, seeds_used = [], [], {}
    for p in common:
        seeds = sorted(s for (q, s) in mine if q == p and (p, s) in real)
        pred_out.append([mine[(p, s)] for s in seeds])
        real_out.append([real[(p, s)] for s in seeds])
        seeds_used[p] = len(seeds)
    boot = bootstrap_agreement(pred_out, real_out, n_boot=n_boot)
    pred_rate = {p: float(np.mean(o)) for p, o in zip(common, pred_out, strict=True)}
    real_rate = {p: float(np.mean(o)) for p, o in zip(common, real_out, strict=True)}
    order = lambda rate: sorted(common, key=lambda p: (-rate[p], p))  # noqa: E731
    return {
        "ground_truth": str(gt_dir),
        "ground_truth_world": gt_results.get("world"),
        "policies": common,
        "episodes_compared": seeds_used,
        "predicted_success": pred_rate,
        "ground_truth_success": real_rate,
        "ranking_predicted": order(pred_rate),
        "ranking_ground_truth": order(real_rate),
        "per_episode_agreement": float(
            np.mean(
                [
                    a == b
                    for po, ro in zip(pred_out, real_out, strict=False)
                    for a, b in zip(po, ro, strict=False)
                ]
            )
        ),
        **{
            k: {"value": _finite(v["value"]), "ci_low": _finite(v["low"]), "ci_high": _finite(v["high"])}
            for k, v in boot.items()
        },
    }


def _finite(x: float) -> float | None:
    """NaN (a metric undefined, e.g. a correlation when every rate is equal) as JSON null."""
    return None if x is None or not np.isfinite(x) else float(x)


def ranked_table(results: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title=f"{results.get('scene', '')}: success rate with Wilson 95% interval")
    for col in ("rank", "policy", "success", "95% CI", "n", "mean steps"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for i, p in enumerate(results["ranking"], 1):
        r = results["policies"][p]
        table.add_row(
            str(i),
            p,
            f"{r['success_rate']:.2f}",
            f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            str(r["n"]),
            f"{r['mean_length']:.1f}",
        )
    return table


def trust_table(results: dict[str, Any]) -> Table | None:
    """Per policy: imagined success over all and over trusted episodes, how many were set aside (and the
    success with the twin's verdicts for those, after a fallback); None without trust scores."""
    from rich.table import Table

    pol = results["policies"]
    if not any("trusted" in r for r in pol.values()):
        return None
    fallback = any("with_fallback" in r["trusted"] for r in pol.values() if "trusted" in r)
    table = Table(title="trust in the imagined episodes (policy_eval.trust)")
    cols = ["policy", "all episodes", "trusted only", "set aside", "mean trust"]
    for col in cols + (["with twin fallback"] if fallback else []):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for p in results["ranking"]:
        r, t = pol[p], pol[p].get("trusted", {})
        rate = t.get("success_rate")
        row = [
            p,
            f"{r['success_rate']:.2f} ({r['n']})",
            f"{'-' if rate is None else f'{rate:.2f}'} ({t.get('n', 0)})",
            str(t.get("set_aside", 0)),
            f"{r.get('mean_trust', float('nan')):.2f}",
        ]
        if fallback:
            row.append(f"{t['with_fallback']:.2f}" if "with_fallback" in t else "")
        table.add_row(*row)
    return table


def designed_order_note(ranking: list[str]) -> str | None:
    """Compare a ranking with the policies' designed skill order, when every policy has one."""
    from policy_eval.policies import POLICIES

    ranks = {p: POLICIES.get(p).skill_rank for p in ranking}
    known = {p: r for p, r in ranks.items() if r is not None}
    if len(ranking) < 2 or len(known) < len(ranking):
        return None
    designed = sorted(ranking, key=lambda p: known[p])
    verdict = "matches" if designed == ranking else "differs from"
    return f"this ranking {verdict} the designed skill order: {' > '.join(designed)}"


def fmt_metric(x: float | None, digits: int = 3) -> str:
    """A metric for display; None (undefined, e.g. a correlation of constant rates) as 'undefined'."""
    return "undefined" if x is None else f"{x:.{digits}f}"


def agreement_table(metrics: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(
        title=f"agreement with ground truth ({metrics.get('ground_truth_world')}, {metrics['ground_truth']})"
    )
    for col in ("metric", "value", "95% bootstrap CI", "target"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    targets = {"pearson": ">= 0.95", "mmrv": "<= 0.03", "mae": "<= 0.07"}
    for k in ("pearson", "spearman", "kendall", "mmrv", "mae"):
        if k not in metrics:  # a results.json written before the metric existed
            continue
        m = metrics[k]
        f = fmt_metric
        table.add_row(k, f(m["value"]), f"[{f(m['ci_low'])}, {f(m['ci_high'])}]", targets.get(k, ""))
    table.caption = (
        f"ranking here: {' > '.join(metrics['ranking_predicted'])}\n"
        f"ground truth: {' > '.join(metrics['ranking_ground_truth'])}"
    )
    return table


def evaluate_in_twin(
    scene: str,
    policies: list[str],
    *,
    episodes: int,
    seed: int,
    out: str | Path,
    workers: int = 1,
    scene_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every policy on seeds seed..seed+episodes-1 in the twin of `scene`, without videos (`dreamtwin eval`,
    resumable in `out`): the evaluation's results (per policy `success_rate`, ...). What experiments that
    train policies evaluate them with."""
    cfg = EvalConfig(
        scene=scene,
        scene_overrides=scene_overrides or {},
        policies=policies,
        episodes=episodes,
        seed=seed,
        out=str(out),
        videos=False,
        strips=0,
        workers=workers,
    )
    return run_eval(cfg)
