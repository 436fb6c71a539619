"""A small video diffusion transformer over latent patches (the CPU backbone).

Tokens: every frame (context and future) contributes `V * (h/p) * (w/p)` image-latent patches and
`(hs/ps) * (ws/ps)` state-frame patches. Attention is *frame-causal*: a token sees the tokens of
its own and earlier frames only, so a generated frame never depends on a later frame's action.
Each frame is conditioned on its own action token twice: through adaLN-Zero modulation (with the
noise level) and through `FrameCrossAttention` masked to its frame (Ctrl-World's frame-level
conditioning). Context frames enter clean (noise level 0); the model predicts the flow-matching
velocity of the future frames.

Built from diffusers blocks (`Attention`, `FeedForward`, `Timesteps`, `TimestepEmbedding`).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from worldmodels.conditioning import FrameCrossAttention


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        from diffusers.models.attention import FeedForward
        from diffusers.models.attention_processor import Attention

        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=True, out_bias=True)
        self.action = FrameCrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(dim, mult=mlp_ratio, activation_fn="gelu-approximate")
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        tokens_per_frame: int,
    ) -> torch.Tensor:
        """x [B, N, D]; c [B, N, D] per-token conditioning; tokens [B, Fr, D]; mask [B, N, N] bool (True = attend)."""
        s1, g1, b1, s2, g2, b2 = self.ada(c).chunk(6, dim=-1)
        x = x + g1 * self.attn(_modulate(self.norm1(x), b1, s1), attention_mask=mask)
        x = self.action(x, tokens, tokens_per_frame)
        return x + g2 * self.mlp(_modulate(self.norm2(x), b2, s2))


class VideoDiT(nn.Module):
    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        patch: int,
        state_patch: int,
        latent_channels: int,
        latent_size: tuple[int, int],
        views: int,
        state_shape: tuple[int, int, int],
        cond_dim: int,
        max_offset: int,
    ) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        c, (h, w) = latent_channels, latent_size
        cs, hs, ws = state_shape
        self.p, self.ps, self.views = patch, state_patch, views
        self.latent_channels, self.state_shape = latent_channels, state_shape
        self.n_img = views * (h // patch) * (w // patch)
        self.n_state = (hs // state_patch) * (ws // state_patch)
        self.tokens_per_frame = self.n_img + self.n_state
        self.hp, self.wp = h // patch, w // patch
        self.img_in = nn.Linear(c * patch * patch, dim)
        self.state_in = nn.Linear(cs * state_patch * state_patch, dim)
        self.pos = nn.Parameter(torch.randn(self.tokens_per_frame, dim) * 0.02)  # views x patches, then state
        self.max_offset = max_offset
        self.offset = nn.Embedding(2 * max_offset + 1, dim)  # frame time relative to the present
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, dim)
        self.cond = nn.Sequential(nn.Linear(cond_dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.img_out = nn.Linear(dim, c * patch * patch)
        self.state_out = nn.Linear(dim, cs * state_patch * state_patch)
        for m in (self.ada_out[1], self.img_out, self.state_out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def _tokens(self, img: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """img [B, Fr, V, c, h, w], state [B, Fr, cs, hs, ws] -> [B, Fr * tokens_per_frame, D]."""
        ti = self.img_in(rearrange(img, "b f v c (hh p) (ww q) -> b f (v hh ww) (c p q)", p=self.p, q=self.p))
        ts = self.state_in(
            rearrange(state, "b f c (hh p) (ww q) -> b f (hh ww) (c p q)", p=self.ps, q=self.ps)
        )
        t = torch.cat([ti, ts], dim=2) + self.pos
        return t

    def forward(
        self,
        img: torch.Tensor,
        state: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor,
        offsets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity of every frame (callers use the future frames').

        img [B, Fr, V, c, h, w] and state [B, Fr, cs, hs, ws]: clean context frames then noisy future frames;
        sigma [B, Fr] noise level per frame (0 for context); cond [B, Fr, cond_dim] per-frame action/pose
        features; offsets [B, Fr] long, frame time relative to the last context frame.
        Returns (v_img [B, Fr, V, c, h, w], v_state [B, Fr, cs, hs, ws]).
        """
        B, Fr = img.shape[:2]
        T = self.tokens_per_frame
        x = (
            self._tokens(img, state)
            + self.offset(offsets.clamp(-self.max_offset, self.max_offset) + self.max_offset)[:, :, None]
        )
        x = x.reshape(B, Fr * T, -1)
        tokens = self.cond(cond)  # [B, Fr, D]
        temb = self.time_embed(self.time_proj(sigma.reshape(-1) * 1000).to(x.dtype)).reshape(B, Fr, -1)
        c = (temb + tokens).repeat_interleave(T, dim=1)  # [B, N, D]
        frame = torch.arange(Fr, device=x.device).repeat_interleave(T)
        mask = (frame[None, :] <= frame[:, None]).expand(B, -1, -1)  # query row attends to key column
        for blk in self.blocks:
            x = blk(x, c, tokens, mask, T)
        s, b = self.ada_out(c).chunk(2, dim=-1)
        x = _modulate(self.norm_out(x), b, s).reshape(B, Fr, T, -1)
        vi = rearrange(
            self.img_out(x[:, :, : self.n_img]),
            "b f (v hh ww) (c p q) -> b f v c (hh p) (ww q)",
            v=self.views,
            hh=self.hp,
            ww=self.wp,
            p=self.p,
            q=self.p,
        )
        cs, hs, ws = self.state_shape
        vs = rearrange(
            self.state_out(x[:, :, self.n_img :]),
            "b f (hh ww) (c p q) -> b f c (hh p) (ww q)",
            hh=hs // self.ps,
            ww=ws // self.ps,
            p=self.ps,
            q=self.ps,
        )
        return vi, vs
