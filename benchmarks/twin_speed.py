"""Digital-twin speed: scene build time (cold and warm kernel cache) and control steps per second.

    python benchmarks/twin_speed.py            # full run, ~6 min on 2 cores (cold build included)
    python benchmarks/twin_speed.py --no-cold  # skip the cold-cache build

Prints a table and writes benchmarks/results/twin_speed.json. Each build runs in a fresh process
(Genesis initialises once per process); "cold" uses an empty kernel cache directory and the last of
`--variants` (no camera, or one camera at N x N).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "configs/scenes/push_cube.yaml"


def child(variant: str, steps: int) -> dict:
    import numpy as np

    from scenes.spec import load_scene_spec
    from scenes.twin import DigitalTwin

    overrides = (
        {"cameras": []} if variant == "none" else {"cameras.0.resolution": [int(variant), int(variant)]}
    )
    spec = load_scene_spec(SCENE, overrides)
    t0 = time.perf_counter()
    twin = DigitalTwin(spec, render=True)
    build = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.02, 0.02, (steps, 4)).astype(np.float32)
    twin.reset(0)
    twin.step(actions[:5])  # first-use compilation of IK / rendering is not a steady-state cost
    twin.reset(1)
    t0 = time.perf_counter()
    done = 0
    for a in actions:
        r = twin.step(a[None])
        done += 1
        if r.done:
            twin.reset(done)
    secs = time.perf_counter() - t0
    return {
        "variant": variant,
        "build_s": build,
        "steps": done,
        "steps_per_s": done / secs,
        "physics_steps_per_s": done * spec.physics_steps_per_control() / secs,
    }


def run_child(variant: str, steps: int, cache: str | None) -> dict:
    env = dict(os.environ)
    if cache:
        env["XDG_CACHE_HOME"] = cache
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--steps", str(steps)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if out.returncode != 0:
        raise SystemExit(f"benchmark child {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache build")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["none", "64", "128"],
        help="camera set-ups: none, or N for one N x N camera",
    )
    add_result_arguments(ap, ROOT / "benchmarks/results", "twin_speed")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps)))
        return

    from rich.console import Console
    from rich.table import Table

    bad = [v for v in args.variants if v != "none" and not v.isdigit()]
    if bad:
        ap.error(f"--variants: {bad[0]!r} is neither 'none' nor a resolution")
    last = args.variants[-1]
    results: dict = {"scene": SCENE.name, "steps": args.steps}
    if not args.no_cold:
        with tempfile.TemporaryDirectory() as cache:
            results["cold_build_s"] = run_child(last, 20, cache)["build_s"]
    runs = {v: run_child(v, args.steps, None) for v in args.variants}
    results["warm_build_s"] = runs[last]["build_s"]
    results["runs"] = runs
    write_result(args.name, results, args.results_dir)

    table = Table(title="digital twin speed (push_cube, CPU)")
    for col in ("measure", "value"):
        table.add_column(col)
    if "cold_build_s" in results:
        table.add_row("cold build (empty kernel cache), s", f"{results['cold_build_s']:.1f}")
    table.add_row("warm build, s", f"{results['warm_build_s']:.1f}")
    for v, r in runs.items():
        label = "no camera" if v == "none" else f"one camera {v}x{v}"
        table.add_row(
            f"control steps/s, {label}", f"{r['steps_per_s']:.1f} ({r['physics_steps_per_s']:.0f} physics/s)"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
