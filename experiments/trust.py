"""Does the trust score say when imagination is wrong? Fitted on the choose range, reported on the report range.

    python experiments/trust.py --model assets/worldmodels/push_cube_tiny --ensemble runs/ensemble/model \
        [--sampler 4x1] [--write-calibration assets/worldmodels/push_cube_tiny/trust.json]

For every (policy, seed) of the zoo on a seed range, the video world model imagines the episode (as
`dreamtwin eval` does, `configs/eval/demo.yaml`'s policies and sampler) and `policy_eval.trust`
computes its features with the dynamics ensemble; the twin's outcome on the same seed is the truth
(the twin runs of `benchmarks/evaluator_fidelity.py`, shared: `--runs`). An imagined episode is
*wrong* when its verdict differs from the twin's.

On the choose range (seeds 2000-2029) only: the feature set (by 5-fold cross-validated AUROC over
seeds), the logistic model, and the threshold (the most episodes kept such that the trusted
episodes' mean absolute success-rate error per policy is at most half of all episodes'). Then, once,
on the report range (seeds 4000-4049, never used for a choice): the AUROC of (1 - trust) for "wrong",
the MAE over all and over trusted episodes with the fraction kept, and the MAE when the untrusted
episodes are re-run in the twin (`trust.fallback: twin`), at the budget that takes.
Imagined episodes and their features are cached per range (`--runs`/<range>/trust_<label>.jsonl).
Writes experiments/results/trust.json; `--write-calibration` writes the fitted `trust.json`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from common.io import append_jsonl
from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
PHYSICS = ["margin_abs", "push_gap", "object_travel", "surprise_max", "surprise_mean", "epistemic", "length"]
REPLAY = ["replay_agrees", "replay_margin_abs"]
CANDIDATES = {  # feature sets for the logistic trust model; the choose range's cross-validation picks one
    "margin": ["margin_abs"],
    "margin by verdict": ["success", "margin_abs@success", "margin_abs@failure"],
    "linear, all": ["success", *PHYSICS, "moving_steps", "final_speed", *REPLAY],
    "by verdict, physics": ["success"] + [f"{n}@{v}" for v in ("success", "failure") for n in PHYSICS],
    "by verdict, physics + replay": ["success"]
    + [f"{n}@{v}" for v in ("success", "failure") for n in PHYSICS + REPLAY],
}


def collect(
    args: argparse.Namespace, purpose: str, seed: int, n: int, console: Console
) -> list[dict[str, Any]]:
    """Per (policy, seed): the imagined verdict, its trust features and the twin's verdict."""
    import torch

    from policy_eval.evaluate import Evaluator, load_eval_config, run_eval, unique_rows
    from policy_eval.trust import TrustCalibration, TrustChecker, episode_arrays
    from worldmodels.ensemble import DynamicsEnsemble

    runs = Path(args.runs) / f"{purpose}_{seed}_{n}"
    common = {
        "episodes": n,
        "seed": seed,
        "videos": False,
        "strips": 2,
    }  # as evaluator_fidelity runs the twin
    twin_cfg = load_eval_config(
        args.config, {**common, "world": "twin", "out": str(runs / "twin"), "workers": 2}
    )
    run_eval(twin_cfg, progress=False)
    twin = {
        (r["policy"], r["seed"]): bool(r["success"])
        for r in unique_rows(_rows(runs / "twin" / "episodes.jsonl"))
    }
    steps, samples = (int(x) for x in args.sampler.split("x"))
    cache = runs / f"trust_{args.label}_{args.sampler}.jsonl"
    have = {(r["policy"], r["seed"]): r for r in _rows(cache)}
    pairs = [(p, s) for p in twin_cfg.policies for s in range(seed, seed + n)]
    todo = [pq for pq in pairs if pq not in have]
    ev = None
    dummy = TrustCalibration(
        ensemble=str(args.ensemble), bias=0.0, weights={}, surprise_floor=args.surprise_floor
    )
    ensemble = DynamicsEnsemble.from_pretrained(args.ensemble)
    if todo:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        wm_cfg = load_eval_config(
            args.config,
            {
                **common,
                "world": f"worldmodel:{args.model}",
                "out": str(runs / "trust_scratch"),
                "sampler_steps": steps,
                "samples": samples,
                "trust": {"enabled": False},
            },
        )
        ev = Evaluator(wm_cfg)
        for i in range(0, len(todo), args.batch):
            part = todo[i : i + args.batch]
            for (p, s), ep in zip(part, ev.episodes(part), strict=True):
                states, actions, _ = episode_arrays(ep)
                row = {
                    "policy": p,
                    "seed": s,
                    "imagined": bool(ep.success),
                    "states": states.round(6).tolist(),
                    "actions": actions.round(6).tolist(),
                }
                append_jsonl(cache, row)
                have[(p, s)] = row
            console.print(f"{purpose}: {min(i + args.batch, len(todo))}/{len(todo)} imagined episodes")
    # features from the cached imagined states, with this ensemble and read-out floor
    spec = load_eval_config(args.config).load_scene()
    checker = TrustChecker(dummy, ensemble, spec)
    for r in have.values():
        r["features"] = checker.episode_features(np.array(r["states"]), np.array(r["actions"]), r["imagined"])
    return [{**have[pq], "twin": twin[pq]} for pq in pairs]


def _shown(path: str) -> str:
    """A path as the repository names it (relative to its root when inside it)."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def _rows(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def _rates(rows: list[dict[str, Any]], key: str, policies: list[str]) -> list[float]:
    out = []
    for p in policies:
        v = [r[key] for r in rows if r["policy"] == p]
        out.append(float(np.mean(v)) if v else float("nan"))
    return out


def mae_of(rows: list[dict[str, Any]], policies: list[str], imagined: str = "imagined") -> float:
    """Mean absolute success-rate error per policy between `imagined` and the twin on these rows
    (policies with no rows left out)."""
    a, b = np.array(_rates(rows, imagined, policies)), np.array(_rates(rows, "twin", policies))
    ok = ~np.isnan(a)
    return float(np.abs(a[ok] - b[ok]).mean()) if ok.any() else float("nan")


def cv_auroc(rows: list[dict[str, Any]], names: list[str], folds: int = 5) -> float:
    """Cross-validated AUROC of the logistic trust for "wrong", folds by seed."""
    from policy_eval.trust import design, fit_logistic
    from worldmodels.evaluation import auroc

    seeds = sorted({r["seed"] for r in rows})
    scale = feature_scale(rows, names)
    scores = np.zeros(len(rows))
    for k in range(folds):
        held = set(seeds[k::folds])
        tr = [i for i, r in enumerate(rows) if r["seed"] not in held]
        te = [i for i, r in enumerate(rows) if r["seed"] in held]
        x = design([rows[i]["features"] for i in range(len(rows))], names, scale)
        y = np.array([r["imagined"] == r["twin"] for r in rows], float)
        b, w = fit_logistic(x[tr], y[tr])
        scores[te] = 1 - 1 / (1 + np.exp(-(b + x[te] @ w)))
    return float(auroc(scores, np.array([r["imagined"] != r["twin"] for r in rows])))


def feature_scale(rows: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    """Each feature's standard deviation on these rows (so the fit's regularisation treats them alike)."""
    from policy_eval.trust import feature_value

    return {n: float(np.std([feature_value(r["features"], n) for r in rows]) or 1.0) for n in names}


def choose_threshold(rows: list[dict[str, Any]], trust: np.ndarray, policies: list[str]) -> float:
    """The lowest threshold (most episodes kept) whose trusted rows' MAE is at most half of all rows'."""
    full = mae_of(rows, policies)
    for t in np.unique(np.round(trust, 4)):
        kept = [r for r, p in zip(rows, trust, strict=True) if p >= t]
        if len(kept) >= 0.2 * len(rows) and mae_of(kept, policies) <= 0.5 * full:
            return float(t)
    return float(np.median(trust))


def evaluate(
    rows: list[dict[str, Any]], trust: np.ndarray, threshold: float, policies: list[str]
) -> dict[str, Any]:
    from worldmodels.evaluation import auroc

    wrong = np.array([r["imagined"] != r["twin"] for r in rows])
    kept = [r for r, p in zip(rows, trust, strict=True) if p >= threshold]
    fallback = [
        {**r, "final": r["imagined"] if p >= threshold else r["twin"]}
        for r, p in zip(rows, trust, strict=True)
    ]
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(1000):
        i = rng.integers(0, len(rows), len(rows))
        if wrong[i].any() and not wrong[i].all():
            boot.append(auroc(1 - trust[i], wrong[i]))
    a = auroc(1 - trust, wrong)
    from policy_eval.metrics import AGREEMENT

    twin = _rates(rows, "twin", policies)
    agreement = {
        name: {k: float(f(_rates(sel, key, policies), twin)) for k, f in AGREEMENT.items()}
        for name, sel, key in (("all", rows, "imagined"), ("with_fallback", fallback, "final"))
    }
    return {
        "episodes": len(rows),
        "wrong": int(wrong.sum()),
        "agreement": agreement,
        "auroc": float(a) if np.isfinite(a) else None,  # undefined when every verdict is right (or wrong)
        "auroc_ci": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else None,
        "kept_fraction": len(kept) / len(rows),
        "mae_all": mae_of(rows, policies),
        "mae_trusted": mae_of(kept, policies),
        "mae_with_fallback": mae_of(fallback, policies, "final"),
        "fallback_budget": 1 - len(kept) / len(rows),
        "per_policy": {
            p: {
                "imagined_all": _rates(rows, "imagined", [p])[0],
                "imagined_trusted": _rates(kept, "imagined", [p])[0],
                "twin_all": _rates(rows, "twin", [p])[0],
                "twin_trusted": _rates(kept, "twin", [p])[0],
                "kept": sum(r["policy"] == p for r in kept),
                "with_fallback": _rates(fallback, "final", [p])[0],
            }
            for p in policies
        },
    }


def main() -> None:
    from policy_eval.evaluate import load_eval_config
    from policy_eval.trust import TrustCalibration, design, fit_logistic, write_calibration

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "assets/worldmodels/push_cube_tiny"))
    ap.add_argument(
        "--ensemble", required=True, help="dynamics ensemble checkpoint (dreamtwin train ensemble)"
    )
    ap.add_argument("--config", default=str(ROOT / "configs/eval/demo.yaml"))
    ap.add_argument("--sampler", default="4x1", help="STEPSxSAMPLES of the imagined episodes")
    ap.add_argument("--choose-seed", type=int, default=2000)
    ap.add_argument("--choose-episodes", type=int, default=30)
    ap.add_argument("--report-seed", type=int, default=4000)
    ap.add_argument("--report-episodes", type=int, default=50)
    ap.add_argument("--batch", type=int, default=56)
    ap.add_argument(
        "--surprise-floor", type=float, default=0.002, help="read-out noise of the imagined object (m)"
    )
    ap.add_argument(
        "--label", default=None, help="names the cached episodes (default: the model's directory)"
    )
    ap.add_argument("--runs", default=str(ROOT / "runs/evaluator_fidelity"))
    ap.add_argument("--write-calibration", default=None, help="write the fitted trust.json here")
    ap.add_argument(
        "--choose-only",
        action="store_true",
        help="fit and print on the choose range; do not touch the report range",
    )
    add_result_arguments(ap, ROOT / "experiments/results", "trust")
    args = ap.parse_args()
    model_dir = Path(args.model)
    args.label = args.label or (model_dir.parent.name if model_dir.name == "model" else model_dir.name)
    c0, c1 = args.choose_seed, args.choose_seed + args.choose_episodes - 1
    r0, r1 = args.report_seed, args.report_seed + args.report_episodes - 1
    if r0 <= c1 and c0 <= r1:
        raise SystemExit(f"the report range {r0}..{r1} overlaps the choose range {c0}..{c1}")
    console = Console()
    policies = load_eval_config(args.config).policies
    choose = collect(args, "choose", c0, args.choose_episodes, console)

    # every choice on the choose range
    cv: dict[str, float | None] = {}
    for name, names in CANDIDATES.items():
        v = cv_auroc(choose, names)
        cv[name] = v if np.isfinite(v) else None  # undefined when no (or every) verdict is wrong
    best = max(cv, key=lambda k: cv[k] or -1.0)
    names = CANDIDATES[best]
    scale = feature_scale(choose, names)
    x = design([r["features"] for r in choose], names, scale)
    y = np.array([r["imagined"] == r["twin"] for r in choose], float)
    bias, w = fit_logistic(x, y)
    trust_c = 1 / (1 + np.exp(-(bias + x @ w)))
    threshold = choose_threshold(choose, trust_c, policies)
    cal = TrustCalibration(
        ensemble=str(args.ensemble),
        bias=bias,
        weights=dict(zip(names, map(float, w), strict=True)),
        scale=scale,
        threshold=threshold,
        surprise_floor=args.surprise_floor,
        chosen_on={
            "command": "python experiments/trust.py",
            "model": _shown(args.model),
            "seeds": [c0, c1],
            "feature_set": best,
            "cv_auroc": cv,
        },
    )

    if args.choose_only:
        r = evaluate(choose, trust_c, threshold, policies)
        console.print(
            {"cv_auroc": cv, "feature_set": best, **{k: v for k, v in r.items() if k != "per_policy"}}
        )
        console.print(r["per_policy"])
        return

    # once, on the report range
    report = collect(args, "report", r0, args.report_episodes, console)
    xr = design([r["features"] for r in report], names, scale)
    trust_r = 1 / (1 + np.exp(-(bias + xr @ w)))
    results = {
        "experiment": "trust",
        "model": str(args.model),
        "ensemble": str(args.ensemble),
        "sampler": args.sampler,
        "choose": {
            "seeds": [c0, c1],
            "cv_auroc": cv,
            "feature_set": best,
            **evaluate(choose, trust_c, threshold, policies),
        },
        "report": {"seeds": [r0, r1], **evaluate(report, trust_r, threshold, policies)},
        "calibration": cal.model_dump(mode="json"),
        "targets": {"auroc": ">= 0.8", "mae_trusted": "<= 0.5 x mae_all"},
    }
    t = Table(title=f"trust of imagined verdicts ({best}: {', '.join(names)}; threshold {threshold:.3f})")
    for col in ("range", "seeds", "AUROC [95% CI]", "MAE all", "MAE trusted", "kept", "MAE + twin fallback"):
        t.add_column(col, justify="right")
    for key in ("choose", "report"):
        r = results[key]
        ci = r["auroc_ci"] or [float("nan")] * 2
        t.add_row(
            key,
            f"{r['seeds'][0]}-{r['seeds'][1]}",
            f"{r['auroc'] or float('nan'):.3f} [{ci[0]:.2f}, {ci[1]:.2f}]",
            f"{r['mae_all']:.3f}",
            f"{r['mae_trusted']:.3f}",
            f"{r['kept_fraction']:.2f}",
            f"{r['mae_with_fallback']:.3f} ({r['fallback_budget']:.0%} re-run)",
        )
    console.print(t)
    if args.write_calibration:
        out = Path(args.write_calibration)
        ens = Path(args.ensemble).resolve()
        rel = os.path.relpath(ens, out.resolve().parent)
        write_calibration(out, cal.model_copy(update={"ensemble": rel}))
        console.print(f"calibration written to {out}")
    write_result(args.name, results, args.results_dir)


if __name__ == "__main__":
    main()
