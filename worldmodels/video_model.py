"""The action-conditioned video world model: VAE + latent video denoiser + action/pose tokens + sampler.

    model = VideoWorldModel(cfg)
    z = model.encode_frames(frames)                    # uint8 [..., 3, H, W] -> [..., c, h, w]
    loss = model.loss(batch, generator)                # flow matching, future frames only
    img, vec = model.sample(ctx, noise_img, noise_state, sampler, ctx_eps)  # F future frames (images + state + value)
    model = VideoWorldModel.from_pretrained("assets/worldmodels/push_cube_tiny")

One time step = one image latent per camera (`V` views) + one Cosmos-style state frame holding
[proprio, object poses, value] (`StateFrameCodec`). A forward pass sees `memory.recent +
memory.retrieved` context steps and `future` noisy steps; the loss covers the future steps only.
Classifier-free guidance comes from dropping the actions with probability `train.cond_drop`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from common.errors import UsageError
from worldmodels.checkpoint import (
    check_state,
    load_diffusers_model,
    load_pretrained,
    save_pretrained,
)
from worldmodels.memory import retrieve_memory
from worldmodels.state_frames import StateFrameCodec
from worldmodels.video_config import (
    CosmosConfig,
    DiTConfig,
    SamplerConfig,
    SVDConfig,
    VideoWorldModelConfig,
)

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    from worldmodels.dit import ContextCache


def build_vae(cfg: VideoWorldModelConfig, weights: bool = True) -> AutoencoderKL:
    """The VAE: from the saved architecture (`vae_arch`), a local pretrained directory (weights loaded
    when `weights`), or the tiny configuration to train."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    v = cfg.vae
    if cfg.vae_arch is not None:  # a saved model: architecture from its config, weights from its safetensors
        return AutoencoderKL.from_config(cfg.vae_arch)
    if v.pretrained:
        return load_diffusers_model(AutoencoderKL, Path(v.pretrained), weights, "vae.pretrained")
    n = len(v.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=v.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=v.block_out_channels,
        layers_per_block=v.layers_per_block,
        norm_num_groups=v.norm_num_groups,
        sample_size=cfg.image_size[0],
    )


def _drawer(
    generator: torch.Generator | None, device: torch.device
) -> Callable[[Callable[..., torch.Tensor], Sequence[int]], torch.Tensor]:
    """Random draws on the generator's own device (a seeded CPU generator in training), moved to `device`: the
    same stream on CPU and CUDA, which is what makes a step's noise a pure function of (seed, step) everywhere."""
    gdev = generator.device if generator is not None else torch.device("cpu")

    def draw(fn: Callable[..., torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
        return fn(tuple(shape), generator=generator, device=gdev).to(device)

    return draw


@dataclass
class Window:
    """A training / generation window, all tensors batched.

    ctx_img [B, K, V, c, h, w], ctx_vec [B, K, D]: context steps (clean, normalised latents; raw vectors)
    fut_img [B, F, V, c, h, w], fut_vec [B, F, D]: the future (targets; absent when generating)
    actions [B, K + F, A]: the action that led into each step (zeros where none); has_action [B, K + F]
    poses [B, K, P]: raw proprio of the context steps (their pose tags)
    offsets [B, K + F] long: step time relative to the last context step
    physics [B, P]: log physics scale factors of the episodes (`cfg.physics`; absent when it is empty)
    """

    ctx_img: torch.Tensor
    ctx_vec: torch.Tensor
    actions: torch.Tensor
    has_action: torch.Tensor
    poses: torch.Tensor
    offsets: torch.Tensor
    fut_img: torch.Tensor | None = None
    fut_vec: torch.Tensor | None = None
    physics: torch.Tensor | None = None

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Window:
        """The window with `fn` applied to each of its tensors (an absent future stays absent)."""
        return Window(
            fn(self.ctx_img),
            fn(self.ctx_vec),
            fn(self.actions),
            fn(self.has_action),
            fn(self.poses),
            fn(self.offsets),
            None if self.fut_img is None else fn(self.fut_img),
            None if self.fut_vec is None else fn(self.fut_vec),
            None if self.physics is None else fn(self.physics),
        )


def context_indices(poses: torch.Tensor, recent: int, retrieved: int, pose_dims: list[int]) -> torch.Tensor:
    """Memory indices (time-ordered) into a history of T steps, left-padded with step 0 to recent + retrieved."""
    idx = retrieve_memory(poses[:, pose_dims], recent, retrieved)
    k = recent + retrieved
    if len(idx) < k:
        idx = torch.cat([idx.new_zeros(k - len(idx)), idx])
    return idx


def _twice(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x])


def _twice_or_none(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else _twice(x)


def _flow_target(
    x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_sigma, velocity target) of flow matching: x_s = (1 - s) x0 + s eps, target eps - x0; sigma [B]."""
    s = sigma.view(-1, *[1] * (x0.ndim - 1))
    return (1 - s) * x0 + s * eps, eps - x0


class VideoWorldModel(nn.Module):
    # dataset statistics (buffers, saved with the weights)
    latent_mean: torch.Tensor  # [c]
    latent_std: torch.Tensor  # [c]
    action_scale: torch.Tensor  # [A]

    def __init__(self, cfg: VideoWorldModelConfig, weights: bool = True) -> None:
        """`weights`: load pretrained VAE / UNet weights from their local paths (False when the
        weights come from a checkpoint of ours)."""
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg, weights)
        c = self.vae.config["latent_channels"]
        self.views = max(1, len(cfg.cameras))
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))
        self.register_buffer("action_scale", torch.ones(cfg.action_dim))
        state_shape = self._state_frame_shape(c)
        self.codec = StateFrameCodec(torch.zeros(cfg.vector_dim), torch.ones(cfg.vector_dim), *state_shape)
        # residual state frames: the future's change from the last context step has its own range
        self.delta_codec = (
            StateFrameCodec(torch.zeros(cfg.vector_dim), torch.ones(cfg.vector_dim), *state_shape)
            if cfg.state_frame.residual
            else None
        )
        self.separate_state_stream = (
            isinstance(cfg.backbone, DiTConfig) and cfg.backbone.state_stream == "separate"
        )
        self.denoiser = self._build_denoiser(c, state_shape, weights)

    def _state_frame_shape(self, latent_channels: int) -> tuple[int, int, int]:
        if isinstance(self.cfg.backbone, SVDConfig):
            # state frames ride along the frame axis at the latent's size
            h, w = self.cfg.latent_size
            return latent_channels, self.views * h, w
        if isinstance(self.cfg.backbone, CosmosConfig):
            # a state frame is one more latent-sized tile below the views, in the step's own frame
            h, w = self.cfg.latent_size
            return latent_channels, h, w
        s = self.cfg.state_frame
        return s.channels, s.height, s.width

    def _build_denoiser(
        self, latent_channels: int, state_shape: tuple[int, int, int], weights: bool
    ) -> nn.Module:
        cfg = self.cfg
        # per frame: action, has-action, pose tag, is-context, the episode's physics
        cond_dim = cfg.action_dim + 1 + cfg.state_dim + 1 + len(cfg.physics)
        max_offset = cfg.max_steps + cfg.future
        if isinstance(cfg.backbone, SVDConfig):
            from worldmodels.svd import SVDDenoiser

            return SVDDenoiser(
                cfg.backbone,
                latent_channels=latent_channels,
                views=self.views,
                cond_dim=cond_dim,
                max_offset=max_offset,
                weights=weights,
            )
        if isinstance(cfg.backbone, CosmosConfig):
            from worldmodels.cosmos import CosmosDenoiser

            return CosmosDenoiser(
                cfg.backbone,
                latent_channels=latent_channels,
                views=self.views,
                cond_dim=cond_dim,
                max_offset=max_offset,
                weights=weights,
            )
        from worldmodels.dit import VideoDiT

        b = cfg.backbone
        return VideoDiT(
            dim=b.dim,
            depth=b.depth,
            heads=b.heads,
            mlp_ratio=b.mlp_ratio,
            patch=b.patch,
            state_patch=b.state_patch,
            latent_channels=latent_channels,
            latent_size=cfg.latent_size,
            views=self.views,
            state_shape=state_shape,
            cond_dim=cond_dim,
            max_offset=max_offset,
            state_stream=b.state_stream,
        )

    def adapt_warm_start(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's weights made to fit this model where it grew in a way the backbone knows (more
        camera views, longer episodes); used by `warm_start`."""
        from worldmodels.dit import VideoDiT

        if not isinstance(self.denoiser, VideoDiT):
            return state
        return self.denoiser.grow_offsets(self.denoiser.grow_views(state, "denoiser."), "denoiser.")

    # ------------------------------------------------------------------ normalisation
    def set_statistics(
        self,
        latent_mean: torch.Tensor,
        latent_std: torch.Tensor,
        low: torch.Tensor,
        high: torch.Tensor,
        action_scale: torch.Tensor,
        delta_low: torch.Tensor | None = None,
        delta_high: torch.Tensor | None = None,
    ) -> None:
        """Dataset statistics kept as buffers (saved with the weights): per-channel latent mean/std [c],
        the state-frame vector's range [D], the range of its change over the future [D] (residual state
        frames only), and the largest |action| per dimension [A]."""
        self.action_scale.copy_(torch.where(action_scale > 1e-6, action_scale, torch.ones_like(action_scale)))
        self.latent_mean.copy_(latent_mean)
        self.latent_std.copy_(latent_std.clamp_min(1e-4))
        pairs = [(self.codec, low, high)]
        if self.delta_codec is not None:
            if delta_low is None or delta_high is None:
                raise UsageError("residual state frames need delta_low / delta_high statistics")
            pairs.append((self.delta_codec, delta_low, delta_high))
        for codec, lo, hi in pairs:
            fresh = StateFrameCodec(lo, hi, *codec.shape)
            codec.low.copy_(fresh.low)
            codec.span.copy_(fresh.span)

    @property
    def state_shape(self) -> tuple[int, int, int]:
        """(cs, hs, ws) of a state frame."""
        return self.codec.shape

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """uint8 [..., 3, H, W] -> normalised latents [..., c, h, w] (posterior means)."""
        H, W = self.cfg.image_size
        if tuple(frames.shape[-3:]) != (3, H, W):
            raise UsageError(
                f"frames must be [..., 3, {H}, {W}] (the model's image size), got {list(frames.shape)}"
            )
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, 3, H, W)
        mean, std = self.latent_mean[:, None, None], self.latent_std[:, None, None]
        out = []
        for i in range(0, len(flat), batch):
            x = flat[i : i + batch].to(self.latent_mean.device, torch.float32) / 127.5 - 1
            out.append((self.vae.encode(x).latent_dist.mean - mean) / std)
        z = torch.cat(out)
        return z.reshape(*lead, *z.shape[1:])

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """normalised latents [..., c, h, w] -> uint8 [..., 3, H, W]."""
        lead = z.shape[:-3]
        flat = z.reshape(-1, *z.shape[-3:])
        out = []
        for i in range(0, len(flat), batch):
            zz = flat[i : i + batch] * self.latent_std[:, None, None] + self.latent_mean[:, None, None]
            x = self.vae.decode(zz).sample.float()  # float32 pixels, also under a bfloat16 autocast
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        x = torch.cat(out)
        return x.reshape(*lead, *x.shape[1:])

    # ------------------------------------------------------------------ denoising
    def _cond(self, win: Window, drop: torch.Tensor | None) -> torch.Tensor:
        """[B, K + F, cond_dim] per-frame features: action, has-action, pose tag (context steps), is-context,
        then the episode's physics (`cfg.physics`, never dropped). `drop` [B] bool forgets the actions of those
        windows (classifier-free guidance)."""
        B, K = win.ctx_vec.shape[:2]
        n = win.actions.shape[1]
        a, has = win.actions / self.action_scale, win.has_action.float()
        if drop is not None:
            keep = (~drop).float()[:, None]
            a, has = a * keep[..., None], has * keep
        d = self.cfg.state_dim
        poses = torch.zeros(B, n, d, device=a.device)
        poses[:, :K] = (win.poses - self.codec.low[:d]) / self.codec.span[
            :d
        ] * 2 - 1  # the codec's normalisation
        is_ctx = torch.zeros(B, n, 1, device=a.device)
        is_ctx[:, :K] = 1
        parts = [a, has[..., None], poses, is_ctx]
        if self.cfg.physics:
            if win.physics is None or win.physics.shape != (B, len(self.cfg.physics)):
                got = None if win.physics is None else list(win.physics.shape)
                raise UsageError(
                    f"the model is conditioned on physics {self.cfg.physics}: windows need physics "
                    f"[{B}, {len(self.cfg.physics)}], got {got}"
                )
            parts.append(win.physics[:, None, :].to(a.dtype).expand(B, n, -1))
        return torch.cat(parts, dim=-1)

    def _ctx_state(self, ctx_vec: torch.Tensor) -> torch.Tensor:
        v = ctx_vec.clone()
        v[..., self.cfg.value_index] = 0.0  # the value is predicted, never given
        return self.codec.encode(v)

    def _future_base(self, win: Window) -> torch.Tensor:
        """[B, 1, D]: what residual state frames are relative to (the last context step, value 0)."""
        base = win.ctx_vec[:, -1:].clone()
        base[..., self.cfg.value_index] = 0.0
        return base

    def encode_future(self, win: Window, fut_vec: torch.Tensor) -> torch.Tensor:
        """Future vectors [B, F, D] -> state frames [B, F, cs, hs, ws] (absolute or residual)."""
        if self.delta_codec is None:
            return self.codec.encode(fut_vec)
        return self.delta_codec.encode(fut_vec - self._future_base(win))

    def decode_future(self, win: Window, frames: torch.Tensor) -> torch.Tensor:
        """State frames [B, F, cs, hs, ws] -> future vectors [B, F, D]."""
        if self.delta_codec is None:
            return self.codec.decode(frames)
        return self.delta_codec.decode(frames) + self._future_base(win)

    @staticmethod
    def noise_context(win: Window, level: torch.Tensor, eps: torch.Tensor) -> Window:
        """The window with its context latents noised to `level` [B] (eps [B, K, V, c, h, w]), as in training
        with `train.context_noise`; pass the same level to `velocity` as `ctx_sigma`."""
        s = level.view(-1, 1, 1, 1, 1, 1).to(win.ctx_img.dtype)
        return replace(win, ctx_img=(1 - s) * win.ctx_img + s * eps)

    @staticmethod
    def _frame_sigma(
        sigma: torch.Tensor, K: int, F: int, ctx_sigma: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[B, K + F] per-frame noise levels: `ctx_sigma` [B] on the K context frames (default 0, clean),
        then `sigma` [B] on the F future frames."""
        B = len(sigma)
        ctx = sigma.new_zeros(B, K) if ctx_sigma is None else ctx_sigma[:, None].to(sigma.dtype).expand(B, K)
        return torch.cat([ctx, sigma[:, None].expand(B, F)], dim=1)

    def velocity(
        self,
        win: Window,
        x_img: torch.Tensor,
        x_state: torch.Tensor,
        sigma: torch.Tensor,
        drop: torch.Tensor | None = None,
        ctx_sigma: torch.Tensor | None = None,
        cache: ContextCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity of the future steps given noisy x_img [B, F, V, c, h, w], x_state [B, F, cs, hs, ws], sigma [B];
        `ctx_sigma` [B]: the noise level of the context latents (default 0, clean). `cache`: the context's
        keys and values from `context_cache` on the same window, drop and ctx_sigma (the same numbers, faster)."""
        K, F = win.ctx_img.shape[1], x_img.shape[1]
        if cache is not None:
            sig = sigma[:, None].expand(-1, F)
            vi, vs = self.denoiser(
                x_img, x_state, sig, self._cond(win, drop)[:, K:], win.offsets[:, K:], cache=cache
            )
            return vi, vs
        img = torch.cat([win.ctx_img, x_img], dim=1)
        state = torch.cat([self._ctx_state(win.ctx_vec), x_state], dim=1)
        sig = self._frame_sigma(sigma, K, F, ctx_sigma)
        extra: dict[str, torch.Tensor] = {}
        if ctx_sigma is not None and self.separate_state_stream:
            # context noise is given to the latents only: a separate state stream is told its context is clean
            extra["state_sigma"] = self._frame_sigma(sigma, K, F)
        vi, vs = self.denoiser(img, state, sig, self._cond(win, drop), win.offsets, **extra)
        return vi[:, K:], vs[:, K:]

    def context_cache(
        self, win: Window, drop: torch.Tensor | None = None, ctx_sigma: torch.Tensor | None = None
    ) -> ContextCache | None:
        """The context frames' keys and values in every block, for `velocity(..., cache=)` (None where the
        backbone has no cache: a shared stream or SVD computes the context at every sampler step)."""
        from worldmodels.dit import VideoDiT

        if not self.separate_state_stream or not isinstance(self.denoiser, VideoDiT):
            return None
        K = win.ctx_img.shape[1]
        sig = win.ctx_img.new_zeros(len(win.ctx_img), K)
        state_sigma = None
        if ctx_sigma is not None:
            state_sigma = sig  # the state stream is told its context is clean
            sig = ctx_sigma[:, None].to(sig.dtype).expand(-1, K)
        return self.denoiser.context_cache(
            win.ctx_img,
            self._ctx_state(win.ctx_vec),
            sig,
            self._cond(win, drop)[:, :K],
            win.offsets[:, :K],
            state_sigma,
        )

    def state_velocity(
        self, win: Window, x_state: torch.Tensor, sigma: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Velocity of the future state frames alone (a state-only pass; needs a separate state stream):
        equal to `velocity(...)[1]` on the same window and noise."""
        K = win.ctx_vec.shape[1]
        state = torch.cat([self._ctx_state(win.ctx_vec), x_state], dim=1)
        sig = self._frame_sigma(sigma, K, x_state.shape[1])
        _, vs = self.denoiser(None, state, sig, self._cond(win, drop), win.offsets)
        return vs[:, K:]

    def loss(
        self, win: Window, generator: torch.Generator | None = None, state_win: Window | None = None
    ) -> dict[str, torch.Tensor]:
        """Flow-matching loss on the future steps: x_s = (1 - s) x0 + s eps, target eps - x0.
        `state_win`: extra windows whose state frames train the state stream alone (their images are unused);
        the state loss is then the mean over both batches' windows."""
        if win.fut_img is None or win.fut_vec is None:
            raise UsageError("the loss needs a window with its future (fut_img, fut_vec)")
        B = win.fut_img.shape[0]
        x0_img, x0_state = win.fut_img, self.encode_future(win, win.fut_vec)
        draw = _drawer(generator, win.fut_img.device)
        sigma = torch.sigmoid(draw(torch.randn, (B,)))  # logit-normal noise levels
        e_img = draw(torch.randn, x0_img.shape)
        e_state = draw(torch.randn, x0_state.shape)
        drop = draw(torch.rand, (B,)) < self.cfg.train.cond_drop
        ctx_sigma = None
        if self.cfg.train.context_noise > 0:  # drawn after the other noise
            ctx_sigma = draw(torch.rand, (B,)) * self.cfg.train.context_noise
            win = self.noise_context(win, ctx_sigma, draw(torch.randn, win.ctx_img.shape))
        x_img, t_img = _flow_target(x0_img, e_img, sigma)
        x_state, t_state = _flow_target(x0_state, e_state, sigma)
        vi, vs = self.velocity(win, x_img, x_state, sigma, drop, ctx_sigma)
        l_img = ((vi - t_img) ** 2).mean()
        l_state = ((vs - t_state) ** 2).mean()
        out = {"image": l_img.detach(), "state": l_state.detach()}
        if state_win is not None:  # drawn after everything else
            n = state_win.ctx_vec.shape[0]
            l_only = self.state_only_loss(state_win, generator)
            out["state_only"] = l_only.detach()
            l_state = (B * l_state + n * l_only) / (B + n)
        out["loss"] = l_img + self.cfg.state_frame.loss_weight * l_state
        return out

    def state_only_loss(self, win: Window, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching loss of the future state frames alone, from a state-only pass (a separate state
        stream; `win` needs no latents)."""
        if win.fut_vec is None:
            raise UsageError("the state-only loss needs a window with its future vectors (fut_vec)")
        n = win.fut_vec.shape[0]
        draw = _drawer(generator, win.fut_vec.device)
        x0 = self.encode_future(win, win.fut_vec)
        sig = torch.sigmoid(draw(torch.randn, (n,)))
        eps = draw(torch.randn, x0.shape)
        drop = draw(torch.rand, (n,)) < self.cfg.train.cond_drop
        x, target = _flow_target(x0, eps, sig)
        return ((self.state_velocity(win, x, sig, drop) - target) ** 2).mean()

    @torch.no_grad()
    def sample(
        self,
        win: Window,
        noise_img: torch.Tensor,
        noise_state: torch.Tensor,
        sampler: SamplerConfig | None = None,
        ctx_eps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate the future: noise_img [B, F, V, c, h, w], noise_state [B, F, cs, hs, ws] ->
        (latents [B, F, V, c, h, w], vectors [B, F, D]) with a flow-matching Euler sampler.

        `sampler` (default: the model's) gives the steps, shift, guidance and context noise; with
        `sampler.context_noise` > 0 the context latents are first noised to that level with `ctx_eps`
        [B, K, V, c, h, w]."""
        from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler

        s = sampler or self.cfg.sampler
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=s.shift)
        if s.spacing == "uniform":  # sigmas 1, (N-1)/N, ..., 1/N; the scheduler appends the final 0
            sched.set_timesteps(sigmas=np.linspace(1.0, 1.0 / s.steps, s.steps), device=noise_img.device)
        else:
            sched.set_timesteps(s.steps, device=noise_img.device)
        x_img, x_state = noise_img.clone(), noise_state.clone()
        B = x_img.shape[0]
        clean = win  # residual state frames are relative to the clean context
        ctx_sigma = None
        if s.context_noise > 0:
            if ctx_eps is None:
                raise UsageError(
                    f"sampler.context_noise {s.context_noise} needs ctx_eps, the context latents' noise"
                )
            ctx_sigma = x_img.new_full((B,), s.context_noise)
            win = self.noise_context(win, ctx_sigma, ctx_eps)
        guided = s.guidance != 1.0
        drop = (
            torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]) if guided else None
        )
        pass_win, pass_ctx_sigma = (
            (win.map(_twice), _twice_or_none(ctx_sigma)) if guided else (win, ctx_sigma)
        )
        # the context computes the same at every step (frame-causal attention): once per pass
        cache = self.context_cache(pass_win, None if drop is None else drop.to(x_img.device), pass_ctx_sigma)
        for i in range(len(sched.timesteps)):
            sigma = sched.sigmas[i].expand(B).to(x_img.dtype)
            if guided:
                assert drop is not None
                vi2, vs2 = self.velocity(
                    pass_win,
                    _twice(x_img),
                    _twice(x_state),
                    _twice(sigma),
                    drop.to(x_img.device),
                    pass_ctx_sigma,
                    cache,
                )
                # classifier-free guidance on the actions: uncond + guidance * (cond - uncond)
                vi = vi2[B:] + s.guidance * (vi2[:B] - vi2[B:])
                vs = vs2[B:] + s.guidance * (vs2[:B] - vs2[B:])
            else:
                vi, vs = self.velocity(win, x_img, x_state, sigma, ctx_sigma=ctx_sigma, cache=cache)
            dt = sched.sigmas[i + 1] - sched.sigmas[i]
            x_img = x_img + dt * vi
            x_state = x_state + dt * vs
        return x_img, self.decode_future(clean, x_state)

    # ------------------------------------------------------------------ persistence
    def resolved_config(self) -> VideoWorldModelConfig:
        """The config with the loaded architectures recorded, so the checkpoint rebuilds without them."""
        upd: dict[str, object] = {"vae_arch": dict(self.vae.config)}
        if isinstance(self.cfg.backbone, SVDConfig):
            from worldmodels.svd import SVDDenoiser

            assert isinstance(self.denoiser, SVDDenoiser)
            upd["backbone"] = self.cfg.backbone.model_copy(update={"unet": dict(self.denoiser.unet.config)})
        if isinstance(self.cfg.backbone, CosmosConfig):
            from worldmodels.cosmos import CosmosDenoiser

            assert isinstance(self.denoiser, CosmosDenoiser)
            tc = dict(self.denoiser.transformer.config)
            upd["backbone"] = self.cfg.backbone.model_copy(update={"transformer": tc})
        return self.cfg.model_copy(update=upd)

    def save_pretrained(self, path: str | Path) -> Path:
        self.cfg = self.resolved_config()
        return save_pretrained(self, self.cfg, path)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str = "cpu") -> VideoWorldModel:
        state, cfg = load_pretrained(path, VideoWorldModelConfig, map_location)
        model = cls(cfg, weights=False)
        check_state(model, state, Path(path) / "model.safetensors")
        model.load_state_dict(state)
        return model.eval()
