"""Frame-level action conditioning (Ctrl-World style).

Each frame's condition (the action executed before it, plus the robot pose it is tagged with) is
one token, made by the backbone's condition MLP; the latent tokens of frame t cross-attend to token
t alone, so a frame is never conditioned on another frame's actions. The output projection starts
at zero: a backbone with this adapter inserted computes exactly what it computed without it until
training moves the projection.

    adapter = FrameCrossAttention(dim=64, heads=4)
    h = adapter(h, tokens, tokens_per_frame=h_w)     # h: [B, F * h_w, dim], tokens: [B, F, dim]
"""

from __future__ import annotations

import torch
from torch import nn


def frame_mask(n_frames: int, tokens_per_frame: int, device: torch.device | None = None) -> torch.Tensor:
    """bool [F * tokens_per_frame, F]: True where attention is *blocked* (query frame != token frame)."""
    q_frame = torch.arange(n_frames, device=device).repeat_interleave(tokens_per_frame)
    return q_frame[:, None] != torch.arange(n_frames, device=device)[None, :]


class FrameCrossAttention(nn.Module):
    """Residual cross-attention from latent tokens to their own frame's action token; zero-initialised
    output, so `h + adapter(...) == h` at initialisation."""

    def __init__(self, dim: int, heads: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
        """h [B, F * tokens_per_frame, dim], tokens [B, F, dim] -> h with its frame's action mixed in."""
        n_frames = tokens.shape[1]
        if h.shape[1] != n_frames * tokens_per_frame:
            raise ValueError(f"h has {h.shape[1]} tokens, expected {n_frames} frames x {tokens_per_frame}")
        mask = frame_mask(n_frames, tokens_per_frame, h.device)
        a, _ = self.attn(self.norm(h), tokens, tokens, attn_mask=mask, need_weights=False)
        return h + self.out(a)


class FrameAdapter(nn.Module):
    """Per-frame action cross-attention for one block of a pretrained backbone of width `channels` (SVD's
    spatial transformer blocks, Cosmos's transformer blocks), from condition tokens of width `token_dim`."""

    def __init__(self, token_dim: int, channels: int, heads: int) -> None:
        super().__init__()
        self.proj = nn.Linear(token_dim, channels)
        self.xattn = FrameCrossAttention(channels, heads)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """h [B*F, N, C]; tokens [B*F, D] -> h + attention to its own frame's token."""
        return self.xattn(h, self.proj(tokens)[:, None], tokens_per_frame=h.shape[1])
