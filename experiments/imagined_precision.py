"""How many imagined successes are real ones? An imagined dataset's successes, trusted or not, against the twin.

    python experiments/imagined_precision.py --imagined runs/imagined_finetune_1000/imagined \
        [--twin runs/imagined_finetune_1000/twin_all] [--name imagined_precision]

Two measures for each imagined episode the world model's judge calls successful (`dreamtwin datagen
imagine --all`), split by the trust score's verdict (`trusted` in `meta/dreamtwin.json`; every episode
counts as untrusted where the world model had no trust.json):
- *open loop*: its imagined actions replayed in the twin from the same seed's initial state and
  physics (the job's own randomisation), until the twin's predicate holds or the actions run out —
  whether the demonstration a policy is fine-tuned on would succeed in the real physics;
- *same seed* (with `--twin`, a twin dataset of the same policy on the same seeds, `dreamtwin datagen
  rollouts --all`): whether the policy succeeds in the twin itself on that seed.
Writes experiments/results/imagined_precision.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common.results import add_result_arguments, write_result

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imagined", required=True, help="a dataset of `dreamtwin datagen imagine --all`")
    ap.add_argument("--twin", default=None, help="the same policy on the same seeds in the twin (--all)")
    add_result_arguments(ap, ROOT / "experiments/results", "imagined_precision")
    args = ap.parse_args()

    from datagen.rollouts import ResolvedJob, RolloutJob
    from datagen.windows import load_episodes
    from scenes.randomization import sample_variation
    from scenes.twin import DigitalTwin

    episodes, _ = load_episodes(args.imagined, frames=False)
    info = json.loads((Path(args.imagined) / "meta/dreamtwin.json").read_text())
    r = ResolvedJob.load(RolloutJob.model_validate(info["job"]))
    twin = DigitalTwin(r.spec, render=False)
    same_seed: dict[int, bool] = {}
    if args.twin:
        tw = json.loads((Path(args.twin) / "meta/dreamtwin.json").read_text())["episodes"]
        same_seed = {int(e["seed"]): bool(e["success"]) for e in tw}
    rows = []
    for e, m in zip(episodes, info["episodes"], strict=True):
        if not m["success"]:
            continue
        seed = int(m["seed"])
        twin.set_variant(sample_variation(r.spec, r.rnd, seed).spec)
        ok = twin.replay(seed, e["actions"][: len(e["state"]) - 1])  # open loop, stops at success or the end
        rows.append(
            {
                "seed": seed,
                "trusted": bool(m.get("trusted", False)),
                "open_loop": ok,
                "same_seed": same_seed.get(seed),
            }
        )

    def part(sel: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"episodes": len(sel), "open_loop": sum(x["open_loop"] for x in sel)}
        known = [x for x in sel if x["same_seed"] is not None]
        if known:
            out["same_seed"], out["same_seed_known"] = sum(x["same_seed"] for x in known), len(known)
        return out

    parts = {
        "judged successes": part(rows),
        "trusted": part([x for x in rows if x["trusted"]]),
        "not trusted": part([x for x in rows if not x["trusted"]]),
    }
    t = Table(title=f"imagined successes of {args.imagined} in the twin")
    for col in ("imagined successes", "episodes", "open loop: twin succeeds", "same seed: twin succeeds"):
        t.add_column(col, justify="right" if col != "imagined successes" else "left")
    for name, p in parts.items():
        n = max(p["episodes"], 1)
        ss = f"{p['same_seed']}/{p['same_seed_known']}" if "same_seed" in p else "—"
        t.add_row(name, str(p["episodes"]), f"{p['open_loop']} ({p['open_loop'] / n:.3f})", ss)
    Console().print(t)
    write_result(
        args.name,
        {"experiment": "imagined_precision", "imagined": args.imagined, "twin": args.twin, "parts": parts},
        args.results_dir,
    )


if __name__ == "__main__":
    main()
