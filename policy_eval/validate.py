"""Imagined against real: does a learned world reproduce what recorded robot episodes show?

    dreamtwin validate --data data/robot_push --world worldmodel:assets/worldmodels/push_cube_tiny --out runs/validate

Given episodes recorded on a robot (`dreamtwin record`: a real arm, or the `TwinRobot` stand-in) and a
world model:
(a) open loop: each episode's recorded actions replayed in the world model from its first frame (and from
    later steps), frames (PSNR, SSIM, against holding the start frame) and object positions compared over
    the horizon;
(b) closed loop: the same policies, on the same seeds, run in imagination from the recorded first frames;
(c) per policy, real against imagined success with 95% intervals; Pearson, Spearman, Kendall, MMRV and MAE
    over policies (with paired bootstrap intervals); per-episode outcome agreement; `report.html` with
    error against horizon and real | imagined frame strips.

The episodes arrive as arrays (`datagen.windows.load_episodes`, which the CLI calls: this package does not
read datasets) with their origin (policy, seed, success) from the dataset's `meta/dreamtwin.json`.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import SpecError
from common.io import atomic_write_text
from common.types import Observation
from scenes.spec import SceneSpec


class _RecordedStart:
    """A video world started, for each seed, from a recorded episode's first step (the `BatchedWorld`
    protocol `runner.rollout_batch` drives)."""

    def __init__(self, video: Any, contexts: dict[int, Any]) -> None:
        self.video, self.contexts = video, contexts
        self.action_dim = video.action_dim
        self.world_id = "worldmodel"

    def reset_batch(self, seeds: list[int]) -> list[Observation]:
        return list(self.video.reset_batch([self.contexts[s] for s in seeds], list(seeds)))

    def step_batch(self, chunks: list[np.ndarray | None]) -> list[Any]:
        zero = np.zeros((1, self.action_dim), np.float32)
        return list(self.video.step_batch([zero if c is None else c for c in chunks]))


def _open_loop(video: Any, episodes: list[dict[str, np.ndarray]], horizon: int, seed: int) -> dict[str, Any]:
    from worldmodels.evaluation import open_loop

    starts = [
        (k, t0)
        for k, e in enumerate(episodes)
        for t0 in range(0, len(e["actions"]) - horizon, max(horizon, 1))
        if t0 + horizon < len(e["actions"])
    ]
    if not starts:
        raise SpecError(f"no recorded episode is longer than the horizon ({horizon} steps)")
    return dict(open_loop(video, episodes, starts, horizon, seed=seed))


def validate(
    episodes: list[dict[str, np.ndarray]],
    origin: list[dict[str, Any]],
    cameras: list[str],
    spec: SceneSpec,
    world: str,
    out: Path,
    *,
    policy_seed: int = 0,
    horizon: int = 10,
    batch: int = 16,
    seed: int = 0,
    samples: int | None = None,
    sampler_steps: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare recorded episodes with a world model, open and closed loop; writes out/results.json,
    out/episodes.jsonl and out/report.html and returns the results."""
    from policy_eval import runner
    from policy_eval.evaluate import write_strip
    from policy_eval.metrics import AGREEMENT, bootstrap_agreement, wilson_interval
    from policy_eval.policies import make_policy, policy_info
    from policy_eval.worlds import check_scene_matches, parse_world
    from scenes.randomization import physics_scales
    from worldmodels.video_model import VideoWorldModel
    from worldmodels.video_world import Context, VideoWorld

    w = parse_world(world)
    if w.kind != "worldmodel" or w.path is None:
        raise SpecError(f"world {world!r}: validate compares against a video world model (worldmodel:PATH)")
    if len(episodes) != len(origin):
        raise SpecError(f"{len(episodes)} episodes but {len(origin)} origin records")
    t0 = time.perf_counter()
    model = VideoWorldModel.from_pretrained(w.path)
    video = VideoWorld(model, model.cfg.sampler.updated(samples=samples, steps=sampler_steps))
    check_scene_matches(video.cfg.scene, spec, w.path)
    if list(video.cameras) != list(cameras):
        raise SpecError(
            f"the recording has cameras {cameras}; the world model was trained on {video.cameras}"
        )
    # the world model is told the scene's nominal physics: a robot's true physics is unknown to it
    physics = physics_scales(spec, SceneSpec.model_validate(video.cfg.scene)) if video.cfg.scene else {}

    out.mkdir(parents=True, exist_ok=True)
    open_loop = _open_loop(video, episodes, horizon, seed)

    # closed loop: every recorded (policy, seed) again, in imagination from the recorded first frame
    contexts = {}
    for e, o in zip(episodes, origin, strict=True):
        ctx = Context.from_episode(e, list(cameras), 0)
        ctx.physics = dict(physics)
        contexts[int(o["seed"])] = ctx
    if len(contexts) != len(origin):
        raise SpecError("recorded episodes share seeds; validate pairs them by seed")
    rworld = _RecordedStart(video, contexts)
    imagined: list[Any] = []
    order = list(range(len(origin)))
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("closed loop in imagination", total=len(order))
        for i in range(0, len(order), batch):
            part = [origin[k] for k in order[i : i + batch]]
            names = [str(o["policy"]) for o in part]
            imagined += runner.rollout_batch(
                rworld,
                [make_policy(n, spec, seed=policy_seed) for n in names],
                [int(o["seed"]) for o in part],
                policy_ids=names,
                privileged=[policy_info(n).privileged for n in names],
                scene_hash=spec.hash(),
            )
            bar.advance(task, len(part))

    rows = []
    for k, (o, ep) in enumerate(zip(origin, imagined, strict=True)):
        rows.append(
            {
                "episode_index": k,
                "policy": o["policy"],
                "seed": int(o["seed"]),
                "real_success": bool(o["success"]),
                "imagined_success": bool(ep.success),
                "agree": bool(o["success"]) == bool(ep.success),
                "real_length": len(episodes[k]["actions"]) - 1,
                "imagined_length": ep.length,
            }
        )
        if k < 64:  # frame strips: real above, imagined below, for the report
            cam = cameras[0]
            real = episodes[k]["frames"][:, 0].transpose(0, 2, 3, 1)
            write_strip(out / "strips" / f"ep-{k}-real.png", real)
            write_strip(out / "strips" / f"ep-{k}-imagined.png", ep.frames(cam))
    atomic_write_text(out / "episodes.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    policies = sorted({r["policy"] for r in rows})
    per: dict[str, Any] = {}
    for p in policies:
        mine = [r for r in rows if r["policy"] == p]
        n = len(mine)
        kr, ki = sum(r["real_success"] for r in mine), sum(r["imagined_success"] for r in mine)
        per[p] = {
            "n": n,
            "real": {"success_rate": kr / n, "ci": list(wilson_interval(kr, n))},
            "imagined": {"success_rate": ki / n, "ci": list(wilson_interval(ki, n))},
            "agreement": float(np.mean([r["agree"] for r in mine])),
        }
    metrics: dict[str, Any] = {}
    if len(policies) >= 2:
        real_o = [[r["real_success"] for r in rows if r["policy"] == p] for p in policies]
        imag_o = [[r["imagined_success"] for r in rows if r["policy"] == p] for p in policies]
        if len({len(x) for x in real_o}) == 1:  # paired bootstrap needs the same episodes per policy
            metrics = bootstrap_agreement(imag_o, real_o, seed=seed)
        else:
            pr = [per[p]["imagined"]["success_rate"] for p in policies]
            rr = [per[p]["real"]["success_rate"] for p in policies]
            metrics = {m: {"value": float(f(pr, rr))} for m, f in AGREEMENT.items()}
    results = {
        "world": world,
        "scene": spec.name,
        "episodes": len(rows),
        "horizon": horizon,
        "open_loop": open_loop,
        "policies": per,
        "metrics": metrics,
        "episode_agreement": float(np.mean([r["agree"] for r in rows])),
        "seconds": time.perf_counter() - t0,
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    write_validation_report(out, results, rows)
    return results


def _horizon_plot(ol: dict[str, Any]) -> str:
    from policy_eval.report import _pyplot, _svg

    plt = _pyplot()
    h = np.arange(1, len(ol["psnr"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(h, ol["psnr"], "o-", label="world model", color="#3b76c4")
    a.plot(h, ol["baseline_psnr"], "s--", label="hold the start frame", color="#999")
    a.set_xlabel("steps ahead")
    a.set_ylabel("PSNR (dB)")
    a.legend(fontsize=8)
    b.plot(h, 100 * np.asarray(ol["object_error_m"]), "o-", color="#c4553b")
    b.set_xlabel("steps ahead")
    b.set_ylabel("object position error (cm)")
    return _svg(fig)


def _success_plot(per: dict[str, Any]) -> str:
    from policy_eval.report import _pyplot, _svg

    plt = _pyplot()
    pols = list(per)
    x = np.arange(len(pols))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(pols)), 3.4))
    for j, (side, color) in enumerate((("real", "#5a9e4b"), ("imagined", "#3b76c4"))):
        r = np.array([per[p][side]["success_rate"] for p in pols])
        lo = np.array([per[p][side]["ci"][0] for p in pols])
        hi = np.array([per[p][side]["ci"][1] for p in pols])
        ax.bar(
            x + (j - 0.5) * 0.4,
            r,
            0.4,
            label=side,
            color=color,
            yerr=np.clip([r - lo, hi - r], 0, None),
            capsize=3,
        )
    ax.set_xticks(x, pols, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (95% Wilson interval)")
    ax.legend(fontsize=8)
    return _svg(fig)


def write_validation_report(out: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    from policy_eval.evaluate import fmt_metric
    from policy_eval.report import CSS, _png_tag

    per, metrics = results["policies"], results["metrics"]
    table = [
        "<table id=per-policy><tr><th>policy</th><th>n</th><th>real</th><th>imagined</th><th>episodes agreeing</th></tr>"
    ]
    for p, v in per.items():
        table.append(
            f"<tr><td>{html.escape(p)}</td><td class=num>{v['n']}</td>"
            f"<td class=num>{v['real']['success_rate']:.2f} [{v['real']['ci'][0]:.2f}, {v['real']['ci'][1]:.2f}]</td>"
            f"<td class=num>{v['imagined']['success_rate']:.2f} [{v['imagined']['ci'][0]:.2f}, {v['imagined']['ci'][1]:.2f}]</td>"
            f"<td class=num>{v['agreement']:.2f}</td></tr>"
        )
    table.append("</table>")
    mt = ["<table id=metrics><tr><th>measure</th><th>value</th><th>95% interval</th></tr>"]
    for m, v in metrics.items():
        ci = f"[{fmt_metric(v['low'])}, {fmt_metric(v['high'])}]" if "low" in v else ""
        mt.append(f"<tr><td>{m}</td><td class=num>{fmt_metric(v['value'])}</td><td class=num>{ci}</td></tr>")
    mt.append("</table>")
    strips = []
    for r in rows[:12]:
        k = r["episode_index"]
        real, imag = out / "strips" / f"ep-{k}-real.png", out / "strips" / f"ep-{k}-imagined.png"
        if real.exists() and imag.exists():
            verdict = f"real {'success' if r['real_success'] else 'failure'}, imagined {'success' if r['imagined_success'] else 'failure'}"
            strips.append(
                f"<div class=strip><div class=caption>{html.escape(r['policy'])}, seed {r['seed']}: {verdict}</div>"
                f"<div class=caption>real</div>{_png_tag(real, 'real')}"
                f"<div class=caption>imagined</div>{_png_tag(imag, 'imagined')}</div>"
            )
    ol = results["open_loop"]
    body = [
        f"<h1>Validation: {html.escape(results['scene'])}, recorded episodes against {html.escape(results['world'])}</h1>",
        f"<p class=caption>{results['episodes']} recorded episodes; per-episode outcome agreement "
        f"{results['episode_agreement']:.2f}.</p>",
        '<h2>Success, real and imagined</h2><figure id="success">',
        _success_plot(per),
        "</figure>",
        "".join(table),
        "<h2>Ranking agreement</h2>",
        "".join(mt) if metrics else "<p class=caption>one policy: no ranking to compare</p>",
        f"<h2>Open loop: recorded actions replayed ({ol['windows']} windows)</h2><figure id=horizon>",
        _horizon_plot(ol),
        "</figure><h2>Episodes, real | imagined</h2><div id=strips>",
        "".join(strips),
        "</div>",
    ]
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>DreamTwin validation</title>"
        f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
