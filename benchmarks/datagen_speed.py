"""Dataset generation speed: episodes/min and frames/s with 1 and 2 local workers.

    python benchmarks/datagen_speed.py                 # 24 episodes per setting, ~5 min on 2 cores
    python benchmarks/datagen_speed.py --episodes 10
    python benchmarks/datagen_speed.py --episodes 2 --workers 1   # a smoke run

push_cube at 64x64 with one camera, the push_cube randomisation and a mix of the expert and the
image-based variants. Reports end to end (process start-up, twin builds and assembly included)
and steady state (after every worker delivered its first episode). Prints a table and writes
benchmarks/results/datagen_speed.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]


def run(workers: int, episodes: int, out: Path) -> dict:
    from datagen.lerobot import verify_dataset
    from datagen.rollouts import RolloutJob, generate

    job = RolloutJob(
        scene=str(ROOT / "configs/scenes/push_cube.yaml"),
        scene_overrides={"cameras.0.resolution": [64, 64]},
        policies={"expert": 0.4, "image_expert": 0.2, "image_mild": 0.2, "image_medium": 0.2},
        episodes=episodes,
        seed=0,
        out=str(out),
        randomize=str(ROOT / "configs/randomization/push_cube.yaml"),
        workers=workers,
    )
    t0 = time.perf_counter()
    s = generate(job, progress=False)
    wall = time.perf_counter() - t0
    verify_dataset(out)
    arr = s["episode_done_at"]
    k = min(workers, len(arr) - 1)
    steady_eps = (len(arr) - 1 - k + 1) / (arr[-1] - arr[k - 1]) if len(arr) > k else float("nan")
    frames_per_ep = s["frames"] / s["episodes"]
    return {
        "workers": workers,
        "episodes": s["episodes"],
        "frames": s["frames"],
        "wall_s": wall,
        "episodes_per_min": 60 * s["episodes"] / wall,
        "frames_per_s": s["frames"] / wall,
        "steady_episodes_per_min": 60 * steady_eps,
        "steady_frames_per_s": steady_eps * frames_per_ep,
        "first_episode_s": arr[0],
        "assemble_s": s["assemble_seconds"],
        "bytes": s["bytes"],
        "success_rate": s["success_rate"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=24)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="local worker counts to measure")
    add_result_arguments(ap, ROOT / "benchmarks/results", "datagen_speed")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="datagen_speed_"))
    rows = []
    try:
        for w in args.workers:
            rows.append(run(w, args.episodes, tmp / f"w{w}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"datagen speed: push_cube 64x64, 1 camera, {args.episodes} episodes")
    for c in (
        "workers",
        "episodes/min",
        "frames/s",
        "steady ep/min",
        "steady frames/s",
        "first ep (s)",
        "assemble (s)",
        "wall (s)",
    ):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(
            str(r["workers"]),
            f"{r['episodes_per_min']:.1f}",
            f"{r['frames_per_s']:.1f}",
            f"{r['steady_episodes_per_min']:.1f}",
            f"{r['steady_frames_per_s']:.1f}",
            f"{r['first_episode_s']:.1f}",
            f"{r['assemble_s']:.2f}",
            f"{r['wall_s']:.1f}",
        )
    Console(width=150).print(t)
    result = {
        "benchmark": "datagen_speed",
        "scene": "push_cube",
        "resolution": [64, 64],
        "cameras": 1,
        "results": rows,
    }
    write_result(args.name, result, args.results_dir)


if __name__ == "__main__":
    main()
