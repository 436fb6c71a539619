"""Is policy-guided synthetic data useful? TD3+BC trained on real data against real + PGD data, in the twin.

    python experiments/pgd_offline.py --data data/push_cube_small --trajectory runs/traj/model \
        [--coeff 0.3] [--windows 2048] [--fraction 0.5] [--steps 20000] [--train-seeds 0 1 2]
        [--eval-seed 40000 --eval-episodes 50] [--runs runs/pgd_offline]

Per training seed k (the recipe fixed beforehand, not chosen on any evaluation):
1. TD3+BC on the dataset's transitions (`configs/policies/td3bc.yaml`, seed k): the *real* arm, and the
   target policy.
2. `--windows` windows sampled by the trajectory diffusion model guided towards that policy (PGD, coefficient
   `--coeff`, sampling seed k), and as many unguided (coefficient 0), as transitions with the task's reward.
3. TD3+BC from scratch (seed k) with `--fraction` of every batch drawn from the synthetic transitions: the
   *real + PGD* arm and the *real + unguided* control (PGD's paper: synthetic data helps when it follows
   the target policy; the unguided arm separates that from "more data").
4. With `--regen-every N`, the *real + PGD (regenerated)* arm, PGD's own loop: TD3+BC from scratch (seed k)
   starts on the unguided windows (the agent is untrained, so there is nothing to guide towards yet) and
   every N steps replaces them with `--windows` new ones guided towards the agent as it is then
   (sampling seed k and the step).
Every checkpoint is evaluated in the twin on held-out seeds (40000+, never used for anything else; a
coefficient is chosen with `--eval-seed 2000`, the choose range): success
with Wilson 95% intervals per checkpoint and pooled per arm, the gain over the real arm in points. Writes
experiments/results/pgd_offline.json; `--runs` keeps the checkpoints and evaluations (resumable: each step
skips what is already there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from common.io import atomic_write_text
from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "configs" / "scenes" / "push_cube.yaml"
NO_CAMERAS: dict[str, Any] = {"cameras": []}  # the policies read states: the twin renders nothing


def train(
    cfg_overrides: dict[str, Any],
    real: Any,
    out: Path,
    extra: Any = None,
    fraction: float = 0.0,
    **regen: Any,
) -> str:
    """TD3+BC into `out` unless its last checkpoint is there; `regen`: `regenerate` and `regenerate_every`."""
    from policy_eval.policies.td3bc import load_td3bc_config, train_td3bc

    cfg = load_td3bc_config(ROOT / "configs" / "policies" / "td3bc.yaml", cfg_overrides)
    last = out / f"step-{cfg.steps:06d}"
    if not (last / "model.safetensors").exists():
        train_td3bc(cfg, real, out, extra=extra, extra_fraction=fraction, progress=False, **regen)
    return str(last)


def synthetic(
    model: Any, policy: Any, coeff: float, windows: int, seed: int, spec: Any, stream: int | None = None
) -> Any:
    """Transitions of `windows` windows guided towards `policy` (a checkpoint path or a policy object)."""
    import torch

    from policy_eval.policies.td3bc import TD3BCPolicy, window_transitions

    if isinstance(policy, str | Path):
        policy = TD3BCPolicy.from_pretrained(policy)
    parts = []
    for b in range(0, windows, 256):
        key = [seed, b, 0x9D] + ([] if stream is None else [stream])
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))
        w = model.sample(min(256, windows - b), gen, policy=policy, coeff=coeff)
        parts.append((w.states, w.actions[:, :-1]))
    states = np.concatenate([p[0] for p in parts])
    actions = np.concatenate([p[1] for p in parts])
    return window_transitions(states, actions, spec)


def main() -> None:
    from datagen.windows import load_episodes
    from policy_eval.evaluate import evaluate_in_twin
    from policy_eval.metrics import arms_table, pooled_success
    from policy_eval.policies.td3bc import TD3BCPolicy, dataset_scene, transitions
    from worldmodels.trajectory import TrajectoryDiffusion

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "push_cube_small"))
    ap.add_argument("--trajectory", required=True, help="trajectory diffusion checkpoint")
    ap.add_argument("--coeff", type=float, default=0.3, help="PGD guidance coefficient")
    ap.add_argument("--windows", type=int, default=2048, help="synthetic windows per arm and training seed")
    ap.add_argument("--fraction", type=float, default=0.5, help="share of each batch from synthetic data")
    ap.add_argument("--steps", type=int, default=20000, help="TD3+BC steps (smoke runs: fewer)")
    ap.add_argument(
        "--regen-every", type=int, default=0, help="also the regenerated-PGD arm, new windows every N steps"
    )
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-seed", type=int, default=40000)
    ap.add_argument("--eval-episodes", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", default="runs/pgd_offline")
    add_result_arguments(ap, ROOT / "experiments" / "results", "pgd_offline")
    args = ap.parse_args()
    console = Console()
    runs = Path(args.runs)

    episodes, meta = load_episodes(args.data, frames=False)
    spec = dataset_scene(meta, args.data)
    real = transitions(episodes, spec)
    model = TrajectoryDiffusion.from_pretrained(args.trajectory)
    regen = "real + PGD (regenerated)"
    checkpoints: dict[str, list[str]] = {"real": [], "real + PGD": [], "real + unguided": []}
    if args.regen_every:
        checkpoints[regen] = []
    sizes: dict[str, list[int]] = {arm: [] for arm in checkpoints if arm != "real"}
    for seed in args.train_seeds:
        over = {"steps": args.steps, "seed": seed, "save_at": []}
        target = train(over, real, runs / f"real_seed{seed}")
        checkpoints["real"].append(target)
        for arm, coeff, slug in (
            ("real + PGD", args.coeff, f"pgd{args.coeff:g}"),
            ("real + unguided", 0.0, "unguided"),
        ):
            out = runs / f"{slug}_seed{seed}"
            # the synthetic set's size, so that a finished arm is not sampled again
            record = out / "synthetic.json"
            if not (record.exists() and (out / Path(target).name / "model.safetensors").exists()):
                extra = synthetic(model, target, coeff, args.windows, seed, spec)
                train(over, real, out, extra, args.fraction)
                atomic_write_text(record, json.dumps({"transitions": len(extra)}))
            sizes[arm].append(json.loads(record.read_text())["transitions"])
            checkpoints[arm].append(str(out / Path(target).name))
        if args.regen_every:
            out = runs / f"pgd{args.coeff:g}_regen{args.regen_every}_seed{seed}"
            record = out / "synthetic.json"
            fresh_sizes: list[int] = []
            if not (record.exists() and (out / Path(target).name / "model.safetensors").exists()):

                def regenerate(
                    agent: Any, step: int, seed: int = seed, sizes: list[int] = fresh_sizes
                ) -> Any:
                    fresh = synthetic(
                        model, TD3BCPolicy(agent), args.coeff, args.windows, seed, spec, stream=step
                    )
                    sizes.append(len(fresh))
                    return fresh

                unguided = synthetic(model, target, 0.0, args.windows, seed, spec)
                train(
                    over,
                    real,
                    out,
                    unguided,
                    args.fraction,
                    regenerate=regenerate,
                    regenerate_every=args.regen_every,
                )
                atomic_write_text(record, json.dumps({"transitions": fresh_sizes}))
            sizes[regen] += json.loads(record.read_text())["transitions"]
            checkpoints[regen].append(str(out / Path(target).name))
    evals = runs / f"eval_{args.eval_seed}_{args.eval_episodes}_pgd{args.coeff:g}"
    if args.regen_every:  # another policy list: another evaluation
        evals = evals.with_name(f"{evals.name}_regen{args.regen_every}")
    n = args.eval_episodes
    every = [p for paths in checkpoints.values() for p in paths]
    per = evaluate_in_twin(
        str(SCENE),
        every,
        episodes=n,
        seed=args.eval_seed,
        out=evals,
        workers=args.workers,
        scene_overrides=NO_CAMERAS,
    )["policies"]
    arms = {arm: pooled_success(per, paths, n) for arm, paths in checkpoints.items()}
    for arm in sizes:
        arms[arm]["gain_points"] = 100 * (arms[arm]["success_rate"] - arms["real"]["success_rate"])
        arms[arm]["synthetic_transitions"] = sizes[arm]
    console.print(arms_table(arms, f"TD3+BC, twin success on seeds {args.eval_seed}+ ({n} a checkpoint)"))
    write_result(
        args.name,
        {
            "experiment": "pgd_offline",
            "data": args.data,
            "trajectory": args.trajectory,
            "recipe": {
                "steps": args.steps,
                "coeff": args.coeff,
                "windows": args.windows,
                "fraction": args.fraction,
                "regen_every": args.regen_every,
            },
            "real_transitions": len(real),
            "eval_seeds": [args.eval_seed, args.eval_seed + n - 1],
            "train_seeds": args.train_seeds,
            "arms": arms,
        },
        args.results_dir,
    )


if __name__ == "__main__":
    main()
