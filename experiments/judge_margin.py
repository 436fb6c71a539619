"""Can the imagined success verdict be calibrated? A margin on the success region, chosen on one seed range.

    python experiments/judge_margin.py --model runs/wm_physics/model \
        [--choose-seed 2000 --choose-episodes 30 --report-seed 4000 --report-episodes 50]

The world model's verdict is the scene's `object_in_region` predicate on the imagined cube. Here every
imagined episode runs to its last step (no stop at success) and records how deep inside the target
region the cube came (the smallest distance to the region's edges, negative outside). An episode
stopped at the first success would have followed the same trajectory up to that step, so the verdict
of a region grown or shrunk by a margin m is `depth >= m` for every m at once. The margin is chosen on
the choose range (the smallest sum of normalised shortfalls from Pearson >= 0.95, MMRV <= 0.03 and
MAE <= 0.07, as `benchmarks/evaluator_fidelity.py` chooses), then applied once to the report range.
Ground truth: the twin runs `benchmarks/evaluator_fidelity.py` wrote for the same seeds
(`--twin-choose`, `--twin-report`). Writes experiments/results/judge_margin.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"pearson": 0.95, "mmrv": 0.03, "mae": 0.07}


def shortfall(m: dict[str, float]) -> float:
    """Sum of normalised shortfalls from the agreement targets (0 when all are met)."""
    p = m["pearson"] if np.isfinite(m["pearson"]) else -1.0
    return (
        max(0.0, TARGETS["pearson"] - p) / 0.05
        + max(0.0, m["mmrv"] - TARGETS["mmrv"]) / TARGETS["mmrv"]
        + max(0.0, m["mae"] - TARGETS["mae"]) / TARGETS["mae"]
    )


def region_depth(env_states: list[np.ndarray], params: Any) -> float:
    """The deepest the first object's centre came inside the target rectangle: the largest margin of the
    scene's `object_in_region` predicate (metres; negative: never inside)."""
    from scenes.predicates import object_in_region_margin

    poses = [{params.object: (e[:3].astype(np.float64), e[3:7].astype(np.float64))} for e in env_states]
    return max(object_in_region_margin(params, p, p) for p in poses)


def imagine(
    model: str, config: str, policies: list[str], seed: int, episodes: int, batch: int
) -> dict[str, list[float]]:
    """Per policy, each seed's deepest imagined region depth (episodes run to their last step)."""
    from policy_eval.evaluate import load_eval_config
    from policy_eval.policies.base import make_policy, policy_info
    from policy_eval.runner import rollout_batch
    from policy_eval.worlds import ImaginedWorld, make_world
    from scenes.spec import load_scene_spec

    cfg = load_eval_config(config, {"episodes": episodes, "seed": seed})
    spec = load_scene_spec(cfg.scene, cfg.scene_overrides)
    assert spec.task.success is not None and spec.task.success.name == "object_in_region"
    params = spec.task.success.typed_params()
    world = make_world(f"worldmodel:{model}", spec, samples=cfg.samples, sampler_steps=cfg.sampler_steps)
    assert isinstance(world, ImaginedWorld)
    world.video.stop_on_success = False
    pairs = [(p, s) for p in policies for s in range(seed, seed + episodes)]
    depth: dict[str, list[float]] = {p: [] for p in policies}
    for i in range(0, len(pairs), batch):
        part = pairs[i : i + batch]
        eps = rollout_batch(
            world,
            [make_policy(p, spec, seed=seed) for p, _ in part],  # as the evaluation job makes them
            [s for _, s in part],
            policy_ids=[p for p, _ in part],
            privileged=[policy_info(p).privileged for p, _ in part],
        )
        for (p, _), ep in zip(part, eps, strict=True):
            env = [st.observation.environment_state for st in ep.steps]
            depth[p].append(region_depth([e for e in env if e is not None], params))
    return depth


def twin_outcomes(run: Path, policies: list[str], seed: int, episodes: int) -> list[list[bool]]:
    rows = {
        (r["policy"], r["seed"]): bool(r["success"]) for r in map(json.loads, (run / "episodes.jsonl").open())
    }
    missing = [(p, s) for p in policies for s in range(seed, seed + episodes) if (p, s) not in rows]
    if missing:
        raise SystemExit(
            f"{run}: no twin episodes for {missing[:3]}...; run benchmarks/evaluator_fidelity.py first"
        )
    return [[rows[(p, s)] for s in range(seed, seed + episodes)] for p in policies]


def agreement(depth: dict[str, list[float]], real: list[list[bool]], margin: float) -> dict[str, Any]:
    from policy_eval.metrics import AGREEMENT

    pred = [float(np.mean(np.asarray(d) >= margin)) for d in depth.values()]
    rate = [float(np.mean(r)) for r in real]
    return {k: float(f(pred, rate)) for k, f in AGREEMENT.items()} | {
        "imagined_success": dict(zip(depth, pred, strict=True))
    }


def main() -> None:
    from policy_eval.evaluate import load_eval_config
    from policy_eval.metrics import bootstrap_agreement

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", default=str(ROOT / "configs/eval/demo.yaml"))
    ap.add_argument("--choose-seed", type=int, default=2000)
    ap.add_argument("--choose-episodes", type=int, default=30)
    ap.add_argument("--report-seed", type=int, default=4000)
    ap.add_argument("--report-episodes", type=int, default=50)
    ap.add_argument("--twin-choose", default=str(ROOT / "runs/evaluator_fidelity/choose_2000_30/twin"))
    ap.add_argument("--twin-report", default=str(ROOT / "runs/evaluator_fidelity/report_4000_50/twin"))
    ap.add_argument("--margins-cm", default="-3:3:0.25", help="LOW:HIGH:STEP in cm")
    ap.add_argument("--batch", type=int, default=56)
    add_result_arguments(ap, ROOT / "experiments/results", "judge_margin")
    args = ap.parse_args()
    if (
        args.choose_seed + args.choose_episodes > args.report_seed
        and args.report_seed + args.report_episodes > args.choose_seed
    ):
        raise SystemExit("choose and report seed ranges overlap")
    policies = load_eval_config(args.config, {}).policies
    lo, hi, step = (float(x) for x in args.margins_cm.split(":"))
    margins = [round(m, 4) for m in np.arange(lo, hi + step / 2, step) / 100]
    console = Console()
    choose = imagine(args.model, args.config, policies, args.choose_seed, args.choose_episodes, args.batch)
    real_c = twin_outcomes(Path(args.twin_choose), policies, args.choose_seed, args.choose_episodes)
    sweep = [{"margin_m": m, **agreement(choose, real_c, m)} for m in margins]
    for r in sweep:
        r["shortfall"] = shortfall(r)
    best = min(sweep, key=lambda r: (r["shortfall"], abs(r["margin_m"])))
    table = Table(title=f"choose range {args.choose_seed}..{args.choose_seed + args.choose_episodes - 1}")
    for c in ("margin cm", "Pearson", "MMRV", "MAE", "shortfall"):
        table.add_column(c, justify="right")
    for r in sweep:
        mark = " *" if r is best else ""
        table.add_row(
            f"{100 * r['margin_m']:+.2f}{mark}",
            f"{r['pearson']:.3f}",
            f"{r['mmrv']:.3f}",
            f"{r['mae']:.3f}",
            f"{r['shortfall']:.2f}",
        )
    console.print(table)
    report = imagine(args.model, args.config, policies, args.report_seed, args.report_episodes, args.batch)
    real_r = twin_outcomes(Path(args.twin_report), policies, args.report_seed, args.report_episodes)
    reported: dict[str, Any] = {}
    for name, m in (("chosen_margin", best["margin_m"]), ("no_margin", 0.0)):
        pred = [list(np.asarray(report[p]) >= m) for p in policies]
        boot = bootstrap_agreement(pred, real_r, n_boot=2000)
        reported[name] = {
            "margin_m": m,
            "metrics": boot,
            "imagined_success": {p: float(np.mean(o)) for p, o in zip(policies, pred, strict=True)},
            "per_episode_agreement": float(
                np.mean(
                    [a == b for po, ro in zip(pred, real_r, strict=True) for a, b in zip(po, ro, strict=True)]
                )
            ),
        }
        b = boot
        console.print(
            f"report range, margin {100 * m:+.2f} cm: Pearson {b['pearson']['value']:.3f} "
            f"[{b['pearson']['low']:.2f}, {b['pearson']['high']:.2f}], MMRV {b['mmrv']['value']:.3f}, "
            f"MAE {b['mae']['value']:.3f} [{b['mae']['low']:.2f}, {b['mae']['high']:.2f}]"
        )
    result = {
        "experiment": "judge_margin",
        "model": args.model,
        "policies": policies,
        "choose_seeds": [args.choose_seed, args.choose_seed + args.choose_episodes - 1],
        "report_seeds": [args.report_seed, args.report_seed + args.report_episodes - 1],
        "twin_success": {
            "choose": {p: float(np.mean(o)) for p, o in zip(policies, real_c, strict=True)},
            "report": {p: float(np.mean(o)) for p, o in zip(policies, real_r, strict=True)},
        },
        "choose_sweep": sweep,
        "chosen_margin_m": best["margin_m"],
        "report": reported,
    }
    write_result(args.name, result, args.results_dir)


if __name__ == "__main__":
    main()
