"""World-model fidelity metrics: PSNR / SSIM / AUROC on known values, and the open-loop and
whole-episode judges on the trained toy world."""

from __future__ import annotations

import numpy as np
import pytest

from common.video import psnr
from worldmodels.evaluation import auroc, judge_episodes, open_loop, ssim
from worldmodels.video_world import VideoWorld


def test_psnr_and_ssim_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    b = a.astype(int) + 1
    b[b > 255] = 254
    assert psnr(a, a) == pytest.approx(10 * np.log10(255.0**2 / 1e-10))
    assert psnr(a, b.astype(np.uint8)) == pytest.approx(10 * np.log10(255.0**2), abs=1e-9)  # MSE 1: 48.13 dB
    assert ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(a + rng.normal(0, 60, a.shape), 0, 255).astype(np.uint8)
    assert 1 > ssim(a, noisy) > ssim(a, noisier)
    assert ssim(a, 255 - a) < 0


def test_auroc_known_tables():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(np.array([1.0, 1.0, 0.0, 0.0]), np.array([1, 0, 1, 0])) == pytest.approx(
        0.5
    )  # ties count half
    assert auroc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.1]), np.array([0, 0, 1])) == 0.0
    assert np.isnan(auroc(np.array([0.2, 0.3]), np.array([1, 1])))


def test_open_loop_and_judge_on_the_toy_world(trained, episodes):
    """The trained toy world beats copying the last frame once the square has moved, tracks its position
    to within 2 pixels, and judges the toy episodes' outcomes."""
    _, path = trained
    world = VideoWorld.from_pretrained(path)
    starts = [(k, 1) for k in range(len(episodes))]
    ol = open_loop(world, episodes, starts, horizon=6)
    assert ol["windows"] == 4 and ol["generated_steps"] == 24 and len(ol["psnr"]) == 6
    # steps 2-4 (later, the copy of a square resting against the wall can be exact: PSNR 100)
    assert np.mean(ol["psnr"][1:4]) > np.mean(ol["baseline_psnr"][1:4]) + 2, (ol["psnr"], ol["baseline_psnr"])
    assert max(ol["object_error_m"]) < 0.02, ol["object_error_m"]  # 2 px of the 16x16 world
    assert world.stop_on_success  # restored after the open-loop run
    j = judge_episodes(world, episodes)
    labels = [bool(e["success"].any()) for e in episodes]
    assert j["episodes"] == 4 and j["positives"] == sum(labels)
    assert j["predicate_false_positives"] + j["predicate_false_negatives"] == round(
        4 * (1 - j["predicate_accuracy"])
    )
    assert j["predicate_accuracy"] >= 0.75 and j["final_object_error_m"] < 0.03, j  # 3 px after ~11 steps
    rows = j["per_episode"]
    assert [r["success"] for r in rows] == labels
    assert np.mean([r["predicate"] == r["success"] for r in rows]) == j["predicate_accuracy"]
    assert np.mean([(r["value"] >= 0.5) == r["success"] for r in rows]) == j["value_accuracy"]
