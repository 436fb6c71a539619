"""Splat appearance bound to the twin's physics bodies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.sim


def _visible_labels_splat(twin):
    """Per pixel: 0 background/other, 1 robot, 2 cube — from the splats, occlusion included."""
    r = twin.splat_renderer
    g = r.world_gaussians()
    labels = torch.zeros(g.n, 3)
    start = 0
    for b in r.bodies:
        k = 1 if b.name.startswith("robot:") else 2 if b.name == "object:cube" else 0
        labels[start : start + b.gaussians.n, k] = 1.0
        start += b.gaussians.n
    from scenes.splat.render import rasterize

    args = g.render_args()
    cam = r.cameras[0]
    out, alpha, _ = rasterize(
        args["means"],
        args["quats"],
        args["scales"],
        args["opacities"],
        labels,
        r.viewmats[:1],
        r.Ks[:1],
        cam.width,
        cam.height,
        eps2d=r.eps2d,
    )
    lab = out[0].argmax(-1).numpy()
    lab[alpha[0, ..., 0].numpy() < 0.5] = 0
    return lab


def _visible_labels_genesis(twin):
    _, seg = next(iter(twin.render_genesis(segmentation=True).values()))
    idx = twin.scene.segmentation_idx_dict
    robot, cube = twin.robot.idx, twin.objects["cube"].idx
    lab = np.zeros(seg.shape[:2], np.int64)
    for k, v in idx.items():
        ent = v[0] if isinstance(v, tuple) else v
        if ent == robot:
            lab[seg == k] = 1
        elif ent == cube:
            lab[seg == k] = 2
    return lab


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_splat_silhouettes_match_genesis_over_random_states(push_twin):
    rng = np.random.default_rng(0)
    ious = {1: [], 2: []}
    for _ in range(20):
        push_twin.reset(int(rng.integers(1000)))
        with push_twin.rendering(False):
            a = rng.uniform(-0.03, 0.03, (int(rng.integers(0, 8)), 4)).astype(np.float32)
            a[:, 3] = rng.uniform(0, 1, len(a))
            if len(a):
                push_twin.step(a)
        s, g = _visible_labels_splat(push_twin), _visible_labels_genesis(push_twin)
        for k in ious:
            if (g == k).sum() > 4:
                ious[k].append(_iou(s == k, g == k))
    print({k: (np.mean(v), np.min(v)) for k, v in ious.items()})
    assert len(ious[1]) == 20 and len(ious[2]) >= 15
    assert np.mean(ious[1]) >= 0.85 and np.mean(ious[2]) >= 0.85


def test_splats_follow_physics(push_twin):
    from policy_eval.policies import make_policy

    policy = make_policy("expert", push_twin.spec)
    obs = push_twin.reset(2)
    policy.reset(seed=2)
    with push_twin.rendering(False):
        for _ in range(50):
            result = push_twin.step(policy.act(obs))
            obs = result.last
            if result.done:
                push_twin.reset(3)
    r = push_twin.splat_renderer
    moved = False
    for name, ent in push_twin.objects.items():
        g = r.world_gaussians([f"object:{name}"])
        pos = ent.get_pos().cpu().numpy()
        assert np.abs(g.means.mean(0).numpy() - pos).max() < 1e-3
        moved |= bool(np.linalg.norm(pos[:2] - push_twin.spec.object(name).pose.pos[:2]) > 0.01)
    hand = r.world_gaussians(["robot:hand"]).means.numpy()
    assert np.linalg.norm(hand.mean(0) - push_twin.hand.get_pos().cpu().numpy()) < 0.05
    assert moved


def test_splat_renderer_option_gives_images(push_twin):
    push_twin.reset(0)
    imgs = push_twin.render("splat")
    ref = push_twin.render("genesis")
    for name, img in imgs.items():
        assert img.dtype == np.uint8 and img.shape == ref[name].shape
        # similar pictures: the mean absolute difference is far below that of unrelated images
        assert np.abs(img.astype(float) - ref[name].astype(float)).mean() < 40
