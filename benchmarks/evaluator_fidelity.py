"""How well does a ranking computed in the video world model agree with the digital twin's?

    python benchmarks/evaluator_fidelity.py [--episodes 50] [--model assets/worldmodels/push_cube_tiny]

Runs the push_cube policy zoo (configs/eval/demo.yaml's policies) for `--episodes` seeds each in
the twin (ground truth) and in the world model on the same seeds and initial observations, then
writes benchmarks/results/evaluator_fidelity.json: per-policy success in both worlds, Pearson,
Spearman, Kendall and MMRV with paired bootstrap intervals over seeds, and each side's wall time.
Both runs are resumable (rerun the command). Targets: Pearson >= 0.9, MMRV <= 0.05.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from policy_eval.evaluate import agreement_table, load_eval_config, ranked_table, run_eval

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument(
        "--seed", type=int, default=2000, help="first seed (held out from the training data's seeds)"
    )
    ap.add_argument("--model", default=str(ROOT / "assets/worldmodels/push_cube_tiny"))
    ap.add_argument("--config", default=str(ROOT / "configs/eval/demo.yaml"))
    ap.add_argument(
        "--runs", default=str(ROOT / "runs/evaluator_fidelity"), help="the two evaluations' output"
    )
    add_result_arguments(ap, ROOT / "benchmarks/results", "evaluator_fidelity")
    args = ap.parse_args()
    console = Console()
    common = {"episodes": args.episodes, "seed": args.seed, "videos": False, "strips": 2}
    twin_cfg = load_eval_config(args.config, {**common, "world": "twin", "out": f"{args.runs}/twin"})
    t0 = time.perf_counter()
    twin = run_eval(twin_cfg)
    twin_s = time.perf_counter() - t0
    wm_cfg = load_eval_config(
        args.config,
        {
            **common,
            "world": f"worldmodel:{args.model}",
            "out": f"{args.runs}/worldmodel",
            "ground_truth": f"{args.runs}/twin",
            "report": True,
        },
    )
    t0 = time.perf_counter()
    wm = run_eval(wm_cfg)
    wm_s = time.perf_counter() - t0
    console.print(ranked_table(twin))
    console.print(ranked_table(wm))
    console.print(agreement_table(wm["metrics"]))
    m = wm["metrics"]
    result = {
        "benchmark": "evaluator_fidelity",
        "scene": twin["scene"],
        "model": args.model,
        "episodes_per_policy": args.episodes,
        "seeds": [args.seed, args.seed + args.episodes - 1],
        "sampler_steps": wm_cfg.sampler_steps,
        "samples": wm_cfg.samples,
        "policies": {
            p: {"twin": twin["policies"][p], "worldmodel": wm["policies"][p]} for p in twin_cfg.policies
        },
        "ranking_twin": twin["ranking"],
        "ranking_worldmodel": wm["ranking"],
        "metrics": {k: m[k] for k in ("pearson", "spearman", "kendall", "mmrv")},
        "per_episode_agreement": m["per_episode_agreement"],
        "targets": {"pearson": ">= 0.9", "mmrv": "<= 0.05"},
        "met": {
            "pearson": (m["pearson"]["value"] or 0) >= 0.9,
            "mmrv": m["mmrv"]["value"] is not None and m["mmrv"]["value"] <= 0.05,
        },
        # sum of per-episode times (a resumed run's wall time covers only what it ran)
        "seconds": {
            "twin_episodes": twin["episode_seconds"],
            "worldmodel_episodes": wm["episode_seconds"],
            "twin_wall_this_run": twin_s,
            "worldmodel_wall_this_run": wm_s,
        },
        "report": f"{args.runs}/worldmodel/report.html",
    }
    write_result(args.name, result, args.results_dir)


if __name__ == "__main__":
    main()
