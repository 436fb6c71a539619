"""Recipe variants of the video world model, trained and judged side by side.

Each variant is the recipe (configs/worldmodels/video_tiny.yaml) plus dotted overrides, as with
`dreamtwin train worldmodel --set`. Every variant trains from the same seed for the steps its config
says, then is judged as benchmarks/worldmodel_fidelity.py judges the shipped model: the success judge on
the held-out episodes, imagined from their first frame with the recorded actions, and the open-loop
PSNR gain over copy-last and object error at horizon 10.

Variants run as separate processes, `--parallel` at a time (on a GPU machine several share the device;
on 2 CPU cores run one). Each writes runs/<name>/ (resumable: a rerun continues an unfinished training,
and skips a variant whose result is there) and the table in the JSON is rewritten as each one finishes,
so a run cut short keeps what it finished. Progress (stage, step, seconds) is printed every 30 s.
The table goes to experiments/results/NAME.json (`--name`, default worldmodel_variants).

    python experiments/worldmodel_variants.py --device cuda --parallel 3 \\
        --variant base --variant "sw10 state_frame.loss_weight=10" \\
        --variant "natural train.motion_fraction=0"
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]

RECIPE = ROOT / "configs/worldmodels/video_tiny.yaml"
DEFAULT_DATA = ROOT / "data/push_cube_small"


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name key=value key=value' -> (name, ["key=value", ...])."""
    parts = text.split()
    if not parts or "=" in parts[0]:
        raise SystemExit(f"--variant {text!r}: expected a name first, then KEY=VALUE overrides")
    bad = [p for p in parts[1:] if "=" not in p]
    if bad:
        raise SystemExit(f"--variant {text!r}: {bad[0]!r} is not KEY=VALUE")
    return parts[0], parts[1:]


def run_one(name: str, sets: list[str], args: argparse.Namespace) -> None:
    """Train (or resume) one variant, judge it, write runs/<name>/result.json."""
    import numpy as np
    import torch

    from common.config import parse_overrides
    from common.io import atomic_write_text
    from datagen.windows import load_episodes
    from worldmodels.evaluation import judge_episodes, open_loop
    from worldmodels.training import split, train_worldmodel
    from worldmodels.video_config import load_video_config
    from worldmodels.video_world import VideoWorld

    torch.set_num_threads(args.threads)
    over = parse_overrides(sets)
    if args.device.startswith("cuda"):
        over = {"train.accelerator": "gpu", "train.devices": 1, **over}
    cfg = load_video_config(args.config, over)
    out = Path(args.runs) / name
    t0 = time.monotonic()
    episodes, meta = load_episodes(args.data, cfg.cameras or None, progress=False)
    resume = (out / "config.json").exists()
    model = train_worldmodel(
        cfg, episodes, meta, out, max_minutes=args.max_minutes, resume=resume, progress=False
    )
    train_s = time.monotonic() - t0
    if model is None:
        print(f"{name}: stopped by --max-minutes; rerun to continue", flush=True)
        return
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    n = len(episodes)
    held = [episodes[k] for k in split(n, cfg.train.holdout_episodes)[1]]
    torch.manual_seed(0)
    world = VideoWorld.from_pretrained(model, device=args.device)
    t = time.monotonic()
    judged = judge_episodes(world, held)
    H = 10
    starts = [(i, s) for i, e in enumerate(held) for s in range(0, len(e["frames"]) - H, 8)]
    ol = open_loop(world, held, starts, H)
    result = {
        "name": name,
        "overrides": sets,
        "device": args.device,
        "train_s": train_s,
        "eval_s": time.monotonic() - t,
        "val_loss": [r["val_loss"] for r in log if "val_loss" in r][-1],
        "judge": judged,
        "psnr_h10_minus_copy_last_db": ol["psnr"][H - 1] - ol["baseline_psnr"][H - 1],
        "object_error_h10_cm": 100 * ol["object_error_m"][H - 1],
    }
    atomic_write_text(
        out / "result.json",
        json.dumps(result, indent=2, default=lambda x: x.tolist() if isinstance(x, np.ndarray) else str(x)),
    )


def progress_line(runs: Path, names: list[str]) -> str:
    parts = []
    for n in names:
        log = runs / n / "log.jsonl"
        if (runs / n / "result.json").exists():
            parts.append(f"{n}: done")
        elif log.exists() and log.stat().st_size:
            recs = [json.loads(x) for x in log.read_text().splitlines()]
            r = next((x for x in reversed(recs) if "elapsed_s" in x), recs[-1])
            parts.append(f"{n}: {r.get('stage')} {r.get('step', '')} ({r.get('elapsed_s', '?')} s)")
        else:
            parts.append(f"{n}: starting")
    return " | ".join(parts)


def write_table(runs: Path, names: list[str], args: argparse.Namespace, quiet: bool = True) -> list[dict]:
    """Collect the finished variants' results into the result file; returns them."""
    rows = [
        json.loads((runs / n / "result.json").read_text())
        for n in names
        if (runs / n / "result.json").exists()
    ]
    figures = {"recipe": str(args.config), "data": str(args.data), "variants": rows}
    write_result(args.name, figures, args.results_dir, quiet=quiet)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--variant",
        action="append",
        required=True,
        help="'NAME [KEY=VALUE ...]': the recipe with these overrides (repeatable)",
    )
    ap.add_argument("--config", default=str(RECIPE))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--runs", default=str(ROOT / "runs/variants"), help="one training directory per variant")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (training and judging)")
    ap.add_argument("--parallel", type=int, default=1, help="variants at a time")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per variant")
    ap.add_argument("--max-minutes", type=float, default=None, help="per variant; a rerun resumes")
    add_result_arguments(ap, ROOT / "experiments/results", "worldmodel_variants")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run this one variant in this process
    args = ap.parse_args()

    variants = dict(parse_variant(v) for v in args.variant)
    if len(variants) != len(args.variant):
        raise SystemExit("--variant names must be unique")
    if args.one:
        run_one(args.one, variants[args.one], args)
        return
    runs = Path(args.runs)
    todo = [n for n in variants if not (runs / n / "result.json").exists()]
    procs: dict[str, subprocess.Popen] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    last = 0.0
    while todo or procs:
        while todo and len(procs) < args.parallel:
            n = todo.pop(0)
            (runs / n).parent.mkdir(parents=True, exist_ok=True)
            procs[n] = subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--one", n], env=env)
        for n, p in list(procs.items()):
            if p.poll() is not None:
                del procs[n]
                print(f"{n}: exit {p.returncode}", flush=True)
                write_table(runs, list(variants), args)
        if time.monotonic() - last > 30:
            print(progress_line(runs, list(variants)), flush=True)
            last = time.monotonic()
        time.sleep(2)
    rows = write_table(runs, list(variants), args, quiet=False)
    print(
        f"{'variant':<14}{'judge acc':>10}{'FP':>4}{'FN':>4}{'value acc':>10}{'end err cm':>11}{'PSNR gain':>10}{'obj h10 cm':>11}{'val loss':>9}{'train s':>9}"
    )
    for r in rows:
        j = r["judge"]
        print(
            f"{r['name']:<14}{j['predicate_accuracy']:>10.3f}{j['predicate_false_positives']:>4}{j['predicate_false_negatives']:>4}"
            f"{j['value_accuracy']:>10.3f}{100 * j['final_object_error_m']:>11.2f}{r['psnr_h10_minus_copy_last_db']:>10.2f}"
            f"{r['object_error_h10_cm']:>11.2f}{r['val_loss']:>9.3f}{r['train_s']:>9.0f}"
        )


if __name__ == "__main__":
    main()
