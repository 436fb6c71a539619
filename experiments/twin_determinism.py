"""Which parts of the twin's outcomes depend on the machine? The same episodes under settings that
make one machine compute like another.

    python experiments/twin_determinism.py                       # make demo's twin: 4 image policies x 8 seeds
    python experiments/twin_determinism.py --policies image_mild --seeds 2

Each variant runs in a fresh process with environment variables that change how a library computes
without changing what it computes: numpy and torch without their AVX-512 kernels (what an AVX2-only
CPU runs), and the physics on one thread; `reference_again` repeats the reference (run-to-run
determinism). (Mesa's software rasteriser at SSE width, LP_NATIVE_VECTOR_WIDTH=128, crashed with a
double free in Debian 12's Mesa, so rendering is not varied here.) Every episode's actions, proprio, object poses and frames are hashed per step;
the result says, per variant, how many outcomes and trajectories differ from the reference run and at
which step each trajectory first diverged (and whether it was a frame or the physics that did).
The reference run's hashes are kept in the result, so that a run on another machine compares itself
with it (`--against experiments/results/twin_determinism.json`).

What cannot be emulated on one machine: Genesis JIT-compiles its physics kernels for the host CPU
(LLVM, float32, fast math), so another CPU's vector units can reorder its sums. The machine
fingerprint beside every result (`common.machine`) records the instruction sets for that reason.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/eval/demo.yaml"
AVX512 = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
VARIANTS: dict[str, dict[str, str]] = {
    "reference": {},
    "reference_again": {},
    "numpy_torch_avx2": {"NPY_DISABLE_CPU_FEATURES": AVX512, "ATEN_CPU_CAPABILITY": "avx2"},
    "physics_one_thread": {"QD_NUM_THREADS": "1"},
}


def _digest(*arrays: object) -> str:
    import numpy as np

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def child(policies: list[str], seeds: list[int]) -> list[dict[str, object]]:
    """Run every (policy, seed) episode of make demo's twin; per step a hash of the frame and one of the
    physical state (proprio + object poses)."""
    from policy_eval.evaluate import load_eval_config
    from policy_eval.policies import make_policy, policy_info
    from policy_eval.runner import rollout
    from scenes.twin import DigitalTwin

    cfg = load_eval_config(CONFIG)
    spec = cfg.load_scene()
    twin = DigitalTwin(spec, render=True)
    cam = spec.cameras[0].name
    out = []
    for p in policies:
        for s in seeds:
            ep = rollout(
                twin,
                make_policy(p, spec, seed=cfg.seed),
                s,
                policy_id=p,
                privileged=policy_info(p).privileged,
            )
            obs = [ep.initial_observation] + [st.observation for st in ep.steps]
            out.append(
                {
                    "policy": p,
                    "seed": s,
                    "success": ep.success,
                    "length": ep.length,
                    "frames": [_digest(o.images[cam]) for o in obs],
                    "physics": [_digest(o.state, o.environment_state) for o in obs],
                    "actions": [_digest(st.action) for st in ep.steps],
                }
            )
    return out


def first_divergence(ref: dict, other: dict) -> dict[str, object] | None:
    """The first step where the two episodes differ, and what differed first there."""
    for t in range(max(len(ref["frames"]), len(other["frames"]))):
        for kind in ("physics", "frames", "actions"):
            a, b = ref[kind][t : t + 1], other[kind][t : t + 1]
            if a != b:
                return {"step": t, "first": kind}
    return None


def compare(ref: list[dict], other: list[dict]) -> dict[str, object]:
    diverged = []
    for a, b in zip(ref, other, strict=True):
        d = first_divergence(a, b)
        if d is not None:
            diverged.append(
                {"policy": a["policy"], "seed": a["seed"], **d, "success": [a["success"], b["success"]]}
            )
    return {
        "episodes": len(ref),
        "outcomes_changed": sum(a["success"] != b["success"] for a, b in zip(ref, other, strict=True)),
        "trajectories_changed": len(diverged),
        "diverged": diverged,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="image_expert,image_mild,image_medium,image_severe")
    ap.add_argument("--seeds", type=int, default=8, help="seeds from the demo's first seed (1000)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument(
        "--against", type=Path, help="a result of this script from another machine to compare with"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_result_arguments(ap, ROOT / "experiments/results", "twin_determinism")
    args = ap.parse_args()
    policies = args.policies.split(",")
    seeds = list(range(1000, 1000 + args.seeds))
    if args.child:
        print(json.dumps(child(policies, seeds)))
        return
    runs: dict[str, list[dict]] = {}
    for name in args.variants.split(","):
        env = {**os.environ, **VARIANTS[name]}
        cmd = [sys.executable, __file__, "--child", "--policies", args.policies, "--seeds", str(args.seeds)]
        print(f"variant {name}: {VARIANTS[name] or 'this machine as it is'}", file=sys.stderr, flush=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise SystemExit(f"variant {name} failed:\n{r.stderr[-3000:]}")
        runs[name] = json.loads(r.stdout.strip().splitlines()[-1])
    ref = runs[next(iter(runs))]
    table = {name: compare(ref, run) for name, run in runs.items()}
    if args.against is not None:
        other = json.loads(args.against.read_text())
        mine = {(e["policy"], e["seed"]) for e in ref}
        theirs = [e for e in other["reference_episodes"] if (e["policy"], e["seed"]) in mine]
        if len(theirs) != len(ref):
            raise SystemExit(f"{args.against}: holds {len(theirs)} of this run's {len(ref)} episodes")
        key = {(e["policy"], e["seed"]): e for e in theirs}
        table[f"against {other['machine']['cpu']}"] = compare(
            [key[(e["policy"], e["seed"])] for e in ref], ref
        )
    print(f"{'variant':<22}{'outcomes changed':>18}{'trajectories changed':>22}")
    for name, c in table.items():
        print(
            f"{name:<22}{c['outcomes_changed']:>12}/{c['episodes']:<5}{c['trajectories_changed']:>16}/{c['episodes']}"
        )
    write_result(
        args.name,
        {
            "policies": policies,
            "seeds": seeds,
            "variants": {k: VARIANTS[k] for k in runs},
            "comparison": table,
            "successes": {k: sum(e["success"] for e in v) for k, v in runs.items()},
            "reference_episodes": ref,
        },
        args.results_dir,
    )


if __name__ == "__main__":
    main()
