"""Where the success judge's errors come from: the imagined robot or the imagined cube.

Judges the held-out episodes as benchmarks/worldmodel_fidelity.py does (imagined from the first frame
with the recorded actions), but after every generated step the end-effector position in the imagined
state (proprio dims 0-2, which the next pass conditions on) is replaced by:

- `model`: nothing replaced (the benchmark's judge);
- `recorded`: the twin's recorded end-effector position at that step (an oracle robot);
- `controller`: the twin controller's target integrated from the actions alone (clipped to
  `max_delta`, kept in the workspace, no wind-up), i.e. a kinematic robot model;
- `workspace`: the model's own prediction, clamped to the workspace (no ee below the table).

If the judge stays wrong with the recorded end-effector, the error is in the imagined contact
dynamics of the cube, not in the drift of the imagined robot. The onset analysis then rolls every
episode out to its end with the recorded end-effector and compares when (and at what ee-to-cube
distance) the imagined and the twin's cube start to move, and how far each travels.

    python experiments/judge_diagnosis.py [--model DIR] [--data DIR] [--modes ...] [--no-onset]

Writes experiments/results/judge_diagnosis.json; a call with fewer `--modes` keeps the other modes
of an earlier result for the same model and episodes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.results import add_result_arguments, result_path, write_result

ROOT = Path(__file__).resolve().parents[1]

MODES = ("model", "recorded", "controller", "workspace")


def push_onset(world, episodes) -> dict:  # type: ignore[no-untyped-def]
    """With the recorded ee and no early stop: when does the imagined cube start to move, compared with the
    twin's? Onset = the first step the cube is more than a threshold from its start (xy)."""
    import numpy as np

    from worldmodels.video_world import Context

    world.mode, stop = "recorded", world.stop_on_success
    world.stop_on_success = False
    try:
        world.reset_batch(
            [Context.from_episode(e, world.cameras, 0) for e in episodes], list(range(len(episodes)))
        )
        results = world.step_batch([e["actions"][:-1] for e in episodes])
    finally:
        world.stop_on_success = stop
    out = {}
    for th in (0.003, 0.01):
        rows = []
        for e, r in zip(episodes, results, strict=True):
            c0 = e["env_state"][0, :2]
            true_c = e["env_state"][1:, :2]
            imag_c = np.array([o.environment_state[:2] for o in r.observations])
            ee = e["state"][1:, :2]
            moved_t = np.linalg.norm(true_c - c0, axis=1) > th
            moved_i = np.linalg.norm(imag_c - c0, axis=1) > th
            if not moved_t.any():
                continue
            t_on = int(np.argmax(moved_t))
            i_on = int(np.argmax(moved_i)) if moved_i.any() else len(moved_i)
            rows.append(
                (
                    t_on,
                    i_on,
                    np.linalg.norm(ee[t_on] - c0),
                    np.linalg.norm(ee[min(i_on, len(ee) - 1)] - c0),
                    np.linalg.norm(true_c[-1] - c0),
                    np.linalg.norm(imag_c[-1] - c0),
                )
            )
        a = np.array(rows)
        key = f"{1000 * th:.0f}mm"
        out[key] = {
            "episodes": len(a),
            "twin_onset_step": float(a[:, 0].mean()),
            "imagined_onset_step": float(a[:, 1].mean()),
            "imagined_earlier": int((a[:, 1] < a[:, 0]).sum()),
            "imagined_later": int((a[:, 1] > a[:, 0]).sum()),
            "ee_to_cube_at_onset_cm": {
                "twin": float(100 * a[:, 2].mean()),
                "imagined": float(100 * a[:, 3].mean()),
            },
            "cube_travel_cm": {"twin": float(100 * a[:, 4].mean()), "imagined": float(100 * a[:, 5].mean())},
        }
        o = out[key]
        print(
            f"onset at {key}: twin step {o['twin_onset_step']:.1f}, imagined {o['imagined_onset_step']:.1f} "
            f"(earlier in {o['imagined_earlier']}/{o['episodes']}, later in {o['imagined_later']}); ee-to-cube "
            f"{o['ee_to_cube_at_onset_cm']['twin']:.2f} vs {o['ee_to_cube_at_onset_cm']['imagined']:.2f} cm; "
            f"cube travel {o['cube_travel_cm']['twin']:.2f} vs {o['cube_travel_cm']['imagined']:.2f} cm",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "assets/worldmodels/push_cube_tiny"))
    ap.add_argument("--data", default=str(ROOT / "data/push_cube_small"))
    ap.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    ap.add_argument("--no-onset", action="store_true", help="skip the onset analysis")
    add_result_arguments(ap, ROOT / "experiments/results", "judge_diagnosis")
    args = ap.parse_args()

    import numpy as np
    import torch

    from datagen.lerobot import LeRobotDataset
    from datagen.windows import load_episodes
    from scenes.spec import SceneSpec
    from worldmodels.evaluation import judge_episodes
    from worldmodels.training import split
    from worldmodels.video_world import VideoWorld

    class EEOverride(VideoWorld):
        """A VideoWorld whose imagined ee position is replaced after each pass (see the module docstring)."""

        mode = "model"
        recorded: list[np.ndarray] = []

        def reset_batch(self, contexts, seeds):  # type: ignore[no-untyped-def]
            out = super().reset_batch(contexts, seeds)
            for k, (ep, c) in enumerate(zip(self.episodes, contexts, strict=True)):
                ep.target = c.state[-1, :3].astype(np.float64)  # type: ignore[attr-defined]
                ep.batch_index = k  # type: ignore[attr-defined]
            return out

        def _generate(self, eps, chunks):  # type: ignore[no-untyped-def]
            lat, vec, unc = super()._generate(eps, chunks)
            if self.mode == "model":
                return lat, vec, unc
            ctrl = SPEC.control
            lo, hi = np.asarray(ctrl.workspace_low), np.asarray(ctrl.workspace_high)
            for j, ep in enumerate(eps):
                for k in range(vec.shape[2]):
                    if self.mode == "recorded":
                        rec = self.recorded[ep.batch_index]
                        ee = rec[min(ep.step + k + 1, len(rec) - 1)]
                    elif self.mode == "controller":
                        # a kinematic robot: the hand is where the controller's target is
                        d = chunks[j][k, :3].cpu().numpy()
                        ep.target = ee = ctrl.next_target(ep.target, ep.target, d)
                    else:
                        ee = np.clip(vec[j, :, k, :3].mean(0).cpu().numpy(), lo, hi)
                    vec[j, :, k, :3] = torch.as_tensor(ee, dtype=vec.dtype)
            return lat, vec, unc

    torch.manual_seed(0)
    world = EEOverride.from_pretrained(args.model)
    cfg = world.cfg
    if cfg.scene is None:
        raise SystemExit(f"{args.model}: the model carries no scene spec (needed for the controller limits)")
    SPEC = SceneSpec.model_validate(cfg.scene)
    n = LeRobotDataset(args.data).num_episodes
    held = split(n, cfg.train.holdout_episodes)[1]
    episodes, _ = load_episodes(args.data, world.cameras, held)
    EEOverride.recorded = [e["state"][:, :3].astype(np.float64) for e in episodes]
    if len(episodes) > 32:  # judge_episodes resets batches of 32: ep.batch_index must index the recordings
        raise SystemExit("more than 32 held-out episodes: the recorded mode assumes one judge batch")
    rows = {}
    for mode in args.modes:
        world.mode = mode
        torch.manual_seed(0)
        j = judge_episodes(world, episodes)
        rows[mode] = {
            k: j[k]
            for k in (
                "predicate_accuracy",
                "predicate_auroc",
                "predicate_false_positives",
                "predicate_false_negatives",
                "value_accuracy",
                "final_object_error_m",
            )
        }
        r = rows[mode]
        print(
            f"{mode:<11} judge {r['predicate_accuracy']:.3f} (FP {r['predicate_false_positives']}, "
            f"FN {r['predicate_false_negatives']}), value {r['value_accuracy']:.3f}, cube off by "
            f"{100 * r['final_object_error_m']:.2f} cm at the end",
            flush=True,
        )
    onset = None if args.no_onset else push_onset(world, episodes)
    out = result_path(args.name, args.results_dir)
    old = json.loads(out.read_text()) if out.exists() else {}
    if old.get("model") == args.model and old.get("held_out_episodes") == held:
        rows = {**old.get("modes", {}), **rows}  # keep modes measured by an earlier call
        onset = onset if onset is not None else old.get("onset")
    result = {
        "model": args.model,
        "data": args.data,
        "held_out_episodes": held,
        "modes": rows,
        "onset": onset,
    }
    write_result(out, result)


if __name__ == "__main__":
    main()
