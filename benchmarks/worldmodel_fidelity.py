"""Fidelity of the video world model against the twin, on held-out push_cube episodes.

    python benchmarks/worldmodel_fidelity.py                       # the shipped model, ~10 min on 2 cores
    python benchmarks/worldmodel_fidelity.py --model runs/wm_tiny/model --data data/push_cube_small

Held-out episodes are the last `train.holdout_episodes` of the training dataset (never trained
on). Open loop with the recorded actions:
- PSNR and SSIM at each horizon step 1..H against the twin's frames, beside copying the last
  context frame; object position error (cm) from the predicted state frames;
- success judged on whole imagined episodes (from their first frame, all recorded actions) by the
  scene predicate on the predicted object poses and by the predicted value, against the twin's
  labels: accuracy and AUROC;
- imagined steps/s (batched, and one episode at a time) and the twin's steps/s at the same
  resolution with its camera rendering.
Prints a table and writes benchmarks/results/worldmodel_fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.table import Table

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
CEILING = ROOT / "experiments/results/judge_ceiling.json"
DEFAULT_MODEL = ROOT / "assets/worldmodels/push_cube_tiny"
DEFAULT_DATA = ROOT / "data/push_cube_small"


def twin_speed(scene: dict, steps: int = 60) -> float:
    """Control steps/s of the digital twin with camera rendering at the model's resolution."""
    import numpy as np

    from scenes.spec import SceneSpec
    from scenes.twin import DigitalTwin

    twin = DigitalTwin(SceneSpec.model_validate(scene))
    twin.reset(seed=0)
    rng = np.random.default_rng(0)
    twin.step(rng.uniform(-1, 1, (1, 4)).astype(np.float32) * 0.01)  # first step compiles lazily
    n = 0
    t = time.perf_counter()
    while n < steps:
        r = twin.step(rng.uniform(-1, 1, (1, 4)).astype(np.float32) * 0.01)
        n += 1
        if r.done:
            twin.reset(seed=n)
    return n / (time.perf_counter() - t)


def open_loop_table(ol: dict, title: str, ssim: bool = True) -> Table:
    """Per horizon step: PSNR (and SSIM) of the imagined frames and of copying the last frame, and the
    object error."""
    tab = Table(title=title)
    cols = (
        ["h", "PSNR dB", "copy-last PSNR"] + (["SSIM", "copy-last SSIM"] if ssim else []) + ["object err cm"]
    )
    for c in cols:
        tab.add_column(c, justify="right")
    for h in range(len(ol["psnr"])):
        row = [str(h + 1), f"{ol['psnr'][h]:.2f}", f"{ol['baseline_psnr'][h]:.2f}"]
        if ssim:
            row += [f"{ol['ssim'][h]:.3f}", f"{ol['baseline_ssim'][h]:.3f}"]
        tab.add_row(*row, f"{100 * ol['object_error_m'][h]:.2f}")
    return tab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--stride", type=int, default=8, help="open-loop start every N steps of an episode")
    ap.add_argument("--episodes", type=int, default=None, help="held-out episodes to use (default: all)")
    ap.add_argument("--samples", type=int, default=None, help="samples per step (default: the model's)")
    ap.add_argument(
        "--context-noise",
        type=float,
        default=None,
        help="noise level of the context latents when generating (default: the model's sampler.context_noise)",
    )
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    ap.add_argument(
        "--frames",
        choices=["first", "mean"],
        default=None,
        help="frame that continues an episode: first sample's or the samples' mean (default: the model's)",
    )
    ap.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="first sample's noise scale, 0..1 (default: the model's sampler.temperature)",
    )
    ap.add_argument("--skip-judge", action="store_true", help="open-loop metrics only (quick comparisons)")
    ap.add_argument(
        "--twin-steps", type=int, default=60, help="control steps of the twin's speed measurement"
    )
    add_result_arguments(ap, ROOT / "benchmarks/results", "worldmodel_fidelity")
    args = ap.parse_args()

    import torch
    from rich.console import Console

    from datagen.lerobot import LeRobotDataset
    from datagen.windows import load_episodes
    from worldmodels.evaluation import judge_episodes, open_loop
    from worldmodels.training import split
    from worldmodels.video_model import VideoWorldModel
    from worldmodels.video_world import Context, VideoWorld

    torch.manual_seed(0)
    model = VideoWorldModel.from_pretrained(args.model)
    sampler = model.cfg.sampler.updated(
        samples=args.samples,
        steps=args.steps,
        context_noise=args.context_noise,
        frames=args.frames,
        temperature=args.temperature,
    )
    world = VideoWorld(model, sampler)
    cfg = world.cfg
    n = LeRobotDataset(args.data).num_episodes
    held = split(n, cfg.train.holdout_episodes)[1][: args.episodes]
    episodes, meta = load_episodes(args.data, world.cameras, held)
    if tuple(meta["image_size"]) != tuple(cfg.image_size):
        raise SystemExit(
            f"{args.data}: frames are {meta['image_size']}, the model was trained on {cfg.image_size}"
        )
    H = args.horizon
    starts = [(i, t0) for i, e in enumerate(episodes) for t0 in range(0, len(e["frames"]) - H, args.stride)]
    console = Console()
    console.print(
        f"{len(held)} held-out episodes, {len(starts)} open-loop windows of {H} steps, "
        f"{sampler.samples} samples/step ({sampler.frames} frame, temperature {sampler.temperature}), "
        f"{sampler.steps} sampler steps, context noise {sampler.context_noise}"
    )

    t = time.perf_counter()
    names = meta["randomization_names"]  # each episode's physics, for a physics-conditioned model
    ol = open_loop(world, episodes, starts, H, randomization_names=names)
    ol_wall = time.perf_counter() - t
    t = time.perf_counter()
    if args.skip_judge:
        console.print(open_loop_table(ol, f"open loop ({len(starts)} windows)", ssim=False))
        return
    judged = judge_episodes(world, episodes, randomization_names=names)
    judge_wall = time.perf_counter() - t

    # one episode at a time (the World protocol as a policy-evaluation loop uses it)
    e = episodes[0]
    world.reset(0, {"context": Context.from_episode(e, world.cameras, 0, names)})
    t = time.perf_counter()
    k = 0
    for a in e["actions"][:20]:
        r = world.step(a[None])
        k += 1
        if r.done:
            break
    single_sps = k / (time.perf_counter() - t)
    batched_sps = (ol["generated_steps"] + judged["generated_steps"]) / (
        ol["generation_s"] + judged["generation_s"]
    )
    twin_sps = twin_speed(cfg.scene, args.twin_steps) if cfg.scene is not None else float("nan")

    h10 = min(10, H) - 1
    gain, err = ol["psnr"][h10] - ol["baseline_psnr"][h10], 100 * ol["object_error_m"][h10]
    targets = {
        "psnr_h10_minus_baseline_db": gain,
        "object_error_h10_cm": err,
        "success_accuracy": judged["predicate_accuracy"],
        "met": {
            "psnr_h10_at_least_baseline_plus_3db": gain >= 3,
            "object_error_h10_at_most_2cm": err <= 2,
            "success_accuracy_at_least_90pct": judged["predicate_accuracy"] >= 0.9,
        },
    }
    # what any judge of a first frame + actions can reach on these episodes (experiments/judge_ceiling.py)
    if CEILING.exists():
        c = json.loads(CEILING.read_text())
        if Path(c["data"]).resolve() == Path(args.data).resolve() and c["held_out_episodes"] == held:
            targets["success_accuracy_ceiling"] = {
                "expected": c["ceiling_accuracy"],
                "majority_on_recorded": c["majority_accuracy_on_recorded"],
                "source": str(CEILING.relative_to(ROOT)),
            }
    result = {
        "model": str(args.model),
        "data": str(args.data),
        "held_out_episodes": held,
        "horizon": H,
        "samples_per_step": sampler.samples,
        "sampler_steps": sampler.steps,
        "frames": sampler.frames,
        "context_noise": sampler.context_noise,
        "temperature": sampler.temperature,
        "image_size": list(cfg.image_size),
        "open_loop": {k: v for k, v in ol.items()},
        "success_judge": judged,
        "speed": {
            "imagined_steps_per_s_batched": batched_sps,
            "imagined_steps_per_s_single": single_sps,
            "twin_steps_per_s": twin_sps,
        },
        "targets": targets,
        "wall_s": {"open_loop": ol_wall, "success_judge": judge_wall},
        "threads": torch.get_num_threads(),
    }
    console.print(open_loop_table(ol, f"video world model vs twin, open loop ({len(starts)} windows)"))
    j = judged
    console.print(
        f"success judge on {j['episodes']} imagined episodes ({j['positives']} successful in the twin): "
        f"predicate accuracy {j['predicate_accuracy']:.3f} (AUROC {j['predicate_auroc']:.3f}, "
        f"FP {j['predicate_false_positives']}, FN {j['predicate_false_negatives']}); value accuracy "
        f"{j['value_accuracy']:.3f}, AUROC {j['value_auroc']:.3f}; object error at the last imagined step "
        f"{100 * j['final_object_error_m']:.2f} cm"
    )
    console.print(
        f"speed: imagined {batched_sps:.1f} steps/s batched, {single_sps:.2f} steps/s one episode; "
        f"twin {twin_sps:.1f} steps/s"
    )
    console.print(f"targets: {json.dumps(result['targets'])}")
    write_result(args.name, result, args.results_dir)


if __name__ == "__main__":
    main()
