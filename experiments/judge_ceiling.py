"""How well can *any* model judge success from an episode's first frame and its actions?

The success judge of benchmarks/worldmodel_fidelity.py imagines each held-out episode from its first
frame with the recorded actions and asks whether the cube ends up in the target region. Part of what
decides that is invisible in the first frame: the dataset's domain randomisation draws the cube's
mass and the cube's and table's friction per episode. This experiment replays each held-out episode's
recorded actions in the twin:

- with the episode's own scene variant (it must reproduce the recorded outcome: a determinism check);
- with the hidden physics (friction and mass scales) redrawn `--draws` times from the randomisation
  ranges, everything visible (pose, colours, lights, camera) kept.

Over the redraws, p = P(success | first frame, actions) is estimated per episode; a judge that sees only
the first frame and the actions can at best predict the likelier outcome, so its expected accuracy on
the labels is at most the mean over episodes of max(p, 1 - p) (`ceiling_accuracy`: the labels redrawn
with the hidden physics), and the majority verdict (p >= 0.5) scores `majority_accuracy_on_recorded` on
the labels actually recorded. `flip_rate` is the share of replays whose outcome differs from the
recorded one.

With `--model` the world model judges the same episodes (worldmodels.evaluation.judge_episodes, as in
benchmarks/worldmodel_fidelity.py) and is scored the same ways: on the recorded labels, against the
majority verdict, and in expectation over the hidden physics.

    python experiments/judge_ceiling.py [--draws 24] [--model DIR | --no-model] [--data DIR]
        [--episodes FIRST:END --value-threshold T]

`--episodes` judges a range of a dataset the model was never trained on (e.g. new seeds made with the
training set's job) instead of the model's held-out episodes. The value judge calls success when the
imagined value reaches `--value-threshold` (0.5 by default); `value_threshold_best` is the threshold
with the highest accuracy on this set's recorded labels, to be chosen on one set and used on another.

Writes experiments/results/judge_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]


def replay(twin, seed: int, actions) -> tuple[bool, list[float]]:  # type: ignore[no-untyped-def]
    """The recorded actions replayed open loop from `seed` (`DigitalTwin.replay`): whether it succeeded, and
    where the cube ended."""
    success = twin.replay(seed, actions)
    return success, [float(x) for x in twin.environment_state()[:3]]


def best_threshold(values, labels) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The success threshold on a judge's scores with the highest accuracy on the labels (of equally
    accurate ones, the nearest to 0.5): candidates between consecutive distinct scores."""
    import numpy as np

    v, y = np.asarray(values, np.float64), np.asarray(labels, bool)
    u = np.unique(v)
    cands = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6]])
    acc = np.array([((v >= c) == y).mean() for c in cands])
    best = cands[acc == acc.max()]
    t = float(best[np.argmin(np.abs(best - 0.5))])
    return {"threshold": t, "accuracy": float(acc.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data/push_cube_small"))
    ap.add_argument(
        "--holdout",
        type=int,
        default=None,
        help="the last N episodes (default: the model's held-out set, else 30)",
    )
    ap.add_argument(
        "--episodes",
        default=None,
        help="FIRST:END, a range of episodes of a dataset the model was not trained on (default: its held-out)",
    )
    ap.add_argument("--value-threshold", type=float, default=0.5, help="the value judge's success threshold")
    ap.add_argument("--draws", type=int, default=24, help="hidden-physics redraws per episode")
    ap.add_argument("--model", default=str(ROOT / "assets/worldmodels/push_cube_tiny"))
    ap.add_argument("--no-model", action="store_true", help="the twin replays only")
    ap.add_argument("--seed", type=int, default=0)
    add_result_arguments(ap, ROOT / "experiments/results", "judge_ceiling")
    args = ap.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from datagen.lerobot import LeRobotDataset
    from datagen.rollouts import ResolvedJob, RolloutJob
    from scenes.randomization import sample_variation
    from scenes.spec import SceneSpec
    from scenes.twin import DigitalTwin
    from worldmodels.evaluation import auroc
    from worldmodels.training import split

    data = Path(args.data)
    job = RolloutJob.model_validate(json.loads((data / "meta" / "dreamtwin.json").read_text())["job"])
    resolved = ResolvedJob.load(job)
    if resolved.rnd is None:
        raise SystemExit(f"{data}: made without domain randomisation: nothing is hidden")
    rnd = resolved.rnd
    ds = LeRobotDataset(data)
    n = ds.num_episodes
    world = None
    if not args.no_model:
        from worldmodels.video_world import VideoWorld

        world = VideoWorld.from_pretrained(args.model)
        model_holdout = world.cfg.train.holdout_episodes
        if args.holdout is not None and args.holdout != model_holdout:
            raise SystemExit(
                f"--holdout {args.holdout}, but {args.model} held out its last {model_holdout} episodes"
            )
        args.holdout = model_holdout
    held = split(n, args.holdout or 30)[1]
    if args.episodes:
        bounds = args.episodes.split(":")
        if len(bounds) != 2 or not all(x.strip().isdigit() for x in bounds):
            raise SystemExit(f"--episodes {args.episodes!r}: expected FIRST:END, e.g. 60:180")
        first, end = (int(x) for x in bounds)
        if not 0 <= first < end <= n:
            raise SystemExit(f"--episodes {args.episodes}: {data} has episodes 0..{n - 1}")
        held = list(range(first, end))
    twin = DigitalTwin(resolved.spec, render=False)
    rng = np.random.default_rng([args.seed, 0x1DDE7])
    rows = []
    t0 = time.perf_counter()
    for k in track(held, description="replaying"):
        ep = ds.episode(k)
        seed = int(np.asarray(ep["seed"]).reshape(-1)[0])
        actions = np.asarray(ep["action"], np.float32)[:-1]  # the last row is the final frame's hold
        recorded = bool(np.asarray(ep["next.success"]).any())
        variation = sample_variation(resolved.spec, rnd, seed)
        twin.set_variant(variation.spec)
        same, pos = replay(twin, seed, actions)
        end = np.asarray(ep["observation.environment_state"], np.float32)[-1, :3]
        outcomes = []
        for _ in range(args.draws):
            d = variation.spec.model_dump()  # as sample_variation draws them: per object, then the table
            for o, od in zip(resolved.spec.objects, d["objects"], strict=True):
                fs, ms = rng.uniform(*rnd.friction_scale), rng.uniform(*rnd.mass_scale)
                od["friction"], od["mass"] = o.friction * fs, o.mass * ms
            d["table"]["friction"] = resolved.spec.table.friction * rng.uniform(*rnd.friction_scale)
            twin.set_variant(SceneSpec.model_validate(d))
            outcomes.append(replay(twin, seed, actions)[0])
        p = float(np.mean(outcomes))
        rows.append(
            {
                "episode": k,
                "seed": seed,
                "recorded_success": recorded,
                "replayed_success": same,
                "replay_end_error_mm": 1000 * float(np.linalg.norm(np.asarray(pos) - end)),
                "success_rate_over_hidden_physics": p,
                "flips": int(sum(o != recorded for o in outcomes)),
            }
        )
    wall = time.perf_counter() - t0
    p = np.array([r["success_rate_over_hidden_physics"] for r in rows])
    y = np.array([r["recorded_success"] for r in rows])
    majority = p >= 0.5
    judges = {"majority of the hidden physics (best possible)": (majority, p)}
    if world is not None:
        from datagen.windows import load_episodes
        from worldmodels.evaluation import judge_episodes

        eps, meta = load_episodes(data, world.cameras, episodes=held, progress=True)
        j = judge_episodes(world, eps, randomization_names=meta["randomization_names"])["per_episode"]
        judges["world model, predicate"] = (np.array([e["predicate"] for e in j]), None)
        judges["world model, value"] = (
            np.array([e["value"] for e in j]) >= args.value_threshold,
            np.array([e["value"] for e in j]),
        )
        for r, e in zip(rows, j, strict=True):
            r["imagined_success"], r["imagined_value"] = e["predicate"], e["value"]
    scores = {
        name: {
            "accuracy_on_recorded": float((v == y).mean()),
            "agreement_with_majority": float((v == majority).mean()),
            "expected_accuracy_over_hidden_physics": float(np.mean(np.where(v, p, 1 - p))),
            "auroc_on_recorded": auroc(v.astype(float) if s is None else s, y),
        }
        for name, (v, s) in judges.items()
    }
    result = {
        "data": str(data),
        "held_out_episodes": held,
        "draws": args.draws,
        "hidden": {"friction_scale": list(rnd.friction_scale), "mass_scale": list(rnd.mass_scale)},
        "replay_reproduces_outcome": float(
            np.mean([r["replayed_success"] == r["recorded_success"] for r in rows])
        ),
        "replay_end_error_mm_max": float(max(r["replay_end_error_mm"] for r in rows)),
        "flip_rate": float(np.mean([r["flips"] / args.draws for r in rows])),
        "episodes_with_a_flip": int(sum(r["flips"] > 0 for r in rows)),
        # a judge that predicts the likelier outcome under the hidden physics, scored on the recorded labels
        "majority_accuracy_on_recorded": float((majority == y).mean()),
        # its expected accuracy over the hidden physics (the labels redrawn with it)
        "ceiling_accuracy": float(np.mean(np.maximum(p, 1 - p))),
        "judges": scores,
        "model": None if world is None else args.model,
        "value_threshold": args.value_threshold,
        "value_threshold_best": None if world is None else best_threshold(judges["world model, value"][1], y),
        "wall_s": wall,
        "per_episode": rows,
    }
    out = write_result(args.name, result, args.results_dir, indent=1)
    tab = Table(title=f"success judges on {len(rows)} held-out episodes ({int(y.sum())} recorded successes)")
    for c in ("judge", "acc. recorded", "agree majority", "expected acc. (hidden physics)", "AUROC"):
        tab.add_column(c, justify="right")
    for name, sc in scores.items():
        tab.add_row(
            name,
            f"{100 * sc['accuracy_on_recorded']:.1f}%",
            f"{100 * sc['agreement_with_majority']:.1f}%",
            f"{100 * sc['expected_accuracy_over_hidden_physics']:.1f}%",
            f"{sc['auroc_on_recorded']:.3f}",
        )
    Console().print(tab)
    print(
        f"replay reproduces {100 * result['replay_reproduces_outcome']:.0f}% of outcomes "
        f"(end error <= {result['replay_end_error_mm_max']:.2f} mm); hidden physics flips "
        f"{100 * result['flip_rate']:.1f}% of replays, {result['episodes_with_a_flip']}/{len(rows)} episodes "
        f"flip at least once; ceiling accuracy {100 * result['ceiling_accuracy']:.1f}%, majority judge on the "
        f"recorded labels {100 * result['majority_accuracy_on_recorded']:.1f}% ({wall:.0f} s) -> {out}"
    )


if __name__ == "__main__":
    main()
