"""Does imagination predict a policy's sensitivities? The same perturbation sweep in the twin and in a
learned world, and the agreement of their per-cell differences to the control.

    python benchmarks/perturbation_agreement.py --config configs/perturbations/push_cube.yaml \
        --world worldmodel:assets/worldmodels/push_cube_tiny --episodes 20 --seed 7000

Both sweeps run on the same seeds (resumable, cached under `--runs`). Reported, per axis, each policy's
success in the twin and in the learned world; over every (policy, perturbed cell): the Spearman rank
correlation of the imagined and the twin's differences to the control, the fraction whose sign agrees
(differences within one episode's worth, 1/n, count as zero), and the same over the cells where the
twin's difference is significant. The learned world starts each episode from the perturbed twin's
frame; physics and latency act only through what the learned world is given (`dreamtwin perturb`).
Writes benchmarks/results/perturbation_agreement.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]


def _sign(x: float, tol: float) -> int:
    return 0 if abs(x) <= tol else int(np.sign(x))


def agreement(twin: dict[str, Any], imagined: dict[str, Any]) -> dict[str, Any]:
    """Spearman of the per-(policy, cell) differences to the control, and their sign agreement."""
    from policy_eval.metrics import spearman

    pairs = []
    for cell, entry in twin["cells"].items():
        if cell == "control" or cell not in imagined["cells"]:
            continue
        for p, e in entry["policies"].items():
            i = imagined["cells"][cell]["policies"].get(p)
            if i is None or e["diff"]["value"] is None or i["diff"]["value"] is None:
                continue
            tol = 1.0 / max(e["diff"]["n_pairs"], 1)
            pairs.append(
                {
                    "policy": p,
                    "cell": cell,
                    "twin": e["diff"]["value"],
                    "imagined": i["diff"]["value"],
                    "twin_significant": e["diff"]["significant"],
                    "sign_agrees": _sign(e["diff"]["value"], tol) == _sign(i["diff"]["value"], tol),
                }
            )
    t = np.array([x["twin"] for x in pairs])
    m = np.array([x["imagined"] for x in pairs])
    sig = [x for x in pairs if x["twin_significant"]]
    rho = spearman(m, t) if len(pairs) > 2 else float("nan")
    return {
        "pairs": pairs,
        "n": len(pairs),
        "spearman": None if not np.isfinite(rho) else float(rho),
        "sign_agreement": float(np.mean([x["sign_agrees"] for x in pairs])) if pairs else None,
        "significant_in_twin": len(sig),
        "sign_agreement_where_significant": float(np.mean([x["sign_agrees"] for x in sig])) if sig else None,
        "mean_abs_difference_error": float(np.mean(np.abs(m - t))) if pairs else None,
    }


def per_axis(results: dict[str, Any]) -> dict[str, dict[str, dict[str, float | None]]]:
    """axis -> policy -> {level or 'control': success}."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    control = results["cells"]["control"]["policies"]
    for cell, e in results["cells"].items():
        if cell == "control":
            continue
        for p, v in e["policies"].items():
            d = out.setdefault(e["axis"], {}).setdefault(p, {"control": control[p]["success_rate"]})
            d[e["level"]] = v["success_rate"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs/perturbations/push_cube.yaml"))
    ap.add_argument("--world", default="worldmodel:assets/worldmodels/push_cube_tiny")
    ap.add_argument(
        "--episodes", type=int, default=20, help="seeds per cell (>= 20 for the reported numbers)"
    )
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--policies", default=None, help="comma-separated (default: the config's)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--runs", default=str(ROOT / "runs/perturbation_agreement"))
    add_result_arguments(ap, ROOT / "benchmarks/results", "perturbation_agreement")
    args = ap.parse_args()

    from policy_eval.perturb import load_perturb_config, run_sweep

    runs = Path(args.runs) / f"{args.seed}_{args.episodes}"
    base: dict[str, Any] = {"episodes": args.episodes, "seed": args.seed, "workers": args.workers}
    if args.policies:
        base["policies"] = args.policies.split(",")
    label = args.world.split(":", 1)[0]
    sweeps = {}
    for name, world in (("twin", "twin"), (label, args.world)):
        cfg = load_perturb_config(args.config, {**base, "world": world, "out": str(runs / name)})
        sweeps[name] = run_sweep(cfg)
    twin, imagined = sweeps["twin"], sweeps[label]
    agree = agreement(twin, imagined)
    axes_t, axes_i = per_axis(twin), per_axis(imagined)

    console = Console()
    for axis in axes_t:
        t = Table(title=f"{axis}: success in the twin / in {label}")
        levels = list(next(iter(axes_t[axis].values())))
        t.add_column("policy")
        for lv in levels:
            t.add_column(lv, justify="right")
        for p, row in axes_t[axis].items():
            t.add_row(p, *[f"{row[lv]:.2f} / {axes_i[axis][p][lv]:.2f}" for lv in levels])
        console.print(t)
    s = Table(
        title=f"agreement of the per-cell differences to the control ({agree['n']} policy x cell pairs)"
    )
    s.add_column("measure")
    s.add_column("value", justify="right")
    fmt = lambda x: "undefined" if x is None else f"{x:.3f}"  # noqa: E731
    s.add_row("Spearman of the differences", fmt(agree["spearman"]))
    s.add_row("sign agreement", fmt(agree["sign_agreement"]))
    s.add_row(
        f"sign agreement where the twin's is significant ({agree['significant_in_twin']})",
        fmt(agree["sign_agreement_where_significant"]),
    )
    s.add_row("mean |imagined - twin difference|", fmt(agree["mean_abs_difference_error"]))
    console.print(s)
    write_result(
        args.name,
        {
            "benchmark": "perturbation_agreement",
            "config": args.config,
            "world": args.world,
            "seeds": [args.seed, args.seed + args.episodes - 1],
            "per_axis": {"twin": axes_t, label: axes_i},
            "agreement": agree,
            "runs": str(runs),
        },
        args.results_dir,
    )


if __name__ == "__main__":
    main()
