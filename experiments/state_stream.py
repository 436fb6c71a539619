"""Can a separate state stream judge success better? And how much accuracy does the judge ask for?

A separate (MM-DiT style, `backbone.state_stream: separate`) state stream predicts the imagined
object and robot poses from poses and actions alone, so it can be trained on state-only windows
at ~1/15 of a full window's cost (`train.state_batch_size`). This experiment isolates it: it takes
the shipped checkpoint's VAE and normalisation, builds the same model with a separate state stream,
trains that stream alone on state-only windows for `--steps` steps of `--batch` windows (the
recipe's learning rate, warm-up, contact-window share and seed), and judges the held-out episodes
exactly as benchmarks/worldmodel_fidelity.py does. The image stream is left untrained: the judge
reads the state alone, and a separate state stream never reads the images.

It also measures how fine the judge is (the `margin` table): for `object_in_region` the margin is
how far the cube's centre is inside the region (negative: outside). A twin episode stops on the
step its cube enters, so the recorded actions of a success end when the cube is just across the
edge; an imagined rollout is judged right only if its cube ends up on the same side.

    python experiments/state_stream.py [--steps 4000] [--batch 64] [--model DIR] [--data DIR]

Writes experiments/results/state_stream.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]


def region_margin(xy, center, size):  # type: ignore[no-untyped-def]
    """[..., 2] positions -> [...] distance (m) inside an axis-aligned region (negative outside)."""
    import numpy as np

    return np.min(np.asarray(size) / 2 - np.abs(np.asarray(xy) - np.asarray(center)), axis=-1)


def per_episode(world, episodes, center, size) -> list[dict]:  # type: ignore[no-untyped-def]
    """Imagine every episode from its first frame with its recorded actions (as the fidelity benchmark's
    judge); per episode the twin's and the imagined outcome and their largest region margins."""
    import numpy as np

    from worldmodels.video_world import Context

    world.reset_batch(
        [Context.from_episode(e, world.cameras, 0) for e in episodes], list(range(len(episodes)))
    )
    results = world.step_batch([e["actions"][:-1] for e in episodes])
    rows = []
    for e, r in zip(episodes, results, strict=True):
        imag = np.array([o.environment_state[:2] for o in r.observations])
        n = len(r.observations)
        rows.append(
            {
                "twin_success": bool(e["success"].any()),
                "imagined_success": bool(r.info["success"]),
                "value": max(r.info["value_per_step"]),
                "twin_margin_cm": 100 * float(region_margin(e["env_state"][:, :2], center, size).max()),
                "imagined_margin_cm": 100 * float(region_margin(imag, center, size).max()),
                "final_error_cm": 100 * float(np.linalg.norm(imag[-1] - e["env_state"][n, :2])),
            }
        )
    return rows


def summary(rows: list[dict]) -> dict:
    import numpy as np

    y = np.array([r["twin_success"] for r in rows])
    p = np.array([r["imagined_success"] for r in rows])
    return {
        "predicate_accuracy": float((y == p).mean()),
        "false_positives": int((p & ~y).sum()),
        "false_negatives": int((~p & y).sum()),
        "final_error_cm": float(np.mean([r["final_error_cm"] for r in rows])),
        # imagined minus twin margin over the successes: < 0 = the imagined push falls short
        "success_margin_bias_cm": float(
            np.mean([r["imagined_margin_cm"] - r["twin_margin_cm"] for r in rows if r["twin_success"]])
        ),
    }


def train_state_stream(base, store, train_eps, steps: int, batch: int, seed: int):  # type: ignore[no-untyped-def]
    """The base model's VAE and statistics with a fresh separate state stream, trained on state-only windows."""
    import numpy as np
    import torch

    from common.training import Hardware, Run, fit, warmup_cosine
    from worldmodels.video_model import VideoWorldModel

    cfg = base.cfg.model_copy(
        update={"backbone": base.cfg.backbone.model_copy(update={"state_stream": "separate"})}
    )
    torch.manual_seed(seed)
    model = VideoWorldModel(cfg)
    model.load_state_dict(
        {k: v for k, v in base.state_dict().items() if not k.startswith("denoiser.")}, strict=False
    )
    t = cfg.train
    windows = store.starts(train_eps)
    moving = store.moving(windows, t.motion_threshold)
    n_move = int(round(batch * t.motion_fraction))
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    losses = []

    def loss(s, device):  # type: ignore[no-untyped-def]
        """One stream of draws over the steps in order (a run that is never resumed)."""
        items = [windows[int(i)] for i in rng.integers(0, len(windows), batch - n_move)]
        items += [moving[int(i)] for i in rng.integers(0, len(moving), n_move)]
        return {"loss": model.state_only_loss(store.window(items, images=False), gen)}

    fit(
        Run(
            model=model,
            params=list(model.denoiser.parameters()),
            loss=loss,
            lr=warmup_cosine(t.lr, steps, t.warmup),
            steps=steps,
            weight_decay=t.weight_decay,
            grad_clip=t.grad_clip,
            after_step=lambda s, out: losses.append(out["loss"]),
            hardware=Hardware(accelerator="cpu"),
        )
    )
    return model.eval(), float(np.mean(losses[-200:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "assets/worldmodels/push_cube_tiny"))
    ap.add_argument("--data", default=str(ROOT / "data/push_cube_small"))
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    add_result_arguments(ap, ROOT / "experiments/results", "state_stream")
    args = ap.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from datagen.lerobot import LeRobotDataset
    from datagen.windows import load_episodes
    from worldmodels.training import EpisodeStore, split
    from worldmodels.video_model import VideoWorldModel
    from worldmodels.video_world import VideoWorld

    base = VideoWorldModel.from_pretrained(args.model)
    cfg = base.cfg
    success = cfg.scene["task"]["success"] if cfg.scene else None
    if not success or success["name"] != "object_in_region":
        raise SystemExit(f"{args.model}: the margin analysis needs an object_in_region task")
    center, size = success["params"]["center"], success["params"]["size"]
    n = LeRobotDataset(args.data).num_episodes
    train_eps, held = split(n, cfg.train.holdout_episodes)
    all_eps, _ = load_episodes(args.data, cfg.cameras, progress=True)
    held_eps = [all_eps[k] for k in held]
    console = Console()

    t0 = time.perf_counter()
    shipped = per_episode(VideoWorld(base), held_eps, center, size)
    model, final_loss = train_state_stream(
        base, EpisodeStore(all_eps, cfg), train_eps, args.steps, args.batch, cfg.train.seed
    )
    train_s = time.perf_counter() - t0
    separate = per_episode(VideoWorld(model), held_eps, center, size)

    twin_success = [r["twin_margin_cm"] for r in shipped if r["twin_success"]]
    twin_fail = [r["twin_margin_cm"] for r in shipped if not r["twin_success"]]
    margins = {
        "twin_successes": len(twin_success),
        "success_margin_cm_median": float(np.median(twin_success)),
        "successes_within_0.5cm": int(sum(m < 0.5 for m in twin_success)),
        "failures": len(twin_fail),
        "failures_within_1.5cm": int(sum(m > -1.5 for m in twin_fail)),
    }
    result = {
        "model": args.model,
        "data": args.data,
        "held_out_episodes": held,
        "state_stream_training": {
            "steps": args.steps,
            "batch": args.batch,
            "windows_seen": args.steps * args.batch,
            "final_loss": final_loss,
            "wall_s_with_shipped_judge": train_s,
        },
        "shipped": summary(shipped),
        "separate_state_stream": summary(separate),
        "margins": margins,
        "per_episode": {"shipped": shipped, "separate_state_stream": separate},
    }
    tab = Table(title=f"success judge on {len(held)} held-out episodes")
    for c in ("model", "accuracy", "FP", "FN", "final cube err cm", "success margin bias cm"):
        tab.add_column(c, justify="right")
    for name in ("shipped", "separate_state_stream"):
        s = result[name]
        tab.add_row(
            name,
            f"{100 * s['predicate_accuracy']:.1f}%",
            str(s["false_positives"]),
            str(s["false_negatives"]),
            f"{s['final_error_cm']:.2f}",
            f"{s['success_margin_bias_cm']:+.2f}",
        )
    console.print(tab)
    console.print(
        f"twin successes end {margins['success_margin_cm_median']:.2f} cm inside the region (median); "
        f"{margins['successes_within_0.5cm']}/{margins['twin_successes']} within 0.5 cm; "
        f"{margins['failures_within_1.5cm']}/{margins['failures']} failures come within 1.5 cm"
    )
    write_result(args.name, result, args.results_dir)


if __name__ == "__main__":
    main()
