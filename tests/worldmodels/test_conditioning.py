"""Frame-level action conditioning: each frame sees only its own actions; zero-initialised adapter."""

from __future__ import annotations

import torch

from worldmodels.conditioning import FrameCrossAttention, frame_mask


def test_frame_mask_blocks_other_frames():
    m = frame_mask(3, 2)
    assert m.shape == (6, 3)
    assert (~m).sum(1).tolist() == [1] * 6  # every query token sees exactly one action token
    assert (~m).nonzero()[:, 1].tolist() == [0, 0, 1, 1, 2, 2]


def test_changing_one_frames_action_changes_only_that_frame():
    torch.manual_seed(0)
    B, F, P, dim = 2, 4, 5, 16
    adapter = FrameCrossAttention(dim, heads=2)
    torch.nn.init.normal_(adapter.out.weight, std=0.2)  # as after training: the adapter is active
    h = torch.randn(B, F * P, dim)
    tokens = torch.randn(B, F, dim)  # one condition token per frame
    base = adapter(h, tokens, P).reshape(B, F, P, dim)
    changed = tokens.clone()
    changed[:, 2] += 1.0  # a different action before frame 2
    out = adapter(h, changed, P).reshape(B, F, P, dim)
    diff = (out - base).abs().amax(dim=(0, 2, 3))
    assert diff[[0, 1, 3]].max() == 0  # other frames bit-identical
    assert diff[2] > 1e-3


def test_zero_initialised_adapter_leaves_the_backbone_unchanged():
    torch.manual_seed(1)
    adapter = FrameCrossAttention(8, heads=2)
    h = torch.randn(3, 6 * 4, 8)
    assert torch.equal(adapter(h, torch.randn(3, 6, 8), 4), h)
    # and it learns: one gradient step moves the output projection
    loss = (
        adapter(h, torch.randn(3, 6, 8), 4).pow(2).mean()
        + (adapter(h, torch.randn(3, 6, 8), 4) - 1).pow(2).mean()
    )
    loss.backward()
    assert adapter.out.weight.grad.abs().sum() > 0
