"""Stable Video Diffusion's `UNetSpatioTemporalConditionModel` as the world model's denoiser.

The UNet is loaded from a local diffusers directory (e.g. SVD's `unet/`) or built from config
kwargs. Action conditioning is added the Ctrl-World way, per frame: after every spatial
transformer block, the frame's latent tokens cross-attend to that frame's own action/pose token
through a `FrameCrossAttention` whose output projection starts at zero, so the loaded UNet
computes exactly what it computed before until training moves the adapters.

Layout (Ctrl-World / Cosmos): camera views are stacked along the latent height; the state frames
ride along the frame axis after the image frames; every frame's input is its latent concatenated
with the last context frame's latent (SVD's image conditioning, hence `in_channels = 2 c`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from einops import rearrange
from torch import nn

from worldmodels.checkpoint import CheckpointError, load_diffusers_model
from worldmodels.conditioning import FrameAdapter
from worldmodels.video_config import SVDConfig

if TYPE_CHECKING:
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel

SVD_ADDED_TIME_IDS = (6.0, 127.0, 0.02)  # fps - 1, motion bucket, noise augmentation (SVD-XT defaults)


def load_svd_unet(cfg: SVDConfig, weights: bool) -> UNetSpatioTemporalConditionModel:
    """The UNet of `cfg`: from its local directory (weights loaded when `weights`) or from `cfg.unet` kwargs."""
    from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel as UNet

    if cfg.pretrained and (weights or not cfg.unet):
        path = Path(cfg.pretrained)
        if (path / "unet" / "config.json").exists():
            path = path / "unet"
        return load_diffusers_model(UNet, path, weights, "backbone.pretrained (or its unet/)")
    return UNet.from_config(cfg.unet) if "_class_name" in cfg.unet else UNet(**cfg.unet)


class SVDDenoiser(nn.Module):
    added_time_ids: torch.Tensor  # [1, 3] buffer

    def __init__(
        self,
        cfg: SVDConfig,
        *,
        latent_channels: int,
        views: int,
        cond_dim: int,
        max_offset: int,
        weights: bool = True,
    ) -> None:
        super().__init__()
        self.unet = load_svd_unet(cfg, weights)
        self.views, self.c = views, latent_channels
        uc = self.unet.config
        if uc["in_channels"] != 2 * latent_channels or uc["out_channels"] != latent_channels:
            raise CheckpointError(
                f"backbone: the UNet takes {uc['in_channels']} -> {uc['out_channels']} channels; a "
                f"{latent_channels}-channel latent needs {2 * latent_channels} -> {latent_channels}"
            )
        dim: int = uc["block_out_channels"][0]
        self.token_dim = dim
        self.cond = nn.Sequential(nn.Linear(cond_dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.max_offset = max_offset
        self.offset = nn.Embedding(2 * max_offset + 1, dim)
        cad = uc["cross_attention_dim"]
        cad = cad if isinstance(cad, int) else cad[0]
        self.context = nn.Parameter(torch.zeros(1, 1, cad))
        self.register_buffer("added_time_ids", torch.tensor([SVD_ADDED_TIME_IDS]))
        self.adapters = nn.ModuleList()
        self._tokens: torch.Tensor | None = None
        for name, mod in self.unet.named_modules():
            if (
                name.endswith("transformer_blocks")
                and ".temporal_" not in name
                and isinstance(mod, nn.ModuleList)
            ):
                for blk in mod:
                    width = int(blk.norm1.normalized_shape[0])  # type: ignore[union-attr,index]
                    adapter = FrameAdapter(dim, width, cfg.adapter_heads)
                    self.adapters.append(adapter)
                    blk.register_forward_hook(self._hook(adapter))

    def _hook(
        self, adapter: FrameAdapter
    ) -> Callable[[nn.Module, tuple[object, ...], torch.Tensor], torch.Tensor]:
        """A forward hook that mixes the current per-frame tokens into a spatial block's output."""

        def hook(module: nn.Module, args: tuple[object, ...], out: torch.Tensor) -> torch.Tensor:
            if self._tokens is None:
                return out
            return adapter(out, self._tokens)

        return hook

    def unet_forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_time_ids: torch.Tensor,
        tokens: torch.Tensor | None,
    ) -> torch.Tensor:
        """The UNet on sample [B, F, 2c, H, W] with per-frame tokens [B, F, D] fed to the adapters."""
        self._tokens = None if tokens is None else tokens.reshape(-1, tokens.shape[-1])
        try:
            return self.unet(sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False)[0]
        finally:
            self._tokens = None

    def forward(
        self,
        img: torch.Tensor,
        state: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor,
        offsets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as `VideoDiT.forward`; state frames are [B, Fr, c, V*h, w]."""
        B, Fr = img.shape[:2]
        x = torch.cat([rearrange(img, "b f v c h w -> b f c (v h) w"), state], dim=1)  # [B, 2Fr, c, Vh, w]
        # SVD's image conditioning: the first (oldest) context frame beside every frame
        first = rearrange(img[:, :1], "b f v c h w -> b f c (v h) w").expand_as(x)
        tok = self.cond(cond) + self.offset(
            offsets.clamp(-self.max_offset, self.max_offset) + self.max_offset
        )
        tokens = torch.cat([tok, tok], dim=1)  # a step's image and state frames share its token
        t = sigma.amax(dim=1) * 1000
        out = self.unet_forward(
            torch.cat([x, first], dim=2),
            t,
            self.context.expand(B, -1, -1),
            self.added_time_ids.expand(B, -1),
            tokens,
        )
        vi = rearrange(out[:, :Fr], "b f c (v h) w -> b f v c h w", v=self.views)
        return vi, out[:, Fr:]
