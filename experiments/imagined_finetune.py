"""Imagined-success fine-tuning (Ctrl-World): does a weak BC policy improve when fine-tuned on the episodes
the world model imagines it succeeding in?

    python experiments/imagined_finetune.py [--model assets/worldmodels/push_cube_tiny] [--policy bc_mid]
        [--explore configs/policies/bc_mid_explore.yaml] [--attempts 200] [--eval-episodes 50]
        [--train-seeds 0 1 2] [--epochs E] [--no-oracle] [--runs runs/imagined_finetune] [--name imagined_finetune]

1. `dreamtwin datagen imagine --all`: the policy (or `--explore`, e.g. the policy with action noise)
   rolled out in the video world model from the twin's
   initial states (seeds 30000+, frames 64², `make demo`'s sampler: 4 steps, 1 sample); every attempt
   kept, with the imagined judge's verdict.
2. Fine-tune the policy's checkpoint (`init`) on (a) the attempts the judge calls successful and (b) a
   random subset of all attempts of the same size (the control: the same amount of imagined data, not
   filtered), (a') when the world model has a trust.json, the judged successes that it also trusts (with
   its own control: a random subset of that size), and
   (c) as an upper bound (unless --no-oracle), the same number of the policy's successes in the twin
   itself (real frames, true successes); once per training seed. The recipe (steps, learning rate) is
   fixed beforehand, not chosen on any evaluation: 300 steps of 64 frames, or with `--epochs E` as many
   steps as E passes over each arm's frames (300 steps were ~4 passes over the first run's 126 episodes,
   so more imagined data is not fine-tuned on for less).
3. Evaluate the base and every fine-tuned checkpoint in the twin on held-out seeds (40000+, never used
   for anything else): success with Wilson 95% intervals per checkpoint and pooled per arm, and the gain
   over the base in points.
Writes experiments/results/imagined_finetune.json; `--runs` keeps the dataset, checkpoints and evaluations
(resumable: each step skips what is already there).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "configs" / "scenes" / "push_cube.yaml"
RES = {"cameras.0.resolution": [64, 64]}
RECIPE = {"steps": 300, "lr": 3e-4, "batch_size": 64, "only_success": False, "save_at": []}


def imagine(args: argparse.Namespace, out: Path) -> Path:
    from datagen.rollouts import RolloutJob, generate

    job = RolloutJob(
        scene=str(SCENE),
        scene_overrides=RES,
        world=f"worldmodel:{args.model}",
        policies={args.explore or args.policy: 1.0},
        episodes=args.attempts,
        seed=args.imagine_seed,
        out=str(out),
        only_success=False,
        workers=args.workers,
        samples=1,
        sampler_steps=4,
    )
    generate(job)
    return out


def twin_successes(args: argparse.Namespace, n: int, out: Path) -> Path:
    """The oracle arm's data: the same policy's first `n` successes in the twin itself, from the same seeds."""
    from datagen.rollouts import RolloutJob, generate

    job = RolloutJob(
        scene=str(SCENE),
        scene_overrides=RES,
        policies={args.explore or args.policy: 1.0},
        episodes=n,
        seed=args.imagine_seed,
        out=str(out),
        only_success=True,
        max_attempts_factor=40,
        workers=args.workers,
    )
    generate(job)
    return out


def fine_tune(
    args: argparse.Namespace,
    episodes: list[dict[str, np.ndarray]],
    meta: dict[str, Any],
    out: Path,
    seed: int,
) -> Path:
    from policy_eval.policies.bc import BCConfig, BCNet, train_policy
    from policy_eval.policies.zoo import checkpoint_path

    recipe = {**RECIPE, "steps": fine_tune_steps(args, episodes)}
    final = out / f"step-{recipe['steps']:06d}"
    if (final / "model.safetensors").is_file():
        return final
    base = checkpoint_path(args.policy) if args.policy.startswith("bc_") else Path(args.policy)
    arch = BCNet.from_pretrained(base).cfg.model_dump(include={"channels", "hidden", "chunk", "shift"})
    cfg = BCConfig(**arch, **recipe, init=str(base), seed=seed)
    (saved,) = train_policy(cfg, episodes, meta, out)
    return saved


def fine_tune_steps(args: argparse.Namespace, episodes: list[dict[str, np.ndarray]]) -> int:
    """`--steps`, or with `--epochs` that many passes over the episodes' frames in batches of 64."""
    if args.epochs is None:
        return int(args.steps)
    frames = sum(len(e["actions"]) for e in episodes)
    return max(1, round(args.epochs * frames / RECIPE["batch_size"]))


def trusted(data: Path, n: int) -> list[bool] | None:
    """Each imagined episode's trust verdict (meta/dreamtwin.json), or None without trust scores."""
    import json

    rows = json.loads((data / "meta" / "dreamtwin.json").read_text())["episodes"]
    if len(rows) != n or any("trusted" not in r for r in rows):
        return None
    return [bool(r["trusted"]) for r in rows]


def main() -> None:
    from datagen.windows import load_episodes
    from policy_eval.evaluate import evaluate_in_twin
    from policy_eval.metrics import arms_table, pooled_success
    from policy_eval.policies.zoo import checkpoint_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "assets" / "worldmodels" / "push_cube_tiny"))
    ap.add_argument("--policy", default="bc_mid", help="the BC checkpoint (or zoo name) fine-tuned")
    ap.add_argument(
        "--explore",
        default=None,
        help="the policy imagined (e.g. configs/policies/bc_mid_explore.yaml); default --policy",
    )
    ap.add_argument("--attempts", type=int, default=200, help="imagined episodes")
    ap.add_argument("--imagine-seed", type=int, default=30000)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--eval-seed", type=int, default=40000)
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--steps", type=int, default=RECIPE["steps"], help="fine-tuning steps (smoke runs: fewer)"
    )
    ap.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="fine-tune for E passes over each arm's frames (not --steps)",
    )
    ap.add_argument("--no-oracle", action="store_true", help="skip the twin-successes arm")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", default="runs/imagined_finetune")
    add_result_arguments(ap, ROOT / "experiments" / "results", "imagined_finetune")
    args = ap.parse_args()
    console = Console()
    runs = Path(args.runs)

    data = imagine(args, runs / "imagined")
    episodes, meta = load_episodes(data)
    ok = [i for i, e in enumerate(episodes) if e["success"].any()]
    console.print(f"{len(ok)} of {len(episodes)} imagined episodes judged successful")
    if not ok:
        raise SystemExit("no imagined success to fine-tune on; imagine more attempts")
    verdicts = trusted(data, len(episodes))
    ok_trusted = [i for i in ok if verdicts[i]] if verdicts is not None else []
    if verdicts is not None:
        console.print(f"{len(ok_trusted)} of the {len(ok)} judged successes trusted")
    oracle = (
        None if args.no_oracle else load_episodes(twin_successes(args, len(ok), runs / "twin_successes"))[0]
    )
    checkpoints: dict[str, list[str]] = {"judged successes": [], "random subset": []}
    if ok_trusted:
        checkpoints["judged successes, trusted"] = []
        checkpoints["random subset, trusted size"] = []  # its control: as many attempts, not filtered
    if oracle is not None:
        checkpoints["twin successes"] = []
    steps: dict[str, int] = {}
    for seed in args.train_seeds:
        rng = np.random.default_rng([seed, 0xF1E])
        subset = sorted(rng.choice(len(episodes), size=len(ok), replace=False).tolist())
        small = sorted(rng.choice(len(episodes), size=len(ok_trusted), replace=False).tolist())
        sources = {
            "success": ("judged successes", [episodes[i] for i in ok]),
            "random": ("random subset", [episodes[i] for i in subset]),
            "trusted": ("judged successes, trusted", [episodes[i] for i in ok_trusted]),
            "random_trusted_size": ("random subset, trusted size", [episodes[i] for i in small]),
            "oracle": ("twin successes", oracle or []),
        }
        for slug, (arm, eps) in sources.items():
            if arm in checkpoints:
                steps[arm] = fine_tune_steps(args, eps)
                checkpoints[arm].append(str(fine_tune(args, eps, meta, runs / f"{slug}_seed{seed}", seed)))
    base = str(checkpoint_path(args.policy)) if args.policy.startswith("bc_") else args.policy
    later = ("twin successes", "random subset, trusted size")  # evaluated apart (added after the first arms)
    imagined_arms = [base] + [p for arm, ps in checkpoints.items() if arm not in later for p in ps]
    n = args.eval_episodes
    ev = {"episodes": n, "seed": args.eval_seed, "workers": args.workers, "scene_overrides": RES}
    per = dict(evaluate_in_twin(str(SCENE), imagined_arms, out=runs / "eval", **ev)["policies"])
    if "random subset, trusted size" in checkpoints:
        ctrl = checkpoints["random subset, trusted size"]
        per |= evaluate_in_twin(str(SCENE), ctrl, out=runs / "eval_trusted_control", **ev)["policies"]
    if "twin successes" in checkpoints:
        per |= evaluate_in_twin(str(SCENE), checkpoints["twin successes"], out=runs / "eval_oracle", **ev)[
            "policies"
        ]

    def arm_stats(paths: list[str]) -> dict[str, Any]:
        return pooled_success(per, paths, n)

    arms: dict[str, Any] = {"base": arm_stats([base])}
    arms |= {arm: arm_stats(paths) for arm, paths in checkpoints.items()}
    for arm in checkpoints:
        arms[arm]["gain_points"] = 100 * (arms[arm]["success_rate"] - arms["base"]["success_rate"])
    console.print(
        arms_table(
            arms, f"{args.policy} fine-tuned on imagined episodes; twin success on seeds {args.eval_seed}+"
        )
    )
    write_result(
        args.name,
        {
            "experiment": "imagined_finetune",
            "policy": args.policy,
            "imagined_policy": args.explore or args.policy,
            "world": f"worldmodel:{args.model}",
            "recipe": {**RECIPE, "steps": args.steps, "epochs": args.epochs, "steps_per_arm": steps},
            "imagined": {
                "attempts": len(episodes),
                "judged_successes": len(ok),
                "trusted_successes": len(ok_trusted) if verdicts is not None else None,
                "seeds": [args.imagine_seed, args.imagine_seed + args.attempts - 1],
            },
            "eval_seeds": [args.eval_seed, args.eval_seed + n - 1],
            "train_seeds": args.train_seeds,
            "arms": arms,
        },
        args.results_dir,
    )


if __name__ == "__main__":
    main()
