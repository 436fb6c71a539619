"""How faithful is a learned world? Open-loop rollouts against recorded episodes.

    from worldmodels.evaluation import open_loop, judge_episodes
    per_h = open_loop(world, episodes, starts, horizon=10)       # PSNR / SSIM / object error per horizon step
    judged = judge_episodes(world, episodes)                      # imagined success vs recorded success

Recorded episodes come as `datagen.windows.episode_arrays` dicts (frames [T, V, 3, H, W], actions,
state, env_state, success). The baseline of every image metric is "copy the last context frame".
"""

from __future__ import annotations

import time
from typing import TypedDict

import numpy as np
import torch

from common.types import Observation
from common.video import psnr
from worldmodels.video_world import Context, VideoWorld

OPEN_LOOP_METRICS = ("psnr", "ssim", "baseline_psnr", "baseline_ssim", "object_error_m")


class OpenLoopResult(TypedDict):
    """Per-horizon means (index h - 1) of the open-loop metrics, and the work done."""

    psnr: list[float]
    ssim: list[float]
    baseline_psnr: list[float]  # copying the last context frame
    baseline_ssim: list[float]
    object_error_m: list[float]  # mean over objects of the position error
    windows: int
    generated_steps: int
    generation_s: float


class EpisodeVerdict(TypedDict):
    success: bool  # recorded
    predicate: bool  # the scene predicate on the imagined object poses
    value: float  # the imagined value's maximum over the episode


class JudgeResult(TypedDict):
    episodes: int
    positives: int
    predicate_accuracy: float
    predicate_auroc: float
    predicate_false_positives: int
    predicate_false_negatives: int
    value_accuracy: float
    value_auroc: float
    combined_auroc: float
    final_object_error_m: float
    per_episode: list[EpisodeVerdict]
    generated_steps: int
    generation_s: float


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8 images [H, W, 3] (Gaussian window 11, sigma 1.5, per channel, averaged)."""
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[:, None]
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[:, None]
    g = torch.exp(-((torch.arange(11, dtype=torch.float64) - 5) ** 2) / (2 * 1.5**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    w = g[None, None]

    def f(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(z, w)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (probability a positive outscores a negative; ties count half)."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def object_error(predicted: np.ndarray, true: np.ndarray) -> float:
    """Mean over objects of the position error (m) between two environment states (7 values per object:
    position, then quaternion)."""
    p, t = np.asarray(predicted).reshape(-1, 7)[:, :3], np.asarray(true).reshape(-1, 7)[:, :3]
    return float(np.linalg.norm(p - t, axis=1).mean())


def open_loop(
    world: VideoWorld,
    episodes: list[dict[str, np.ndarray]],
    starts: list[tuple[int, int]],
    horizon: int,
    seed: int = 0,
    batch: int = 16,
    randomization_names: list[str] | None = None,
) -> OpenLoopResult:
    """Roll every (episode, t0) out for `horizon` steps with the recorded actions from t0 and compare
    each imagined step with the recorded one (and with a copy of the frame at t0). `randomization_names`:
    the dataset's (`meta` of `load_episodes`), which gives a physics-conditioned model each episode's physics."""
    cams = world.cameras
    acc: dict[str, list[list[float]]] = {k: [[] for _ in range(horizon)] for k in OPEN_LOOP_METRICS}
    stop = world.stop_on_success
    world.stop_on_success = False
    gen_s, steps = 0.0, 0
    try:
        for i in range(0, len(starts), batch):
            part = starts[i : i + batch]
            ctxs = [Context.from_episode(episodes[k], cams, t0, randomization_names) for k, t0 in part]
            world.reset_batch(ctxs, [seed + 1000 * k + t0 for k, t0 in part])
            t = time.perf_counter()
            results = world.step_batch([episodes[k]["actions"][t0 : t0 + horizon] for k, t0 in part])
            gen_s += time.perf_counter() - t
            for (k, t0), r in zip(part, results, strict=True):
                assert r is not None
                e = episodes[k]
                last = e["frames"][t0]
                for h, o in enumerate(r.observations):
                    steps += 1
                    true = e["frames"][t0 + h + 1]
                    for v, c in enumerate(cams):
                        tv, lv = true[v].transpose(1, 2, 0), last[v].transpose(1, 2, 0)
                        acc["psnr"][h].append(psnr(o.images[c], tv))
                        acc["ssim"][h].append(ssim(o.images[c], tv))
                        acc["baseline_psnr"][h].append(psnr(lv, tv))
                        acc["baseline_ssim"][h].append(ssim(lv, tv))
                    err = object_error(_imagined_env(o), e["env_state"][t0 + h + 1])
                    acc["object_error_m"][h].append(err)
    finally:
        world.stop_on_success = stop
    means = {k: [float(np.mean(x)) for x in v] for k, v in acc.items()}
    return OpenLoopResult(
        psnr=means["psnr"],
        ssim=means["ssim"],
        baseline_psnr=means["baseline_psnr"],
        baseline_ssim=means["baseline_ssim"],
        object_error_m=means["object_error_m"],
        windows=len(starts),
        generated_steps=steps,
        generation_s=gen_s,
    )


def _imagined_env(observation: Observation) -> np.ndarray:
    """The object poses of an imagined observation (a learned world always predicts them)."""
    assert observation.environment_state is not None
    return observation.environment_state


def judge_episodes(
    world: VideoWorld,
    episodes: list[dict[str, np.ndarray]],
    seed: int = 0,
    batch: int = 32,
    context: int = 1,
    randomization_names: list[str] | None = None,
) -> JudgeResult:
    """Imagine each recorded episode from its first `context` steps with its recorded actions and judge
    success two ways: the scene predicate on the predicted object poses at any step (`predicate`), and the
    predicted value (`value`: max over steps >= 0.5). Compared with the recorded outcome. Also the mean
    object position error at each imagined episode's last step (`final_object_error_m`): the drift that
    decides the predicate near a region's edge. `randomization_names` as in `open_loop`."""
    cams = world.cameras
    labels, pred, value, drift = [], [], [], []
    gen_s, steps = 0.0, 0
    for i in range(0, len(episodes), batch):
        part = episodes[i : i + batch]
        world.reset_batch(
            [Context.from_episode(e, cams, context - 1, randomization_names) for e in part],
            [seed + i + j for j in range(len(part))],
        )
        t = time.perf_counter()
        results = world.step_batch([e["actions"][context - 1 : len(e["actions"]) - 1] for e in part])
        gen_s += time.perf_counter() - t
        for e, r in zip(part, results, strict=True):
            assert r is not None
            steps += len(r.observations)
            labels.append(bool(e["success"].any()))
            pred.append(bool(r.info["success"]))
            value.append(max(r.info["value_per_step"]))
            last = context - 1 + len(r.observations)
            drift.append(object_error(_imagined_env(r.observations[-1]), e["env_state"][last]))
    y, p, v = np.array(labels), np.array(pred), np.array(value)
    return JudgeResult(
        episodes=len(y),
        positives=int(y.sum()),
        predicate_accuracy=float((p == y).mean()),
        predicate_auroc=auroc(p.astype(float), y),
        predicate_false_positives=int((p & ~y).sum()),
        predicate_false_negatives=int((~p & y).sum()),
        value_accuracy=float(((v >= 0.5) == y).mean()),
        value_auroc=auroc(v, y),
        combined_auroc=auroc(p.astype(float) + v, y),
        final_object_error_m=float(np.mean(drift)),
        per_episode=[
            EpisodeVerdict(success=bool(a), predicate=bool(b), value=float(c))
            for a, b, c in zip(y, p, v, strict=True)
        ],
        generated_steps=steps,
        generation_s=gen_s,
    )
