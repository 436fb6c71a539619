"""How well does a ranking computed in the video world model agree with the digital twin's, and how fast?

    python benchmarks/evaluator_fidelity.py --purpose choose [--seed 2000 --episodes 30]
    python benchmarks/evaluator_fidelity.py --purpose report [--seed 4000 --episodes 50]
    ... [--model assets/worldmodels/push_cube_tiny] [--sampler 4x1 --sampler 3x1u] [--twin-workers 2]
        [--batch-size 128]

Runs the push_cube policy zoo (configs/eval/demo.yaml's policies) for `--episodes` seeds each in the twin
(ground truth) and in the world model on the same seeds and initial observations, once per `--sampler`
setting (STEPSxSAMPLES[u][-bf16]: flow sampler steps x samples per step; u spaces the steps uniformly from
noise level 1 to 0 instead of diffusers' 1 to 0.001 then 0; -bf16 runs the network passes in bfloat16; see
SamplerConfig), and writes
benchmarks/results/evaluator_fidelity_<purpose>.json: per-policy success in both worlds; Pearson,
Spearman, Kendall, MMRV and the mean absolute success-rate error per policy, with paired bootstrap
intervals over seeds; and the speed of both worlds measured side by side on this machine.

Choose on one seed range and report on another: `--purpose choose` runs are the ones any decision
(checkpoint, sampler, recipe) may look at; `--purpose report` runs a range nothing was chosen on and is
the number to quote. The two ranges must not overlap (checked against the other purpose's result).

Speed is steady-state throughput: control steps per second of episode time (the twin with
`--twin-workers` processes in parallel, the world model batched in one process), without scene builds
and model loading. All runs are resumable (rerun the command).
Targets: Pearson >= 0.95, MMRV <= 0.03, mean absolute error <= 0.07, imagined steps/s >= 2x the twin's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"pearson": 0.95, "mmrv": 0.03, "mae": 0.07, "speedup": 2.0}
DEFAULT_SEED = {"choose": 2000, "report": 4000}
DEFAULT_EPISODES = {"choose": 30, "report": 50}


def parse_sampler(text: str) -> tuple[int, int, str, str]:
    """STEPSxSAMPLES[u][-bf16] -> (sampler steps, samples, spacing, precision): "4x1" -> (4, 1, diffusers,
    float32); "3x1u-bf16" -> (3, 1, uniform, bfloat16)."""
    code = text.lower()
    precision = "bfloat16" if code.endswith("-bf16") else "float32"
    code = code.removesuffix("-bf16")
    spacing = "uniform" if code.endswith("u") else "diffusers"
    try:
        steps, samples = (int(x) for x in code.removesuffix("u").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sampler {text!r}: expected STEPSxSAMPLES[u][-bf16], e.g. 4x1, 3x1u or 4x1-bf16"
        ) from None
    if steps < 1 or samples < 1:
        raise argparse.ArgumentTypeError(f"--sampler {text!r}: steps and samples must be >= 1")
    return steps, samples, spacing, precision


def throughput(results: dict[str, Any], workers: int) -> dict[str, float]:
    """Steady-state control steps per second of an evaluation's episodes (episode time is summed over
    `workers` parallel processes, so it is divided by them)."""
    steps = sum(p["mean_length"] * p["n"] for p in results["policies"].values())
    busy = results["episode_seconds"] / workers
    return {"steps": steps, "seconds": busy, "steps_per_s": steps / busy if busy > 0 else 0.0}


def check_disjoint(purpose: str, seeds: range, results_dir: Path, name: str) -> None:
    """Refuse a range that overlaps the other purpose's recorded range (choose and report never share seeds)."""
    other = "report" if purpose == "choose" else "choose"
    f = results_dir / f"{name.removesuffix('_' + purpose)}_{other}.json"
    if not f.exists():
        return
    lo, hi = json.loads(f.read_text())["seeds"]
    if lo <= seeds[-1] and seeds[0] <= hi:
        raise SystemExit(
            f"seeds {seeds[0]}..{seeds[-1]} overlap the {other} range {lo}..{hi} recorded in {f}: "
            "choose and report on disjoint seeds"
        )


def summary_table(rows: list[dict[str, Any]], twin_speed: float) -> Table:
    t = Table(title=f"speed / agreement trade-off (twin: {twin_speed:.1f} steps/s)")
    for col in ("sampler", "imagined steps/s", "x twin", "Pearson", "MMRV", "MAE", "per-episode agree"):
        t.add_column(col, justify="right")
    for r in rows:
        m = r["metrics"]
        t.add_row(
            r["sampler"] or "ensemble",
            f"{r['speed']['steps_per_s']:.1f}",
            f"{r['speedup']:.2f}",
            f"{m['pearson']['value']:.3f}" if m["pearson"]["value"] is not None else "n/a",
            f"{m['mmrv']['value']:.3f}",
            f"{m['mae']['value']:.3f}",
            f"{r['per_episode_agreement']:.3f}",
        )
    return t


def main() -> None:
    from policy_eval.evaluate import agreement_table, load_eval_config, ranked_table, run_eval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--purpose", choices=["choose", "report"], required=True)
    ap.add_argument("--episodes", type=int, default=None, help="seeds per policy (choose 30, report 50)")
    ap.add_argument("--seed", type=int, default=None, help="first seed (choose 2000, report 4000)")
    ap.add_argument("--model", default=str(ROOT / "assets/worldmodels/push_cube_tiny"))
    ap.add_argument("--config", default=str(ROOT / "configs/eval/demo.yaml"))
    ap.add_argument(
        "--sampler",
        type=parse_sampler,
        action="append",
        help="STEPSxSAMPLES[u][-bf16] (repeatable; default 4x1)",
    )
    ap.add_argument("--twin-workers", type=int, default=2, help="twin processes run in parallel")
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="episodes a world-model pass advances together (default: the config's); speed depends on it, "
        "float32 outcomes do not (bfloat16's can, in batches of 64 and up)",
    )
    ap.add_argument(
        "--kind",
        choices=["worldmodel", "ensemble"],
        default="worldmodel",
        help="--model is a video world model, or a dynamics ensemble (frames from the twin posed at its "
        "states; it runs in --twin-workers processes, each with a twin to render)",
    )
    ap.add_argument(
        "--label",
        default=None,
        help="names the model's runs (default: its directory, or the parent of model/)",
    )
    ap.add_argument("--runs", default=str(ROOT / "runs/evaluator_fidelity"), help="the evaluations' output")
    add_result_arguments(ap, ROOT / "benchmarks/results", "evaluator_fidelity")
    args = ap.parse_args()
    episodes = args.episodes or DEFAULT_EPISODES[args.purpose]
    seed = DEFAULT_SEED[args.purpose] if args.seed is None else args.seed
    name = f"{args.name}_{args.purpose}"
    check_disjoint(args.purpose, range(seed, seed + episodes), Path(args.results_dir), name)
    samplers = args.sampler or [(4, 1, "diffusers", "float32")]
    model_dir = Path(args.model)
    label = args.label or (model_dir.parent.name if model_dir.name == "model" else model_dir.name)
    console = Console()
    runs = Path(args.runs) / f"{args.purpose}_{seed}_{episodes}"
    common = {"episodes": episodes, "seed": seed, "videos": False, "strips": 2}
    twin_cfg = load_eval_config(
        args.config, {**common, "world": "twin", "out": str(runs / "twin"), "workers": args.twin_workers}
    )
    twin = run_eval(twin_cfg)
    twin_speed = throughput(twin, args.twin_workers)
    console.print(ranked_table(twin))
    rows = []
    workers = args.twin_workers if args.kind == "ensemble" else 1
    default = [(0, 0, "diffusers", "float32")]
    for steps, samples, spacing, precision in samplers if args.kind == "worldmodel" else default:
        code = f"{steps}x{samples}" + ("u" if spacing == "uniform" else "")
        code += "-bf16" if precision == "bfloat16" else ""
        tag = f"{label}_{code}" if args.kind == "worldmodel" else label
        tag += f"_b{args.batch_size}" if args.batch_size else ""
        wm_cfg = load_eval_config(
            args.config,
            {
                **common,
                "world": f"{args.kind}:{args.model}",
                "out": str(runs / f"{args.kind}_{tag}"),
                "ground_truth": str(runs / "twin"),
                "report": True,
                "sampler_steps": steps or None,
                "samples": samples or None,
                "sampler_spacing": spacing if steps else None,
                "sampler_precision": precision if steps else None,
                "workers": workers,
                **({"batch_size": args.batch_size} if args.batch_size else {}),
            },
        )
        wm = run_eval(wm_cfg)
        m = wm["metrics"]
        console.print(ranked_table(wm))
        console.print(agreement_table(m))
        speed = throughput(wm, workers)
        rows.append(
            {
                "sampler": code if steps else None,
                "sampler_steps": steps,
                "sampler_spacing": spacing,
                "sampler_precision": precision,
                "samples": samples,
                "batch_size": wm_cfg.batch_size,
                "metrics": {k: m[k] for k in ("pearson", "spearman", "kendall", "mmrv", "mae")},
                "per_episode_agreement": m["per_episode_agreement"],
                "policies": {p: wm["policies"][p] for p in twin_cfg.policies},
                "ranking": wm["ranking"],
                "speed": speed,
                "speedup": speed["steps_per_s"] / twin_speed["steps_per_s"]
                if twin_speed["steps_per_s"]
                else 0.0,
                "report": str(runs / f"{args.kind}_{tag}" / "report.html"),
            }
        )
    console.print(summary_table(rows, twin_speed["steps_per_s"]))
    for r in rows:
        v = {k: r["metrics"][k]["value"] for k in ("pearson", "mmrv", "mae")}
        r["met"] = {
            "pearson": (v["pearson"] or 0) >= TARGETS["pearson"],
            "mmrv": v["mmrv"] is not None and v["mmrv"] <= TARGETS["mmrv"],
            "mae": v["mae"] is not None and v["mae"] <= TARGETS["mae"],
            "speedup": r["speedup"] >= TARGETS["speedup"],
        }
    result = {
        "benchmark": "evaluator_fidelity",
        "purpose": args.purpose,
        "scene": twin["scene"],
        "model": args.model,
        "kind": args.kind,
        "label": label,
        "episodes_per_policy": episodes,
        "seeds": [seed, seed + episodes - 1],
        "twin": {
            "policies": {p: twin["policies"][p] for p in twin_cfg.policies},
            "ranking": twin["ranking"],
            "workers": args.twin_workers,
            "speed": twin_speed,
        },
        "worldmodel": rows,
        "targets": {
            "pearson": f">= {TARGETS['pearson']}",
            "mmrv": f"<= {TARGETS['mmrv']}",
            "mae": f"<= {TARGETS['mae']}",
            "speedup": f">= {TARGETS['speedup']}x the twin's steps/s",
        },
    }
    write_result(name, result, args.results_dir)


if __name__ == "__main__":
    main()
