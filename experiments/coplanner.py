"""COPlanner's three uses of UP-MPC with the push_cube dynamics ensemble, each chosen on one seed range
and reported on another.

    python experiments/coplanner.py --ensemble runs/ensemble/model [--part rollouts explore mpc]

- **rollouts** (model rollouts, conservative): branched from the states of the expert's twin episode
  at steps 0, 10 and 20 of each seed, the noisy expert (`expert` perturbed by UP-MPC's candidates,
  `mode: none`) or conservative UP-MPC around it acts for H = 10 steps inside the ensemble (a random
  elite member per step, sampled, as COPlanner's model rollouts); the same actions are then replayed
  in the twin from the same state. Compounding error = the distance between the imagined and the
  replayed cube (and end effector) at step H. The rate is chosen on seeds
  2000-2029, reported on 4000-4049.
- **explore** (optimistic exploration): the twin generates `--explore-episodes` episodes (seeds from
  6000, push_cube's domain randomisation) with the noisy expert and with optimistic UP-MPC around it;
  ensembles trained on the first N episodes of each are scored on the held-out episodes of
  `--heldout` (the world models' held-out split): open-loop object error at H = 10 and one-step NLL,
  a curve over N.
- **mpc** (a weak policy made stronger): `image_medium` and conservative UP-MPC around it in the twin;
  the mode and rate are chosen on seeds 2000-2029 and the success rates, with Wilson intervals, and
  the planning time per step reported on 4000-4049.

Writes experiments/results/coplanner.json; every run is cached under `--runs`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from common.io import atomic_write_text
from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
BRANCHES = [0, 10, 20]  # steps of the expert's twin episode that model rollouts branch from


def _spec() -> Any:
    from scenes.spec import load_scene_spec

    return load_scene_spec(ROOT / "configs/scenes/push_cube.yaml", {"cameras.0.resolution": [64, 64]})


def _mpc_yaml(path: Path, **fields: Any) -> str:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump({"type": "up_mpc", **fields}, sort_keys=False))
    return str(path)


# ---------------------------------------------------------------------- model rollouts
def rollouts(
    args: argparse.Namespace,
    seeds: range,
    mode: str,
    rate: float,
    ntraj: int = 5,
    horizon: int = 5,
    H: int = 10,
) -> dict[str, Any]:
    """Compounding error at each step up to H of the ensemble's rollouts under UP-MPC around the expert,
    branched (as COPlanner's model rollouts) from the states of the expert's twin episode at steps
    `BRANCHES`; each branch's actions are replayed in the twin from the same state."""
    from policy_eval.mpc import UPMPC, MPCConfig
    from policy_eval.policies import make_policy
    from policy_eval.runner import rollout
    from scenes.randomization import physics_scales
    from scenes.spec import SceneSpec
    from scenes.twin import DigitalTwin
    from worldmodels.ensemble import DynamicsEnsemble
    from worldmodels.ensemble_world import EnsembleWorld

    spec = _spec()
    twin = args.twin or DigitalTwin(spec, render=False)
    args.twin = twin
    ens = DynamicsEnsemble.from_pretrained(args.ensemble)
    physics = physics_scales(spec, SceneSpec.model_validate(ens.cfg.scene)) if ens.cfg.scene else {}
    world = EnsembleWorld(ens, spec, physics=physics)
    cfg = MPCConfig(
        base="expert",
        ensemble=args.ensemble,
        mode=mode,
        rate=rate,
        ntraj=ntraj,
        horizon=horizon,
        privileged=True,
    )
    d = ens.cfg.state_dim
    obj, ee = [], []
    for seed in seeds:
        real_ep = rollout(twin, make_policy("expert", spec, seed), seed, privileged=True)
        prefix = [st.action for st in real_ep.steps]
        for t0 in BRANCHES:
            if t0 >= len(prefix):
                continue
            start = real_ep.initial_observation if t0 == 0 else real_ep.steps[t0 - 1].observation
            branch = seed * 1000 + t0
            policy = UPMPC(make_policy("expert", spec, seed), ens, spec, cfg, seed)
            policy.reset(branch)
            obs = world.reset_batch([start], [branch])[0]
            imagined, actions = [], []
            for _ in range(H):
                a = policy.act(obs)
                r = world.step_batch([a])[0]
                assert r is not None
                obs = r.last
                actions.append(a[0])
                imagined.append(np.concatenate([obs.state, obs.environment_state]))
                if r.done:
                    break
            twin.reset(seed)
            for a in prefix[:t0]:
                twin.step(a[None])
            real = []
            for a in actions:
                rr = twin.step(a[None])
                real.append(np.concatenate([rr.last.state, rr.last.environment_state]))
                if rr.done:
                    break
            n = min(len(real), len(imagined))
            o = [np.linalg.norm(imagined[t][d : d + 3] - real[t][d : d + 3]) * 100 for t in range(n)]
            e = [np.linalg.norm(imagined[t][:3] - real[t][:3]) * 100 for t in range(n)]
            obj.append(o + [np.nan] * (H - n))
            ee.append(e + [np.nan] * (H - n))
    err_o, err_e = np.array(obj), np.array(ee)
    return {
        "mode": mode,
        "rate": rate,
        "ntraj": ntraj,
        "horizon": horizon,
        "seeds": [seeds[0], seeds[-1]],
        "branches": BRANCHES,
        "object_error_cm": [float(np.nanmean(err_o[:, h])) for h in range(H)],
        "ee_error_cm": [float(np.nanmean(err_e[:, h])) for h in range(H)],
        "at_H": {
            "object_cm": float(np.nanmean(err_o[:, -1])),
            "ee_cm": float(np.nanmean(err_e[:, -1])),
            "n": int(np.sum(~np.isnan(err_o[:, -1]))),
        },
    }


def part_rollouts(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    grid = [(r, n, h) for r in args.rates for n in args.ntraj for h in args.plan_horizon]
    choose = range(args.choose[0], sum(args.choose))
    # plain rollouts are the noisy expert: one of UP-MPC's candidates at random, as many as the
    # conservative setting draws, so both pick from the same spread of actions
    plain_c = {n: rollouts(args, choose, "none", 0.0, n) for n in args.ntraj}
    cands = {g: rollouts(args, choose, "conservative", *g) for g in grid}

    def ratio_c(g: tuple[float, int, int]) -> float:
        p = plain_c[g[1]]["at_H"]
        return cands[g]["at_H"]["object_cm"] / p["object_cm"] + cands[g]["at_H"]["ee_cm"] / p["ee_cm"]

    best = min(grid, key=ratio_c)
    report = range(args.report[0], sum(args.report))
    plain_r = rollouts(args, report, "none", 0.0, best[1])
    cons_r = rollouts(args, report, "conservative", *best)
    ratio = {k: cons_r["at_H"][k] / plain_r["at_H"][k] for k in ("object_cm", "ee_cm")}
    t = Table(
        title=f"compounding error at H = 10 (conservative rate, ntraj, horizon {best}, chosen on {choose[0]}-{choose[-1]})"
    )
    for col in ("seeds", "plain: cube / ee (cm)", "conservative: cube / ee (cm)", "ratio cube / ee"):
        t.add_column(col, justify="right")
    for label, p, c in (("choose", plain_c[best[1]], cands[best]), ("report", plain_r, cons_r)):
        t.add_row(
            f"{label} {p['seeds'][0]}-{p['seeds'][1]}",
            f"{p['at_H']['object_cm']:.2f} / {p['at_H']['ee_cm']:.2f}",
            f"{c['at_H']['object_cm']:.2f} / {c['at_H']['ee_cm']:.2f}",
            f"{c['at_H']['object_cm'] / p['at_H']['object_cm']:.2f} / {c['at_H']['ee_cm'] / p['at_H']['ee_cm']:.2f}",
        )
    console.print(t)
    return {
        "choose": {
            "plain": {str(n): v for n, v in plain_c.items()},
            "conservative": {":".join(map(str, g)): v for g, v in cands.items()},
            "chosen": {"rate": best[0], "ntraj": best[1], "horizon": best[2]},
        },
        "report": {"plain": plain_r, "conservative": cons_r, "ratio_at_H": ratio},
        "target": "conservative / plain <= 0.7 at H = 10",
    }


# ---------------------------------------------------------------------- exploration
def part_explore(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    from datagen.rollouts import RolloutJob, generate
    from datagen.windows import load_episodes
    from worldmodels.ensemble import evaluate_ensemble, load_ensemble_config, train_ensemble
    from worldmodels.training import split

    runs = Path(args.runs) / "explore"
    n_max = args.explore_episodes
    policies = {
        "noisy expert": _mpc_yaml(
            runs / "noisy_expert.yaml",
            base="expert",
            ensemble=str(Path(args.ensemble).resolve()),
            mode="none",
            privileged=True,
        ),
        "optimistic UP-MPC": _mpc_yaml(
            runs / "optimistic.yaml",
            base="expert",
            ensemble=str(Path(args.ensemble).resolve()),
            mode="optimistic",
            rate=args.explore_rate,
            privileged=True,
        ),
    }
    held, held_meta = load_episodes(args.heldout, frames=False)
    _, held_ids = split(len(held), min(30, len(held) - 1))
    curves: dict[str, Any] = {}
    for label, yaml_path in policies.items():
        out = runs / label.replace(" ", "_")
        job = RolloutJob(
            scene=str(ROOT / "configs/scenes/push_cube.yaml"),
            scene_overrides={"cameras.0.resolution": [64, 64]},
            policies={yaml_path: 1.0},
            episodes=n_max,
            seed=6000,
            out=str(out / "data"),
            randomize=str(ROOT / "configs/randomization/push_cube.yaml"),
            workers=args.twin_workers,
        )
        generate(job, progress=False)
        eps, meta = load_episodes(out / "data", frames=False)
        points = []
        for n in args.explore_counts:
            cfg = load_ensemble_config(
                ROOT / "configs/worldmodels/ensemble.yaml",
                {"train.steps": args.explore_steps, "train.holdout_episodes": 0},
            )
            model_dir = out / f"ensemble_{n}"
            if not (model_dir / "model" / "config.json").exists():
                train_ensemble(cfg, eps[:n], meta, model_dir, progress=False)
            from worldmodels.ensemble import DynamicsEnsemble
            from worldmodels.training import with_physics

            model = DynamicsEnsemble.from_pretrained(model_dir / "model")
            r = evaluate_ensemble(model, with_physics(held, held_meta, model.cfg.physics), held_ids)
            points.append(
                {
                    "episodes": n,
                    "object_error_cm_h10": r["open_loop"]["10"]["object_error_cm"],
                    "ee_error_cm_h10": r["open_loop"]["10"]["ee_error_cm"],
                    "nll": r["one_step"]["nll"],
                }
            )
        curves[label] = points
    t = Table(
        title=f"held-out error of ensembles trained on N twin episodes ({args.heldout}, last 30 episodes)"
    )
    t.add_column("N", justify="right")
    for label in curves:
        t.add_column(f"{label}: cube h10 (cm) / NLL", justify="right")
    for i, n in enumerate(args.explore_counts):
        t.add_row(
            str(n), *(f"{c[i]['object_error_cm_h10']:.2f} / {c[i]['nll']:.3f}" for c in curves.values())
        )
    console.print(t)
    return {"curves": curves, "seeds_from": 6000, "rate": args.explore_rate, "heldout": str(args.heldout)}


# ---------------------------------------------------------------------- a weak policy, planned
def _twin_eval(args: argparse.Namespace, policy: str, seeds: tuple[int, int], tag: str) -> dict[str, Any]:
    from policy_eval.evaluate import load_eval_config, run_eval

    cfg = load_eval_config(
        ROOT / "configs/eval/demo.yaml",
        {
            "policies": [policy],
            "episodes": seeds[1],
            "seed": seeds[0],
            "videos": False,
            "strips": 0,
            "out": str(Path(args.runs) / "mpc" / f"{tag}_{seeds[0]}_{seeds[1]}"),
            "workers": args.twin_workers,
        },
    )
    t0 = time.perf_counter()
    res = run_eval(cfg, progress=False)
    r = res["policies"][policy]
    return {
        "policy": policy,
        "success_rate": r["success_rate"],
        "ci": [r["ci_low"], r["ci_high"]],
        "n": r["n"],
        "seconds_per_step": res["episode_seconds"] / max(1.0, r["mean_length"] * r["n"]),
        "wall_s": time.perf_counter() - t0,
    }


def part_mpc(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    runs = Path(args.runs) / "mpc"
    ens = str(Path(args.ensemble).resolve())
    grid = {}
    for m, r, g in args.mpc_grid:
        name = f"{m}_{r:g}" + (f"_gain{g:g}" if g else "")
        grid[name] = _mpc_yaml(
            runs / f"{name}.yaml", base="image_medium", ensemble=ens, mode=m, rate=r, min_gain=g
        )
    choose, report = tuple(args.choose), tuple(args.report)
    base_c = _twin_eval(args, "image_medium", choose, "base")
    chosen = {k: _twin_eval(args, v, choose, k) for k, v in grid.items()}
    best = max(chosen, key=lambda k: chosen[k]["success_rate"])
    base_r = _twin_eval(args, "image_medium", report, "base")
    best_r = _twin_eval(args, grid[best], report, best)
    t = Table(
        title=f"image_medium in the twin, alone and inside UP-MPC ({best}, chosen on {choose[0]}-{sum(choose) - 1})"
    )
    for c in ("seeds", "image_medium", f"UP-MPC {best}", "s / step (base, MPC)"):
        t.add_column(c, justify="right")
    for label, b, m in (("choose", base_c, chosen[best]), ("report", base_r, best_r)):
        t.add_row(
            label,
            f"{b['success_rate']:.2f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}]",
            f"{m['success_rate']:.2f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}]",
            f"{b['seconds_per_step']:.3f}, {m['seconds_per_step']:.3f}",
        )
    console.print(t)
    return {
        "choose": {"base": base_c, "candidates": chosen, "chosen": best},
        "report": {"base": base_r, "mpc": best_r},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ensemble", required=True)
    ap.add_argument(
        "--part", nargs="+", default=["rollouts", "explore", "mpc"], choices=["rollouts", "explore", "mpc"]
    )
    ap.add_argument("--heldout", default=str(ROOT / "data/push_cube_small"))
    ap.add_argument("--explore-episodes", type=int, default=60)
    ap.add_argument("--explore-counts", type=int, nargs="+", default=[15, 30, 60])
    ap.add_argument("--explore-steps", type=int, default=2000)
    ap.add_argument("--explore-rate", type=float, default=30.0)
    ap.add_argument("--runs", default=str(ROOT / "runs/coplanner"))
    ap.add_argument("--choose", type=int, nargs=2, default=[2000, 30], metavar=("SEED", "N"))
    ap.add_argument("--report", type=int, nargs=2, default=[4000, 50], metavar=("SEED", "N"))
    ap.add_argument(
        "--rates", type=float, nargs="+", default=[3.0, 10.0, 30.0, 100.0], help="conservative rates tried"
    )
    ap.add_argument("--ntraj", type=int, nargs="+", default=[5], help="candidate counts tried (rollouts)")
    ap.add_argument(
        "--plan-horizon", type=int, nargs="+", default=[5], help="planning horizons tried (rollouts)"
    )
    ap.add_argument(
        "--mpc-grid",
        type=lambda t: (
            t.split(":")[0],
            float(t.split(":")[1]),
            float(t.split(":")[2]) if t.count(":") > 1 else 0.0,
        ),
        nargs="+",
        default=[("plain", 0.0, 0.0), ("conservative", 10.0, 0.0), ("conservative", 100.0, 0.0)],
        help="MODE:RATE[:MIN_GAIN] settings of UP-MPC around image_medium tried on the choose range",
    )
    ap.add_argument("--twin-workers", type=int, default=2)
    add_result_arguments(ap, ROOT / "experiments/results", "coplanner")
    args = ap.parse_args()
    args.twin = None
    console = Console()
    out_file = Path(args.results_dir) / f"{args.name}.json"
    previous = json.loads(out_file.read_text()) if out_file.exists() else {}
    parts = {k: previous[k] for k in ("rollouts", "explore", "mpc") if k in previous}
    for part in args.part:
        parts[part] = {"rollouts": part_rollouts, "explore": part_explore, "mpc": part_mpc}[part](
            args, console
        )
    write_result(args.name, {"experiment": "coplanner", "ensemble": args.ensemble, **parts}, args.results_dir)


if __name__ == "__main__":
    main()
