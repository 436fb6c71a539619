"""Cosmos-Predict2's video DiT (diffusers `CosmosTransformer3DModel`) as the world model's denoiser.

The transformer is loaded from a local diffusers directory (a Cosmos-Predict2 Video2World model, or its
`transformer/`) or built from config kwargs. Action conditioning is added as for SVD, per frame: after
every transformer block, each frame's tokens cross-attend to that frame's own action/pose token through a
`FrameCrossAttention` whose output projection starts at zero, so the loaded transformer computes exactly
what it computed before until training moves the adapters.

Context frames enter the Predict2 Video2World way: their latents as they are (clean, or at the context
noise level the world model gives), flagged by the condition-mask input channel, each frame with its own
timestep; a clean context frame gets Predict2's conditioning level (sigma 1e-4) rather than 0.

Parametrisation: Predict2's pipeline turns its EDM noise level s into t = s / (1 + s), feeds the
transformer x_t = x_edm / (1 + s) = (1 - t) x0 + t eps with timestep t, and reads x0 = x_t - t F. Its
output F is thus flow matching's velocity eps - x0 at time t, and t is our sigma: the output is used as
it is, and the timestep is sigma itself (SVD's UNet takes 1000 sigma).

Text: the cross-attention input is one learned token of the transformer's text width, starting at zero.
Predict2's pipeline zeroes the embeddings past a prompt's end, so the loaded transformer starts from an
empty prompt; the token can learn a constant task prompt, and no text encoder is needed.

Layout: camera views are stacked along the latent height, and the state frame is one more latent-sized
tile below them, so a time step is one latent frame of the transformer. (SVD's state frames ride along
the frame axis instead.) Cosmos places tokens by a 3D rotary embedding, so this way a step's image and
state share its temporal position, timestep and action token, where on the frame axis the state frames
would sit after a cut at positions F..2F-1. Like SVD's temporal layers, the attention spans all frames:
the denoiser is not frame-causal.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from einops import rearrange
from torch import nn

from common.io import read_json
from worldmodels.checkpoint import CheckpointError, check_state, load_diffusers_model
from worldmodels.conditioning import FrameAdapter
from worldmodels.video_config import CosmosConfig

if TYPE_CHECKING:
    from diffusers.models.transformers.transformer_cosmos import CosmosTransformer3DModel

SIGMA_CONDITIONING = 1e-4  # Predict2's EDM noise level of a clean conditioning frame
T_CONDITIONING = SIGMA_CONDITIONING / (1 + SIGMA_CONDITIONING)  # the same as a flow-matching time


def load_cosmos_transformer(cfg: CosmosConfig, weights: bool) -> CosmosTransformer3DModel:
    """The transformer of `cfg`: from its local directory (weights loaded when `weights`) or from
    `cfg.transformer` kwargs."""
    from diffusers.models.transformers.transformer_cosmos import CosmosTransformer3DModel as Model

    if cfg.pretrained and (weights or not cfg.transformer):
        path = Path(cfg.pretrained)
        if (path / "transformer" / "config.json").exists():
            path = path / "transformer"
        model = load_diffusers_model(Model, path, False, "backbone.pretrained (or its transformer/)")
        if weights:
            load_diffusers_weights(model, path)
        return model
    return (
        Model.from_config(cfg.transformer) if "_class_name" in cfg.transformer else Model(**cfg.transformer)
    )


def load_diffusers_weights(model: nn.Module, path: Path) -> None:
    """A diffusers directory's safetensors weights (one file, or shards listed by an index) into `model`,
    cast to its dtype. diffusers' own loader refuses this class without accelerate (it keeps the learnt
    positions in fp32 through a low-memory load); we load in fp32 anyway."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    name = "diffusion_pytorch_model.safetensors"
    index = path / f"{name}.index.json"
    files = [name]
    if index.exists():
        weight_map = read_json(index, CheckpointError).get("weight_map", {})
        files = sorted(set(weight_map.values()))
    state: dict[str, torch.Tensor] = {}
    for f in (path / n for n in files):
        if not f.exists():
            raise CheckpointError(f"{f}: missing (the transformer's weights)")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{f}: unreadable safetensors ({str(e).splitlines()[0]})") from None
    check_state(model, state, path)
    model.load_state_dict(state)


class CosmosDenoiser(nn.Module):
    def __init__(
        self,
        cfg: CosmosConfig,
        *,
        latent_channels: int,
        views: int,
        cond_dim: int,
        max_offset: int,
        weights: bool = True,
    ) -> None:
        super().__init__()
        self.transformer = load_cosmos_transformer(cfg, weights)
        self.views, self.c, self.fps = views, latent_channels, cfg.fps
        tc = self.transformer.config
        if tc["in_channels"] != latent_channels + 1 or tc["out_channels"] != latent_channels:
            raise CheckpointError(
                f"backbone: the Cosmos transformer takes {tc['in_channels']} -> {tc['out_channels']} channels; a "
                f"{latent_channels}-channel latent needs {latent_channels + 1} (with the condition mask, as "
                f"Video2World models) -> {latent_channels}"
            )
        if tc["concat_padding_mask"] and importlib.util.find_spec("torchvision") is None:
            raise CheckpointError(
                "backbone: this Cosmos transformer concatenates a padding mask, which diffusers resizes "
                "with torchvision (pip install torchvision)"
            )
        dim = int(tc["num_attention_heads"] * tc["attention_head_dim"])
        if dim % cfg.adapter_heads:
            raise CheckpointError(
                f"backbone.adapter_heads {cfg.adapter_heads} does not divide the transformer's width {dim}"
            )
        self.token_dim = dim
        self.cond = nn.Sequential(nn.Linear(cond_dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.max_offset = max_offset
        self.offset = nn.Embedding(2 * max_offset + 1, dim)
        text_dim = (
            tc["crossattn_proj_in_channels"] if tc.get("use_crossattn_projection") else tc["text_embed_dim"]
        )
        self.text = nn.Parameter(torch.zeros(1, 1, text_dim))
        self.image_context = bool(tc.get("img_context_dim_in"))
        self.adapters = nn.ModuleList()
        self._tokens: torch.Tensor | None = None
        for blk in self.transformer.transformer_blocks:
            adapter = FrameAdapter(dim, dim, cfg.adapter_heads)
            self.adapters.append(adapter)
            blk.register_forward_hook(self._hook(adapter))

    def _hook(
        self, adapter: FrameAdapter
    ) -> Callable[[nn.Module, tuple[object, ...], torch.Tensor], torch.Tensor]:
        """A forward hook that mixes the current per-frame tokens into a block's output [B, T * N, D]."""

        def hook(module: nn.Module, args: tuple[object, ...], out: torch.Tensor) -> torch.Tensor:
            if self._tokens is None:
                return out
            B, T = self._tokens.shape[:2]
            h = adapter(out.reshape(B * T, -1, out.shape[-1]), self._tokens.reshape(B * T, -1))
            return h.reshape(out.shape)

        return hook

    def transformer_forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        condition_mask: torch.Tensor,
        tokens: torch.Tensor | None,
    ) -> torch.Tensor:
        """The transformer on latents [B, c, T, H, W] with per-frame timesteps [B, T] (flow-matching time),
        condition mask [B, 1, T, H, W] and per-frame tokens [B, T, D] fed to the adapters (None: the bare
        transformer). Returns its output [B, c, T, H, W]."""
        B, _, T, H, W = latents.shape
        text = self.text.expand(B, -1, -1)
        # an image-context model takes (text, image); none is given, so its image attention is skipped
        context: torch.Tensor | tuple[torch.Tensor, None] = (text, None) if self.image_context else text
        padding = latents.new_zeros(1, 1, H, W) if self.transformer.config["concat_padding_mask"] else None
        self._tokens = tokens
        try:
            out: torch.Tensor = self.transformer(
                latents,
                timestep.reshape(B, 1, T, 1, 1),
                context,
                fps=self.fps,
                condition_mask=condition_mask,
                padding_mask=padding,
                return_dict=False,
            )[0]
            return out
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
        """Same contract as `VideoDiT.forward`; state frames are [B, Fr, c, h, w] (one view's size). The
        context frames are those at offsets <= 0 (the last context step and earlier)."""
        h = img.shape[-2]
        x = torch.cat([rearrange(img, "b f v c h w -> b f c (v h) w"), state], dim=3)  # [B, Fr, c, (V+1)h, w]
        x = rearrange(x, "b f c h w -> b c f h w")
        is_ctx = offsets <= 0  # [B, Fr]
        t = torch.where(is_ctx, sigma.clamp_min(T_CONDITIONING), sigma)
        mask = is_ctx.to(x.dtype)[:, None, :, None, None].expand(-1, -1, -1, *x.shape[-2:])
        tokens = self.cond(cond) + self.offset(
            offsets.clamp(-self.max_offset, self.max_offset) + self.max_offset
        )
        out = rearrange(self.transformer_forward(x, t, mask, tokens), "b c f h w -> b f c h w")
        vi = rearrange(out[..., : self.views * h, :], "b f c (v h) w -> b f v c h w", v=self.views)
        return vi, out[..., self.views * h :, :]
