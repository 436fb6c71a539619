"""Offline policy evaluation job: every policy on the same seeds, success rates with Wilson CIs.

    dreamtwin eval --scene configs/scenes/push_cube.yaml --policies image_expert,image_mild \
        --world twin --episodes 10 --seed 0 --out runs/eval

Writes into `out/`:
- `config.json`: the resolved job config (a rerun must match it),
- `episodes.jsonl`: one line per finished episode, appended and fsynced as it finishes — a rerun
  of the same command skips what is there (resume),
- `results.json`: per policy `{success_rate, ci_low, ci_high, n, successes, mean_length}` plus the
  ranking, written atomically,
- `videos/<policy>.mp4`: the first episode of every policy.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from policy_eval.metrics import wilson_interval
from scenes.config import Strict, atomic_write_text, load_model
from scenes.errors import DreamTwinError, SpecError

RESULTS_VERSION = 1


class EvalConfig(Strict):
    scene: str = Field(description="SceneSpec YAML path")
    policies: list[str] = Field(min_length=1, description="registered policy names")
    world: Literal["twin"] = "twin"
    episodes: int = Field(10, ge=1)
    seed: int = Field(0, ge=0, description="episode i uses seed + i for every policy")
    out: str = "runs/eval"
    videos: bool = True
    render: bool = True

    @field_validator("policies")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from policy_eval.policies import POLICIES

        unknown = [p for p in v if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policies {unknown}; registered: {', '.join(POLICIES.names())}")
        if len(set(v)) != len(v):
            raise ValueError(f"policies listed twice: {v}")
        return v

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.episodes)]


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
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def summarise(rows: list[dict[str, Any]], policies: list[str]) -> dict[str, Any]:
    per_policy = {}
    for p in policies:
        mine = [r for r in rows if r["policy"] == p]
        n, k = len(mine), sum(bool(r["success"]) for r in mine)
        lo, hi = wilson_interval(k, n)
        per_policy[p] = {
            "success_rate": k / n if n else 0.0,
            "ci_low": lo,
            "ci_high": hi,
            "n": n,
            "successes": k,
            "mean_length": sum(r["length"] for r in mine) / n if n else 0.0,
        }
    ranking = sorted(policies, key=lambda p: (-per_policy[p]["success_rate"], -per_policy[p]["ci_low"], p))
    return {"version": RESULTS_VERSION, "policies": per_policy, "ranking": ranking}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("dreamtwin", "genesis-world", "torch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def run_eval(cfg: EvalConfig, *, progress: bool = True, world: Any = None) -> dict[str, Any]:
    """Run (or resume) the evaluation described by `cfg`; returns the results dict.

    `world` may be a prebuilt World for the same scene (tests reuse one twin); by default the job
    builds the one `cfg.world` names.
    """
    from policy_eval.policies import POLICIES, make_policy
    from policy_eval.runner import rollout
    from policy_eval.video import write_mp4
    from scenes.spec import load_scene_spec

    spec = load_scene_spec(cfg.scene)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {"job": "eval", "config": cfg.model_dump(mode="json"), "scene_hash": spec.hash()}
    cfg_path = out / "config.json"
    if cfg_path.exists():
        previous = json.loads(cfg_path.read_text())
        if {k: previous.get(k) for k in resolved} != resolved:
            raise DreamTwinError(
                f"{out} holds results of a different evaluation (config.json differs); use another --out"
            )
    else:
        atomic_write_text(cfg_path, json.dumps({**resolved, "versions": _versions()}, indent=2))

    log = EpisodeLog(out / "episodes.jsonl")
    log.repair()
    done = {(r["policy"], r["seed"]) for r in log.read()}
    todo = [(p, s) for p in cfg.policies for s in cfg.seeds() if (p, s) not in done]

    if todo:
        if world is None:
            from scenes.twin import DigitalTwin

            world = DigitalTwin(spec, render=cfg.render)
        policies = {p: make_policy(p, spec, seed=cfg.seed) for p in cfg.policies}
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("episodes", total=len(todo))
            for policy_name, seed in todo:
                bar.update(task, description=f"{policy_name} seed {seed}")
                t0 = time.perf_counter()
                ep = rollout(
                    world, policies[policy_name], seed,
                    policy_id=policy_name, privileged=POLICIES.get(policy_name).privileged,
                    scene_hash=spec.hash(),
                )
                video = out / "videos" / f"{policy_name}.mp4"
                if cfg.videos and cfg.render and spec.cameras and not video.exists():
                    write_mp4(video, ep.frames(spec.cameras[0].name), fps=spec.control.rate_hz)
                log.append({**ep.summary(), "policy": policy_name, "seconds": time.perf_counter() - t0})
                bar.advance(task)

    results = summarise(log.read(), cfg.policies)
    results.update(scene=spec.name, scene_hash=spec.hash(), seeds=cfg.seeds(), world=cfg.world)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    return results


def ranked_table(results: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"{results.get('scene', '')}: success rate with Wilson 95% interval")
    for col in ("rank", "policy", "success", "95% CI", "n", "mean steps"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for i, p in enumerate(results["ranking"], 1):
        r = results["policies"][p]
        table.add_row(
            str(i), p, f"{r['success_rate']:.2f}", f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            str(r["n"]), f"{r['mean_length']:.1f}",
        )
    return table


def designed_order_note(ranking: list[str]) -> str | None:
    """Compare a ranking with the policies' designed skill order, when every policy has one."""
    from policy_eval.policies import POLICIES

    ranks = {p: POLICIES.get(p).skill_rank for p in ranking}
    if len(ranking) < 2 or any(r is None for r in ranks.values()):
        return None
    designed = sorted(ranking, key=lambda p: ranks[p])
    verdict = "matches" if designed == ranking else "differs from"
    return f"this ranking {verdict} the designed skill order: {' > '.join(designed)}"
