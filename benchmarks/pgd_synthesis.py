"""Policy-guided trajectory diffusion against model rollouts: dynamics error in the twin and on-policy-ness.

    python benchmarks/pgd_synthesis.py --data data/push_cube_small --trajectory runs/traj/model \
        --policy runs/td3bc/step-020000 --ensemble assets/worldmodels/push_cube_ensemble \
        [--coeffs 0,0.03,0.1,0.3,1 --windows 256 --checked 400 --seed 100]

For each guidance coefficient, `--windows` windows are sampled (seed `--seed`; coefficient 0 is unguided
diffusion) and their states taken as `datagen synth` records them: the arm posed by the sampled end
effector (`DigitalTwin.posed_by_ee`: joints by inverse kinematics from the sampled ones, so that a state
agrees with itself). On-policy-ness: the target policy's mean action log-likelihood log pi(a | s) over every
synthetic transition (up to each window's first solved step), and the mean distance of the actions from
the policy's own, per coefficient (a curve).

Dynamics error: `--checked` transitions (s_t, a_t, s_t+1) drawn uniformly from each source are replayed in
the twin (`DigitalTwin.set_state(s_t)`, then `step(a_t)`, nominal physics) and the twin's next state
compared with s_t+1. `--reset kinematic` (the default) poses s_t at rest, the controller holding the hand
where it is. `--reset history` puts the twin in s_t moving as the transition's own trajectory has it: joint
and object velocities from s_t-1 (none at its first step) and the controller's ee target rebuilt through the
trajectory's actions from its first step; a stricter test of a generator (its velocities and actions must
agree with its states too) on a lower floor. A trajectory's first step has the history it carries: a model
trained with `history` samples it with each window (the controller's target); the ensemble's rollouts and
the dataset windows start from recorded windows and have their recorded target; windows without one start at
rest, the controller holding the hand. Reported: the mean distance (cm) over the end effector's and the
objects' positions together, and each alone; how far the end effector the state records is from where its
joints put it (a state that contradicts itself); and the end effector's error against the next state's end
effector recomputed from its joints (`ee_kinematic_cm`).

The sources: every coefficient's windows; autoregressive rollouts of the dynamics ensemble under the same
target policy (its actions; an elite member drawn per step and sampled, COPlanner's way, and the elites'
mean) over the same horizon from the start states of dataset windows (told the nominal physics where it
takes physics), cut at the first solved step as the windows are; with `--imagined DATA`, the video world
model's rollouts of the target policy (`dreamtwin datagen imagine --policy <the --policy> --all`, from the
twin's initial states), their state read-out over the same horizon; and the dataset's own transitions, the
floor the reset leaves (at rest about 1.1 cm, mostly the hand lagging the target it had; with the history
about 0.15 cm); and the recorded windows the ensemble starts from, each replayed from its own first step as
a sampled window is (`dataset windows`, with their recorded start target: the floor a generator's windows
are held to). Each source's mean positions error is also given as a multiple of the sampled ensemble
rollouts' (the issue's measure: the ensemble's states as its world records them, each member's prediction
sampled channel by channel, so its end effector and joints disagree by centimetres), with a 95% bootstrap
interval over the replayed transitions; and as a multiple of the same rollouts posed by the end effector as
the synthetic states are (`ensemble rollouts (sampled, posed by the ee)`: the same treatment for both
generators). Writes benchmarks/results/pgd_synthesis.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from rich.console import Console
from rich.table import Table

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
IMAGINED = "video world model rollouts (state read-out)"
SAMPLED = "ensemble rollouts (sampled)"
RATIO = "vs_sampled_ensemble"
WINDOWS = "dataset windows"
MEAN = "ensemble rollouts (elites' mean)"
POSED = "ensemble rollouts (sampled, posed by the ee)"
POSED_RATIO = "vs_posed_ensemble"


def solved_steps(spec: Any, states: np.ndarray) -> np.ndarray:
    """bool [B, T]: the scene's success predicate on each step's object poses (initial poses: step 0's)."""
    from scenes.predicates import PREDICATES

    s = spec.task.success
    entry, params = PREDICATES.get(s.name), s.typed_params()
    d = states.shape[-1] - 7 * len(spec.objects)

    def poses(x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            o.name: (
                x[d + 7 * i : d + 7 * i + 3].astype(np.float64),
                x[d + 7 * i + 3 : d + 7 * i + 7].astype(np.float64),
            )
            for i, o in enumerate(spec.objects)
        }

    out = np.zeros(states.shape[:2], bool)
    for b in range(len(states)):
        first = poses(states[b, 0])
        out[b] = [bool(entry.fn(params, poses(x), first)) for x in states[b]]
    return out


def ensemble_rollouts(
    ensemble: Any, policy: Any, starts: np.ndarray, horizon: int, seed: int, sample: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(states [B, H, S], actions [B, H, A]) of the ensemble rolled out under the policy's actions."""
    import torch

    gen = torch.Generator().manual_seed(seed) if sample else None
    s = torch.from_numpy(starts.astype(np.float32))
    # nominal physics (log scale 0), as the twin that checks the transitions
    phys = torch.zeros(len(s), len(ensemble.cfg.physics)) if ensemble.cfg.physics else None
    states, actions = [s], []
    with torch.no_grad():
        for _ in range(horizon - 1):
            a = policy.mean_action(s)
            actions.append(a)
            s = ensemble.step(s, a, phys, gen).next
            states.append(s)
        actions.append(policy.mean_action(s))
    return torch.stack(states, 1).numpy(), torch.stack(actions, 1).numpy()


class Replay(NamedTuple):
    """Transitions (s_t, a_t, s_t+1) with what a trajectory's history says beyond s_t: the state one
    control step earlier (`has_prev` false at a row's first step) and the controller's ee target."""

    s: np.ndarray
    a: np.ndarray
    n: np.ndarray
    prev: np.ndarray
    has_prev: np.ndarray
    target: np.ndarray


def posed_by_ee(twin: Any, states: np.ndarray, ends: list[int]) -> np.ndarray:
    """Rows of states [B, H, S] as `datagen synth` records them: each state up to its row's end (and the next
    one) with the arm posed by its end effector (`DigitalTwin.posed_by_ee`)."""
    d = len(twin.proprio())
    out = np.array(states, np.float32, copy=True)
    for b, end in enumerate(ends):
        for t in range(min(end + 1, out.shape[1])):
            out[b, t, :d] = twin.posed_by_ee(out[b, t, :d])
    return out


def replay_rows(
    spec: Any,
    states: np.ndarray,
    actions: np.ndarray,
    ends: list[int],
    start: np.ndarray | None = None,
) -> Replay:
    """The transitions of rows of states [B][T, S] and actions [B][T, A] up to each row's `ends[b]` (its
    first solved step; a row with end 0 gives none). The controller's target is rebuilt as the twin's
    controller builds it, from the row's first step through its actions: from the hand itself (a row that
    starts at rest), or from `start` [B, 3], the target a row that starts in motion carries
    (`Windows.start_target`). A row's first step has no previous state (no velocities)."""
    parts: list[tuple[np.ndarray, ...]] = []
    for b, (x, a, end) in enumerate(zip(states, actions, ends, strict=True)):
        if end < 1:
            continue
        targets = spec.control.targets(x[:end, :3], a[:end, :3], None if start is None else start[b])
        prev = np.concatenate([x[:1], x[: end - 1]])
        has_prev = np.arange(end) > 0
        parts.append((x[:end], a[:end], x[1 : end + 1], prev, has_prev, targets))
    return Replay(*(np.concatenate(p) for p in zip(*parts, strict=True)))


def episode_replay(spec: Any, episodes: list[dict[str, np.ndarray]], horizon: int | None = None) -> Replay:
    """The transitions of dataset episodes (`load_episodes(..., frames=False)`), each from its start up to
    its first success or its `horizon`-th state, with the episode's history."""
    from worldmodels.ensemble import episode_states
    from worldmodels.trajectory import first_solved

    rows = [episode_states(e)[:horizon] for e in episodes]
    ends = first_solved(
        [np.asarray(e["success"][: len(x)], bool) for e, x in zip(episodes, rows, strict=True)]
    )
    return replay_rows(spec, rows, [e["actions"] for e in episodes], ends)


def dynamics_error(
    twin: Any, r: Replay, checked: int, seed: int, state_dim: int, reset: str = "kinematic"
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Replay `checked` random transitions in the twin: the mean position errors (cm), and each replayed
    transition's positions error against s_t+1 as it is (`raw`) and with its end effector where its joints
    put it (`kinematic`). `reset`: "kinematic" poses s_t with zero velocities and the controller
    holding the hand where it is; "history" adds what the transition's own trajectory says: velocities
    from the step before and the controller's target."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(r.s), size=min(checked, len(r.s)), replace=False)
    ee, obj, both, both_kin, fk, kin = [], [], [], [], [], []
    history = reset == "history"
    for k in pick:
        s, n = r.s[k], r.n[k]
        prev = (r.prev[k, :state_dim], r.prev[k, state_dim:]) if history and r.has_prev[k] else None
        twin.set_state(s[:state_dim], s[state_dim:], previous=prev, target=r.target[k] if history else None)
        # the end effector where the state's joints put it, against the state's own end effector
        fk.append(np.linalg.norm(twin.proprio()[:3] - s[:3]) * 100)
        twin.step(r.a[k][None])
        got = np.concatenate([twin.proprio(), twin.environment_state()])
        with twin.rendering(False):  # the next state's end effector where its joints put it
            twin.show(n[:state_dim], n[state_dim:])
        n_kin = np.concatenate([twin.proprio()[:3], n[3:]])
        kin.append(np.linalg.norm(got[:3] - n_kin[:3]) * 100)
        e = np.linalg.norm(got[:3] - n[:3]) * 100
        o = np.linalg.norm(got[state_dim : state_dim + 3] - n[state_dim : state_dim + 3]) * 100
        ee.append(e)
        obj.append(o)
        pos = [slice(0, 3)] + [
            slice(state_dim + 7 * i, state_dim + 7 * i + 3) for i in range((len(got) - state_dim) // 7)
        ]
        both.append(np.linalg.norm(np.concatenate([got[p] - n[p] for p in pos])) * 100)
        both_kin.append(np.linalg.norm(np.concatenate([got[p] - n_kin[p] for p in pos])) * 100)
    return {
        "positions_cm": float(np.mean(both)),
        "ee_cm": float(np.mean(ee)),
        "object_cm": float(np.mean(obj)),
        "ee_vs_joints_cm": float(np.mean(fk)),
        "ee_kinematic_cm": float(np.mean(kin)),
        "positions_kinematic_cm": float(np.mean(both_kin)),
        "transitions": int(len(pick)),
    }, {"raw": np.asarray(both), "kinematic": np.asarray(both_kin)}


def on_policy(policy: Any, s: np.ndarray, a: np.ndarray) -> dict[str, float]:
    import torch

    with torch.no_grad():
        st, ac = torch.from_numpy(s.astype(np.float32)), torch.from_numpy(a.astype(np.float32))
        ll = policy.log_prob(st, ac)
        dist = (ac - policy.mean_action(st)).norm(dim=-1)
    return {"log_likelihood": float(ll.mean()), "action_distance": float(dist.mean()), "transitions": len(s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data/push_cube_small"))
    ap.add_argument("--trajectory", required=True, help="trajectory diffusion checkpoint")
    ap.add_argument("--policy", required=True, help="target policy (a td3bc checkpoint)")
    ap.add_argument("--ensemble", default=str(ROOT / "assets/worldmodels/push_cube_ensemble"))
    ap.add_argument(
        "--imagined",
        default=None,
        help="also a dataset of the target policy rolled out in a video world model (dreamtwin datagen imagine "
        "--policy <the --policy> --all): its state read-out's transitions over the first horizon steps",
    )
    ap.add_argument("--coeffs", default="0,0.03,0.1,0.3,1", help="guidance coefficients (0: unguided)")
    ap.add_argument("--windows", type=int, default=256, help="windows sampled per coefficient")
    ap.add_argument("--checked", type=int, default=400, help="transitions replayed in the twin per source")
    ap.add_argument("--seed", type=int, default=100, help="sampling seed")
    ap.add_argument("--sampler-steps", type=int, default=None, help="Heun steps (default: the model's)")
    ap.add_argument(
        "--reset",
        choices=("history", "kinematic"),
        default="kinematic",
        help="how the twin is put in s_t: posed at rest (kinematic, the issue's measure), or moving with the "
        "velocities and controller target the transition's history gives (history)",
    )
    add_result_arguments(ap, ROOT / "benchmarks/results", "pgd_synthesis")
    args = ap.parse_args()

    import torch

    from datagen.windows import load_episodes
    from policy_eval.metrics import ratio_interval
    from policy_eval.policies.td3bc import TD3BCPolicy
    from scenes.spec import SceneSpec
    from scenes.twin import DigitalTwin
    from worldmodels.ensemble import DynamicsEnsemble
    from worldmodels.trajectory import TrajectoryDiffusion, dataset_windows, first_solved

    model = TrajectoryDiffusion.from_pretrained(args.trajectory)
    policy = TD3BCPolicy.from_pretrained(args.policy)
    ensemble = DynamicsEnsemble.from_pretrained(args.ensemble)
    episodes, meta = load_episodes(args.data, frames=False)
    spec = SceneSpec.model_validate(meta["scene"])
    cfg = model.cfg
    H, d = cfg.horizon, cfg.state_dim
    twin = DigitalTwin(spec.model_copy(update={"cameras": []}), render=False)
    coeffs = [float(c) for c in args.coeffs.split(",")]

    sources: dict[str, Replay] = {}
    curve = {}
    for c in coeffs:
        gen = torch.Generator().manual_seed(args.seed)
        w = model.sample(args.windows, gen, policy=policy, coeff=c, steps=args.sampler_steps)
        label = "unguided diffusion" if c == 0 else f"PGD {c:g}"
        ends = first_solved(w.success)
        states = posed_by_ee(twin, w.states, ends)  # as `datagen synth` records them
        sources[label] = replay_rows(spec, states, w.actions, ends, w.start_target())
        curve[f"{c:g}"] = on_policy(policy, sources[label].s, sources[label].a)
    real = dataset_windows(episodes, H, list(range(len(episodes))), spec.control)
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(len(real.states), size=args.windows, replace=False)
    starts = real.states[picked, 0]
    # the recorded controller target at those starts (`--reset history` gives it to the sources that start
    # there)
    assert real.history is not None
    real_start = real.history[picked, 0]
    rollouts = {}
    for label, sample in ((SAMPLED, True), (MEAN, False)):
        st, ac = ensemble_rollouts(ensemble, policy, starts, H, args.seed, sample)
        rollouts[label] = (st, ac, first_solved(solved_steps(spec, st)))
        sources[label] = replay_rows(spec, st, ac, rollouts[label][2], real_start)
        curve[label] = on_policy(policy, sources[label].s, sources[label].a)
    # each recorded transition once, up to the episode's first success, with the episode's history
    sources["dataset"] = episode_replay(spec, episodes)
    curve["dataset"] = on_policy(policy, sources["dataset"].s, sources["dataset"].a)
    if args.imagined:  # the video world model's state read-out under the target policy, the same horizon
        imagined, _ = load_episodes(args.imagined, frames=False)
        sources[IMAGINED] = episode_replay(spec, imagined, H)
        curve[IMAGINED] = on_policy(policy, sources[IMAGINED].s, sources[IMAGINED].a)
    # the recorded windows the ensemble starts from, each replayed from its own first step as a sampled
    # window is: the floor for windows that may start in motion (last, so the others' draws stay)
    sources[WINDOWS] = replay_rows(
        spec, real.states[picked], real.actions[picked], first_solved(real.success[picked]), real_start
    )
    curve[WINDOWS] = on_policy(policy, sources[WINDOWS].s, sources[WINDOWS].a)
    # the sampled ensemble's rollouts posed as `datagen synth` poses its states: the same treatment for both
    # generators (last, so the others' draws stay)
    st, ac, ends = rollouts[SAMPLED]
    sources[POSED] = replay_rows(spec, posed_by_ee(twin, st, ends), ac, ends, real_start)
    curve[POSED] = on_policy(policy, sources[POSED].s, sources[POSED].a)

    errors, each = {}, {}
    for i, (label, r) in enumerate(sources.items()):
        errors[label], each[label] = dynamics_error(twin, r, args.checked, args.seed + i, d, args.reset)
    for label in sources:  # the measure: a source's mean error over the sampled ensemble's
        errors[label][RATIO] = ratio_interval(each[label]["raw"], each[SAMPLED]["raw"], seed=args.seed)
        # against the ensemble's rollouts posed as the synthetic states are
        errors[label][POSED_RATIO] = ratio_interval(each[label]["raw"], each[POSED]["raw"], seed=args.seed)

    console = Console()
    t = Table(
        title=f"dynamics error in the twin ({args.checked} transitions a source, horizon {H}, {args.reset} reset)"
    )
    for col in (
        "source",
        "positions (cm)",
        "end effector (cm)",
        "object (cm)",
        "ee vs joints (cm)",
        "ee from joints (cm)",
        "x sampled ensemble [95%]",
        "x posed ensemble [95%]",
        "log pi(a|s)",
        "|a - mu(s)|",
    ):
        t.add_column(col, justify="right" if col != "source" else "left")
    keys = [f"{c:g}" for c in coeffs] + [k for k in curve if k not in {f"{c:g}" for c in coeffs}]
    for label, key in zip(sources, keys, strict=True):
        e, o = errors[label], curve[key]
        t.add_row(
            label,
            f"{e['positions_cm']:.3f}",
            f"{e['ee_cm']:.3f}",
            f"{e['object_cm']:.3f}",
            f"{e['ee_vs_joints_cm']:.3f}",
            f"{e['ee_kinematic_cm']:.3f}",
            f"{e[RATIO]['value']:.2f} [{e[RATIO]['low']:.2f}, {e[RATIO]['high']:.2f}]",
            f"{e[POSED_RATIO]['value']:.2f} [{e[POSED_RATIO]['low']:.2f}, {e[POSED_RATIO]['high']:.2f}]",
            f"{o['log_likelihood']:.2f}",
            f"{o['action_distance']:.4f}",
        )
    console.print(t)
    write_result(
        args.name,
        {
            "benchmark": "pgd_synthesis",
            "data": args.data,
            "trajectory": args.trajectory,
            "policy": args.policy,
            "ensemble": args.ensemble,
            "imagined": args.imagined,
            "seed": args.seed,
            "reset": args.reset,
            "sampler_steps": args.sampler_steps or model.cfg.sampler_steps,
            "windows": args.windows,
            "horizon": H,
            "on_policy": curve,
            "dynamics_error": errors,
        },
        args.results_dir,
    )


if __name__ == "__main__":
    main()
