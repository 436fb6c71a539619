"""Cosmos-Policy-style state and value frames: low-dimensional vectors carried as latent frames.

A vector (proprio, object poses, a success value) is normalised to [-1, 1] with the dataset's
min/max, and each entry is tiled over a block of the latent frame's pixels, so the same denoiser
that predicts image latents predicts the vector too. Decoding averages each block, which also
averages out the denoiser's per-pixel noise.

    codec = StateFrameCodec(low, high, channels=4, height=8, width=8)
    frame = codec.encode(x)      # [..., 4, 8, 8] in [-1, 1]
    x_hat = codec.decode(frame)  # [..., D]
"""

from __future__ import annotations

import math

import torch


class StateFrameCodec(torch.nn.Module):
    """Vector of size D <-> one latent frame [C, H, W]: entry i fills block i of the C*H*W values."""

    low: torch.Tensor  # [D]
    span: torch.Tensor  # [D] high - low (1 where the range is empty)
    owner: torch.Tensor  # [C*H*W] long: the entry each cell carries
    count: torch.Tensor  # [D] cells per entry

    def __init__(self, low: torch.Tensor, high: torch.Tensor, channels: int, height: int, width: int) -> None:
        super().__init__()
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        if low.shape != high.shape or low.ndim != 1:
            raise ValueError(
                f"low/high must be equal-length vectors, got {list(low.shape)} and {list(high.shape)}"
            )
        self.dim = low.shape[0]
        self.shape = (channels, height, width)
        n = channels * height * width
        if self.dim > n:
            raise ValueError(f"a {channels}x{height}x{width} frame holds at most {n} values, got {self.dim}")
        span = torch.where(high - low > 1e-6, high - low, torch.ones_like(low))
        self.register_buffer("low", low)
        self.register_buffer("span", span)
        # entry i owns cells [start_i, start_{i+1}) of the flattened frame: near-equal blocks
        bounds = torch.tensor([math.floor(i * n / self.dim) for i in range(self.dim + 1)])
        owner = torch.bucketize(torch.arange(n), bounds[1:], right=True)
        self.register_buffer("owner", owner)
        self.register_buffer("count", torch.bincount(owner, minlength=self.dim).float())

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [-1, 1] over the range."""
        return (x - self.low) / self.span * 2 - 1

    def denormalise(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) / 2 * self.span + self.low

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] -> frames [..., C, H, W] (normalised values clamped to [-1.5, 1.5])."""
        y = self.normalise(x).clamp(-1.5, 1.5)
        return y[..., self.owner].reshape(*x.shape[:-1], *self.shape)

    def decode(self, frame: torch.Tensor) -> torch.Tensor:
        """frames [..., C, H, W] -> [..., D] (block means)."""
        flat = frame.reshape(*frame.shape[:-3], -1)
        sums = torch.zeros(*flat.shape[:-1], self.dim, dtype=flat.dtype, device=flat.device)
        sums.index_add_(-1, self.owner, flat)
        return self.denormalise(sums / self.count)
