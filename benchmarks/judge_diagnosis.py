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
dynamics of the cube, not in the drift of the imagined robot.

    python benchmarks/judge_diagnosis.py [--model DIR] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("model", "recorded", "controller", "workspace")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "assets/worldmodels/push_cube_tiny"))
    ap.add_argument("--data", default=str(ROOT / "data/push_cube_small"))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/judge_diagnosis.json"))
    args = ap.parse_args()

    import numpy as np
    import torch

    from datagen.lerobot import LeRobotDataset
    from datagen.windows import load_episodes
    from scenes.config import atomic_write_text
    from scenes.spec import SceneSpec
    from worldmodels.evaluation import judge_episodes
    from worldmodels.video_world import VideoWorld

    class EEOverride(VideoWorld):
        """A VideoWorld whose imagined ee position is replaced after each pass (see the module docstring)."""

        mode = "model"
        recorded: list[np.ndarray] = []

        def reset_batch(self, contexts, seeds, steps=None):  # type: ignore[no-untyped-def]
            out = super().reset_batch(contexts, seeds, steps)
            for k, (ep, c) in enumerate(zip(self.episodes, contexts, strict=True)):
                ep.target = c.state[-1, :3].astype(np.float64)  # type: ignore[attr-defined]
                ep.batch_index = k  # type: ignore[attr-defined]
            return out

        def _generate(self, eps, chunks):  # type: ignore[no-untyped-def]
            lat, vec, unc = super()._generate(eps, chunks)
            if self.mode == "model":
                return lat, vec, unc
            ctrl = SPEC.control
            lo, hi, md = np.asarray(ctrl.workspace_low), np.asarray(ctrl.workspace_high), ctrl.max_delta
            for j, ep in enumerate(eps):
                for k in range(vec.shape[2]):
                    if self.mode == "recorded":
                        rec = self.recorded[ep.batch_index]
                        ee = rec[min(ep.step + k + 1, len(rec) - 1)]
                    elif self.mode == "controller":
                        d = chunks[j][k, :3].cpu().numpy().astype(np.float64)
                        n = np.linalg.norm(d)
                        d = d * (md / n) if n > md else d
                        tcp = ep.target
                        tgt = np.clip(ep.target + d, lo, hi)
                        ep.target = ee = tcp + np.clip(tgt - tcp, -2 * md, 2 * md)
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
    held = list(range(n - cfg.train.holdout_episodes, n))
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
    atomic_write_text(
        Path(args.out),
        json.dumps(
            {"model": args.model, "data": args.data, "held_out_episodes": held, "modes": rows}, indent=2
        ),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
