"""A small video diffusion transformer over latent patches (the CPU backbone).

Tokens: every frame (context and future) contributes `V * (h/p) * (w/p)` image-latent patches and
`(hs/ps) * (ws/ps)` state-frame patches. Attention is *frame-causal*: a token sees the tokens of
its own and earlier frames only, so a generated frame never depends on a later frame's action.
Each frame is conditioned on its own action token twice: through adaLN-Zero modulation (with the
noise level) and through `FrameCrossAttention` masked to its frame (Ctrl-World's frame-level
conditioning). Context frames enter clean (noise level 0); the model predicts the flow-matching
velocity of the future frames.

With `state_stream="separate"` (MM-DiT style) state tokens have their own weights in every block and
attend to state tokens only, while image tokens attend to image and state tokens: the future poses
are predicted from past poses and actions, and the frames are drawn to match them. The state stream
then computes the same thing with or without image tokens, so it can be trained on state-only
windows at a small fraction of a full window's cost.

Built from diffusers blocks (`Attention`, `FeedForward`, `Timesteps`, `TimestepEmbedding`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from common.errors import UsageError
from worldmodels.conditioning import FrameCrossAttention


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def _zero_linear(dim_in: int, dim_out: int) -> nn.Linear:
    """A linear layer that starts at zero (its output is 0 until training moves it)."""
    lin = nn.Linear(dim_in, dim_out)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def _ada_zero(dim: int, chunks: int = 6) -> nn.Sequential:
    """adaLN-Zero modulation (by default shift, scale, gate of attention and MLP), zero at initialisation."""
    return nn.Sequential(nn.SiLU(), _zero_linear(dim, chunks * dim))


def _feed_forward(dim: int, mlp_ratio: float) -> nn.Module:
    from diffusers.models.attention import FeedForward

    return FeedForward(dim, mult=mlp_ratio, activation_fn="gelu-approximate")  # type: ignore[arg-type]


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=True, out_bias=True)
        self.action = FrameCrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = _feed_forward(dim, mlp_ratio)
        self.ada = _ada_zero(dim)

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


class _Stream(nn.Module):
    """One token type's weights in a `TwoStreamBlock`: adaLN-Zero, attention projections, action
    cross-attention, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.action = FrameCrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = _feed_forward(dim, mlp_ratio)
        self.ada = _ada_zero(dim)


class TwoStreamBlock(nn.Module):
    """Image and state tokens with their own weights, meeting in one frame-causal attention in which image
    tokens see image and state tokens and state tokens see state tokens only."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.img = _Stream(dim, heads, mlp_ratio)
        self.state = _Stream(dim, heads, mlp_ratio)

    def _open(
        self, s: _Stream, x: torch.Tensor, c: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, torch.Tensor]:
        mods = s.ada(c).chunk(6, dim=-1)  # shift/scale/gate of attention, then of the MLP
        h = _modulate(s.norm1(x), mods[2], mods[0])
        q, k, v = rearrange(s.qkv(h), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        return mods, q, k, v

    @staticmethod
    def _close(
        s: _Stream,
        x: torch.Tensor,
        a: torch.Tensor,
        mods: tuple[torch.Tensor, ...],
        tokens: torch.Tensor,
        per_frame: int,
    ) -> torch.Tensor:
        s1, g1, b1, s2, g2, b2 = mods
        x = x + g1 * s.proj(rearrange(a, "b h n d -> b n (h d)"))
        x = s.action(x, tokens, per_frame)
        return x + g2 * s.mlp(_modulate(s.norm2(x), b2, s2))

    def forward(
        self,
        xs: torch.Tensor,
        cs: torch.Tensor,
        mask_s: torch.Tensor,
        xi: torch.Tensor | None,
        ci: torch.Tensor | None,
        mask_i: torch.Tensor | None,
        tokens: torch.Tensor,
        past: BlockKV | None = None,
        record: list[BlockKV] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """xs [B, Ns, D] state tokens, cs [B, Ns, D] their conditioning, mask_s [Ns, Ns'] bool (True = attend);
        xi, ci [B, Ni, D] and mask_i [Ni, Ni' + Ns'] the same for image tokens (None: a state-only pass), whose
        keys are the image then the state tokens; tokens [B, Fr, D] per-frame action tokens.

        `past`: this block's keys and values of earlier frames (a `ContextCache` entry), placed before the
        tokens' own keys (Ns' = past + Ns state keys, Ni' likewise; the masks cover them). `record`: append
        this block's own keys and values to it (how a `ContextCache` is filled)."""
        n_frames = tokens.shape[1]
        ms, qs, ks, vs = self._open(self.state, xs, cs)
        ki = vi = None
        if xi is not None and ci is not None and mask_i is not None:
            mi, qi, ki, vi = self._open(self.img, xi, ci)
        if record is not None:
            record.append(BlockKV(ks, vs, ki, vi))
        if past is not None:
            ks, vs = torch.cat([past.ks, ks], 2), torch.cat([past.vs, vs], 2)
        a = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask_s)
        out_s = self._close(self.state, xs, a, ms, tokens, xs.shape[1] // n_frames)
        if ki is None or vi is None or xi is None or mask_i is None:
            return out_s, None
        if past is not None:
            if past.ki is None or past.vi is None:
                raise UsageError("the context cache holds no image keys (it was made by a state-only pass)")
            ki, vi = torch.cat([past.ki, ki], 2), torch.cat([past.vi, vi], 2)
        a = F.scaled_dot_product_attention(
            qi, torch.cat([ki, ks], 2), torch.cat([vi, vs], 2), attn_mask=mask_i
        )
        return out_s, self._close(self.img, xi, a, mi, tokens, xi.shape[1] // n_frames)


class BlockKV(NamedTuple):
    """One `TwoStreamBlock`'s attention keys and values of some frames' tokens ([B, heads, N, d]); the image
    ones are None after a state-only pass."""

    ks: torch.Tensor
    vs: torch.Tensor
    ki: torch.Tensor | None
    vi: torch.Tensor | None


@dataclass
class ContextCache:
    """The context frames' keys and values in every block. Attention is frame-causal, so the context tokens
    compute the same whatever the future holds: a sampler computes them once per pass instead of at every
    step (`VideoDiT.context_cache`, then `VideoDiT.forward(..., cache=)` over the future frames alone)."""

    frames: int
    blocks: list[BlockKV]


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
        state_stream: Literal["shared", "separate"] = "shared",
    ) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        if state_stream not in ("shared", "separate"):
            raise UsageError(f"state_stream must be 'shared' or 'separate', got {state_stream!r}")
        self.separate = state_stream == "separate"
        c, (h, w) = latent_channels, latent_size
        cs, hs, ws = state_shape
        self.p, self.ps, self.views = patch, state_patch, views
        self.state_shape = state_shape
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
        block = TwoStreamBlock if self.separate else DiTBlock
        self.blocks = nn.ModuleList(block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = _ada_zero(dim, chunks=2)
        self.img_out = _zero_linear(dim, c * patch * patch)
        self.state_out = _zero_linear(dim, cs * state_patch * state_patch)
        if self.separate:
            self.ada_out_state = _ada_zero(dim, chunks=2)

    def grow_views(self, state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """A checkpoint's weights `state` (keys under `prefix`) made to fit this model when it sees more camera
        views of the same size: the position embedding keeps the old views' rows and the state rows, and
        each new view starts from the first view's rows plus a small fixed random offset (so the views are
        told apart from the first step). Anything else is returned as it is."""
        key = f"{prefix}pos"
        old = state.get(key)
        per_view = self.hp * self.wp
        if old is None or old.shape[0] == self.tokens_per_frame or old.shape[1:] != self.pos.shape[1:]:
            return state
        old_views, rest = divmod(old.shape[0] - self.n_state, per_view)
        if rest or not 1 <= old_views < self.views:
            return state
        g = torch.Generator().manual_seed(0)
        first = old[:per_view]
        new = [old[: old_views * per_view]]
        new += [
            first + torch.randn(first.shape, generator=g).to(old) * 0.02
            for _ in range(self.views - old_views)
        ]
        return {**state, key: torch.cat([*new, old[old_views * per_view :]])}

    def grow_offsets(self, state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
        """A checkpoint's weights `state` made to fit this model when it reaches further back in time (longer
        episodes): the old model clamped a frame offset beyond its reach to its furthest row, so each new row
        is a copy of the furthest old row on its side, and the grown model computes exactly what the old one
        did on every input. Anything else is returned as it is."""
        key = f"{prefix}offset.weight"
        old = state.get(key)
        if (
            old is None
            or old.shape[0] >= self.offset.num_embeddings
            or old.shape[1:] != self.offset.weight.shape[1:]
        ):
            return state
        grow = self.max_offset - (old.shape[0] - 1) // 2
        return {**state, key: torch.cat([old[:1].expand(grow, -1), old, old[-1:].expand(grow, -1)])}

    def _img_tokens(self, img: torch.Tensor) -> torch.Tensor:
        """img [B, Fr, V, c, h, w] -> [B, Fr, n_img, D] (with their position embedding)."""
        t = self.img_in(rearrange(img, "b f v c (hh p) (ww q) -> b f (v hh ww) (c p q)", p=self.p, q=self.p))
        return t + self.pos[: self.n_img]

    def _state_tokens(self, state: torch.Tensor) -> torch.Tensor:
        """state [B, Fr, cs, hs, ws] -> [B, Fr, n_state, D] (with their position embedding)."""
        t = self.state_in(
            rearrange(state, "b f c (hh p) (ww q) -> b f (hh ww) (c p q)", p=self.ps, q=self.ps)
        )
        return t + self.pos[self.n_img :]

    def _img_out(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Fr, n_img, D] -> v_img [B, Fr, V, c, h, w]."""
        return rearrange(
            self.img_out(x),
            "b f (v hh ww) (c p q) -> b f v c (hh p) (ww q)",
            v=self.views,
            hh=self.hp,
            ww=self.wp,
            p=self.p,
            q=self.p,
        )

    def _state_out(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Fr, n_state, D] -> v_state [B, Fr, cs, hs, ws]."""
        cs, hs, ws = self.state_shape
        return rearrange(
            self.state_out(x),
            "b f (hh ww) (c p q) -> b f c (hh p) (ww q)",
            hh=hs // self.ps,
            ww=ws // self.ps,
            p=self.ps,
            q=self.ps,
        )

    def forward(
        self,
        img: torch.Tensor | None,
        state: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor,
        offsets: torch.Tensor,
        state_sigma: torch.Tensor | None = None,
        cache: ContextCache | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Velocity of every frame (callers use the future frames').

        img [B, Fr, V, c, h, w] and state [B, Fr, cs, hs, ws]: clean context frames then noisy future frames;
        sigma [B, Fr] noise level per frame (0 for context); cond [B, Fr, cond_dim] per-frame action/pose
        features; offsets [B, Fr] long, frame time relative to the last context frame.
        Returns (v_img [B, Fr, V, c, h, w], v_state [B, Fr, cs, hs, ws]). With a separate state stream `img` may
        be None (a state-only pass, v_img None): v_state is then what the full pass would give, and `state_sigma`
        [B, Fr] is the state frames' own noise level (default `sigma`; context state frames are clean even
        where the context latents are noised). With `cache` (separate state stream only; from `context_cache`
        on the same context) every argument holds the future frames alone, and so do the velocities: the same
        numbers as a full pass, without recomputing the context.
        """
        c, c_state, off, tokens = self._conditioning(sigma, cond, offsets, state_sigma)
        if self.separate:
            return self._forward_two_stream(img, state, c, c_state, off, tokens, cache)
        if img is None:
            raise UsageError(
                "a shared-stream VideoDiT needs the image latents (state_stream: separate does not)"
            )
        if cache is not None:
            raise UsageError("a context cache needs backbone.state_stream: separate")
        B, Fr = state.shape[:2]
        T = self.tokens_per_frame
        x = torch.cat([self._img_tokens(img), self._state_tokens(state)], dim=2) + off
        x = x.reshape(B, Fr * T, -1)
        cc = c.repeat_interleave(T, dim=1)  # [B, N, D]
        frame = torch.arange(Fr, device=x.device).repeat_interleave(T)
        mask = (frame[None, :] <= frame[:, None]).expand(B, -1, -1)  # query row attends to key column
        for blk in self.blocks:
            x = blk(x, cc, tokens, mask, T)
        s, b = self.ada_out(cc).chunk(2, dim=-1)
        x = _modulate(self.norm_out(x), b, s).reshape(B, Fr, T, -1)
        return self._img_out(x[:, :, : self.n_img]), self._state_out(x[:, :, self.n_img :])

    def _conditioning(
        self, sigma: torch.Tensor, cond: torch.Tensor, offsets: torch.Tensor, state_sigma: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image conditioning, state conditioning [B, Fr, D], offset embedding [B, Fr, 1, D], action tokens
        [B, Fr, D]) of the frames."""
        B, Fr = sigma.shape[:2]
        off = self.offset(offsets.clamp(-self.max_offset, self.max_offset) + self.max_offset)[:, :, None]
        tokens = self.cond(cond)  # [B, Fr, D]

        def embed(s: torch.Tensor) -> torch.Tensor:
            return self.time_embed(self.time_proj(s.reshape(-1) * 1000).to(tokens.dtype)).reshape(B, Fr, -1)

        c = embed(sigma) + tokens
        return c, c if state_sigma is None else embed(state_sigma) + tokens, off, tokens

    @torch.no_grad()
    def context_cache(
        self,
        img: torch.Tensor,
        state: torch.Tensor,
        sigma: torch.Tensor,
        cond: torch.Tensor,
        offsets: torch.Tensor,
        state_sigma: torch.Tensor | None = None,
    ) -> ContextCache:
        """Every block's keys and values of the context frames (arguments as in `forward`, context frames
        only), for `forward(..., cache=)` over future frames (separate state stream only)."""
        if not self.separate:
            raise UsageError("a context cache needs backbone.state_stream: separate")
        c, c_state, off, tokens = self._conditioning(sigma, cond, offsets, state_sigma)
        record: list[BlockKV] = []
        self._forward_two_stream(img, state, c, c_state, off, tokens, record=record)
        return ContextCache(state.shape[1], record)

    def _forward_two_stream(
        self,
        img: torch.Tensor | None,
        state: torch.Tensor,
        c: torch.Tensor,
        c_state: torch.Tensor,
        off: torch.Tensor,
        tokens: torch.Tensor,
        cache: ContextCache | None = None,
        record: list[BlockKV] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        B, Fr = state.shape[:2]
        k0 = 0 if cache is None else cache.frames  # frames before these (in the cache)
        frames = torch.arange(k0 + Fr, device=state.device)
        xs = (self._state_tokens(state) + off).reshape(B, Fr * self.n_state, -1)
        cs = c_state.repeat_interleave(self.n_state, dim=1)
        ks_frame = frames.repeat_interleave(self.n_state)  # frame of every state key (cached ones first)
        mask_s = (
            ks_frame[k0 * self.n_state :, None] >= ks_frame[None, :]
        )  # frame-causal: row attends to column
        xi = ci = mask_i = None
        if img is not None:
            xi = (self._img_tokens(img) + off).reshape(B, Fr * self.n_img, -1)
            ci = c.repeat_interleave(self.n_img, dim=1)
            ki_frame = frames.repeat_interleave(self.n_img)
            mask_i = ki_frame[k0 * self.n_img :, None] >= torch.cat([ki_frame, ks_frame])[None, :]
        for n, blk in enumerate(self.blocks):
            past = None if cache is None else cache.blocks[n]
            xs, xi = blk(xs, cs, mask_s, xi, ci, mask_i, tokens, past, record)
        if record is not None:
            return None, xs  # only the keys and values were wanted
        s, b = self.ada_out_state(cs).chunk(2, dim=-1)
        vs = self._state_out(_modulate(self.norm_out(xs), b, s).reshape(B, Fr, self.n_state, -1))
        if xi is None or ci is None:
            return None, vs
        s, b = self.ada_out(ci).chunk(2, dim=-1)
        return self._img_out(_modulate(self.norm_out(xi), b, s).reshape(B, Fr, self.n_img, -1)), vs
