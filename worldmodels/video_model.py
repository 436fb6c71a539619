"""The action-conditioned video world model: VAE + latent video denoiser + action/pose tokens + sampler.

    model = VideoWorldModel(cfg)
    z = model.encode_frames(frames)                    # uint8 [..., 3, H, W] -> [..., c, h, w]
    loss = model.loss(batch, generator)                # flow matching, future frames only
    img, vec = model.sample(ctx, cond, offsets, noise) # generate F future frames (images + state + value)
    model = VideoWorldModel.from_pretrained("assets/worldmodels/push_cube_tiny")

One time step = one image latent per camera (`V` views) + one Cosmos-style state frame holding
[proprio, object poses, value] (`StateFrameCodec`). A forward pass sees `memory.frames` context
steps (clean) and `future` noisy steps; the loss covers the future steps only. Classifier-free
guidance comes from dropping the actions with probability `train.cond_drop`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from worldmodels.checkpoint import CheckpointError, check_state, load_pretrained, save_pretrained
from worldmodels.memory import retrieve_memory
from worldmodels.state_frames import StateFrameCodec
from worldmodels.video_config import DiTConfig, SVDConfig, VideoWorldModelConfig


def build_vae(cfg: VideoWorldModelConfig, weights: bool = True) -> nn.Module:
    """The VAE: from the saved architecture (`vae_arch`), a local pretrained directory (weights loaded
    when `weights`), or the tiny configuration to train."""
    from diffusers import AutoencoderKL

    v = cfg.vae
    if cfg.vae_arch is not None:  # a saved model: architecture from its config, weights from its safetensors
        return AutoencoderKL.from_config(cfg.vae_arch)
    if v.pretrained:
        path = Path(v.pretrained)
        if not (path / "config.json").exists():
            raise CheckpointError(
                f"vae.pretrained {path}: not a diffusers AutoencoderKL directory (no config.json)"
            )
        if weights:
            return AutoencoderKL.from_pretrained(str(path), local_files_only=True)
        return AutoencoderKL.from_config(AutoencoderKL.load_config(str(path)))
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
    """

    ctx_img: torch.Tensor
    ctx_vec: torch.Tensor
    actions: torch.Tensor
    has_action: torch.Tensor
    poses: torch.Tensor
    offsets: torch.Tensor
    fut_img: torch.Tensor | None = None
    fut_vec: torch.Tensor | None = None


def context_indices(poses: torch.Tensor, recent: int, retrieved: int, pose_dims: list[int]) -> torch.Tensor:
    """Memory indices (time-ordered) into a history of T steps, left-padded with step 0 to recent + retrieved."""
    idx = retrieve_memory(poses[:, pose_dims], recent, retrieved)
    k = recent + retrieved
    if len(idx) < k:
        idx = torch.cat([idx.new_zeros(k - len(idx)), idx])
    return idx


class VideoWorldModel(nn.Module):
    def __init__(self, cfg: VideoWorldModelConfig, weights: bool = True) -> None:
        """`weights`: load pretrained VAE / UNet weights from their local paths (False when the
        weights come from a checkpoint of ours)."""
        super().__init__()
        self.cfg = cfg
        self.vae = build_vae(cfg, weights)
        c = self.vae.config.latent_channels
        h, w = cfg.latent_size
        self.views = max(1, len(cfg.cameras))
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))
        self.register_buffer("action_scale", torch.ones(cfg.action_dim))
        if cfg.residual_latents:  # per-channel std of a latent's change over 1..future steps
            self.register_buffer("delta_latent_std", torch.ones(c))
        if isinstance(cfg.backbone, SVDConfig):
            # state frames ride along the frame axis at the latent's size
            state_shape = (c, self.views * h, w)
        else:
            s = cfg.state_frame
            state_shape = (s.channels, s.height, s.width)
        self.codec = StateFrameCodec(torch.zeros(cfg.vector_dim), torch.ones(cfg.vector_dim), *state_shape)
        # residual state frames: the future's change from the last context step has its own range
        self.delta_codec = (
            StateFrameCodec(torch.zeros(cfg.vector_dim), torch.ones(cfg.vector_dim), *state_shape)
            if cfg.state_frame.residual
            else None
        )
        # action, has-action, pose tag, is-context, commanded displacement since the present
        cond_dim = cfg.action_dim + 1 + cfg.state_dim + 1 + len(cfg.action_integration.dims)
        if isinstance(cfg.backbone, DiTConfig):
            from worldmodels.dit import VideoDiT

            b = cfg.backbone
            self.denoiser: nn.Module = VideoDiT(
                dim=b.dim,
                depth=b.depth,
                heads=b.heads,
                mlp_ratio=b.mlp_ratio,
                patch=b.patch,
                state_patch=b.state_patch,
                latent_channels=c,
                latent_size=(h, w),
                views=self.views,
                state_shape=state_shape,
                cond_dim=cond_dim,
                max_offset=cfg.max_steps + cfg.future,
                state_stream=b.state_stream,
            )
        else:
            from worldmodels.svd import SVDDenoiser

            self.denoiser = SVDDenoiser(
                cfg.backbone,
                latent_channels=c,
                views=self.views,
                cond_dim=cond_dim,
                max_offset=cfg.max_steps + cfg.future,
                weights=weights,
            )

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
        delta_latent_std: torch.Tensor | None = None,
    ) -> None:
        """Dataset statistics kept as buffers (saved with the weights): per-channel latent mean/std,
        the state-frame vector's range, the range of its change over the future (residual state
        frames only), the per-channel std of the normalised latents' change over the future
        (residual latents only), and the largest |action| per dimension."""
        if self.cfg.residual_latents:
            if delta_latent_std is None:
                raise ValueError("residual latents need the delta_latent_std statistic")
            self.delta_latent_std.copy_(delta_latent_std.clamp_min(1e-4))
        self.action_scale.copy_(torch.where(action_scale > 1e-6, action_scale, torch.ones_like(action_scale)))
        self.latent_mean.copy_(latent_mean)
        self.latent_std.copy_(latent_std.clamp_min(1e-4))
        pairs = [(self.codec, low, high)]
        if self.delta_codec is not None:
            if delta_low is None or delta_high is None:
                raise ValueError("residual state frames need delta_low / delta_high statistics")
            pairs.append((self.delta_codec, delta_low, delta_high))
        for codec, lo, hi in pairs:
            fresh = StateFrameCodec(lo, hi, *codec.shape)
            codec.low.copy_(fresh.low)
            codec.span.copy_(fresh.span)

    def _lat_norm(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """uint8 [..., 3, H, W] -> normalised latents [..., c, h, w] (posterior means)."""
        H, W = self.cfg.image_size
        if tuple(frames.shape[-3:]) != (3, H, W):
            raise ValueError(
                f"frames must be [..., 3, {H}, {W}] (the model's image size), got {list(frames.shape)}"
            )
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, 3, H, W)
        out = []
        for i in range(0, len(flat), batch):
            x = flat[i : i + batch].to(self.latent_mean.device, torch.float32) / 127.5 - 1
            out.append(self._lat_norm(self.vae.encode(x).latent_dist.mean))
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
            x = self.vae.decode(zz).sample
            out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        x = torch.cat(out)
        return x.reshape(*lead, *x.shape[1:])

    # ------------------------------------------------------------------ denoising
    def _cond(self, win: Window, drop: torch.Tensor | None) -> torch.Tensor:
        B, K = win.ctx_vec.shape[:2]
        n = win.actions.shape[1]
        a, has = win.actions / self.action_scale, win.has_action.float()
        if drop is not None:  # classifier-free guidance: forget the actions of dropped samples
            keep = (~drop).float()[:, None]
            a, has = a * keep[..., None], has * keep
        d = self.cfg.state_dim
        poses = torch.zeros(B, n, d, device=a.device)
        poses[:, :K] = (win.poses - self.codec.low[:d]) / self.codec.span[
            :d
        ] * 2 - 1  # the codec's normalisation
        is_ctx = torch.zeros(B, n, 1, device=a.device)
        is_ctx[:, :K] = 1
        feats = [a, has[..., None], poses, is_ctx]
        if self.cfg.action_integration.dims:
            cmd = self.commanded_displacement(win)
            feats.append(cmd if drop is None else cmd * keep[..., None])
        return torch.cat(feats, dim=-1)

    def commanded_displacement(self, win: Window) -> torch.Tensor:
        """[B, K + F, len(dims)]: for each future step, the sum of the (controller-clipped) delta actions from
        the first future step up to it, in units of `future` times the largest |action|; zero on context steps.
        Depends on a step's own and earlier actions only, so it keeps generation causal."""
        ai = self.cfg.action_integration
        K = win.ctx_vec.shape[1]
        d = win.actions[:, K:, ai.dims]
        if ai.max_norm is not None:
            d = d * (ai.max_norm / d.norm(dim=-1, keepdim=True).clamp_min(ai.max_norm))
        out = d.new_zeros(d.shape[0], win.actions.shape[1], d.shape[-1])
        out[:, K:] = d.cumsum(1) / (self.action_scale[ai.dims] * self.cfg.future)
        return out

    def _ctx_state(self, ctx_vec: torch.Tensor) -> torch.Tensor:
        v = ctx_vec.clone()
        v[..., self.cfg.value_index] = 0.0  # the value is predicted, never given
        return self.codec.encode(v)

    def _future_base(self, win: Window) -> torch.Tensor | None:
        """[B, 1, D]: what residual state frames are relative to (the last context step, value 0)."""
        if self.delta_codec is None:
            return None
        base = win.ctx_vec[:, -1:].clone()
        base[..., self.cfg.value_index] = 0.0
        return base

    def encode_future_latents(self, win: Window, fut_img: torch.Tensor) -> torch.Tensor:
        """Future latents [B, F, V, c, h, w] -> what the denoiser generates: the latents themselves, or with
        `residual_latents` their change from the last context step in units of its dataset std."""
        if not self.cfg.residual_latents:
            return fut_img
        return (fut_img - win.ctx_img[:, -1:]) / self.delta_latent_std[:, None, None]

    def decode_future_latents(self, win: Window, x: torch.Tensor) -> torch.Tensor:
        """Inverse of `encode_future_latents` (`win` with its clean context)."""
        if not self.cfg.residual_latents:
            return x
        return win.ctx_img[:, -1:] + x * self.delta_latent_std[:, None, None]

    def encode_future(self, win: Window, fut_vec: torch.Tensor) -> torch.Tensor:
        """Future vectors [B, F, D] -> state frames [B, F, cs, hs, ws] (absolute or residual)."""
        base = self._future_base(win)
        return self.codec.encode(fut_vec) if base is None else self.delta_codec.encode(fut_vec - base)

    def decode_future(self, win: Window, frames: torch.Tensor) -> torch.Tensor:
        """State frames [B, F, cs, hs, ws] -> future vectors [B, F, D]."""
        base = self._future_base(win)
        return self.codec.decode(frames) if base is None else self.delta_codec.decode(frames) + base

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Velocity of the future steps given noisy x_img [B, F, V, c, h, w], x_state [B, F, cs, hs, ws], sigma [B];
        `ctx_sigma` [B]: the noise level of the context latents (default 0, clean)."""
        K, F = win.ctx_img.shape[1], x_img.shape[1]
        img = torch.cat([win.ctx_img, x_img], dim=1)
        state = torch.cat([self._ctx_state(win.ctx_vec), x_state], dim=1)
        sig = self._frame_sigma(sigma, K, F, ctx_sigma)
        extra = {}
        if ctx_sigma is not None and getattr(self.denoiser, "separate", False):
            # context noise is given to the latents only: a separate state stream is told its context is clean
            extra["state_sigma"] = self._frame_sigma(sigma, K, F)
        vi, vs = self.denoiser(img, state, sig, self._cond(win, drop), win.offsets, **extra)
        return vi[:, K:], vs[:, K:]

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
        assert win.fut_img is not None and win.fut_vec is not None
        B = win.fut_img.shape[0]
        dev = win.fut_img.device
        x0_img, x0_state = self.encode_future_latents(win, win.fut_img), self.encode_future(win, win.fut_vec)
        draw = _drawer(generator, dev)
        sigma = torch.sigmoid(draw(torch.randn, (B,)))  # logit-normal noise levels
        e_img = draw(torch.randn, x0_img.shape)
        e_state = draw(torch.randn, x0_state.shape)
        drop = draw(torch.rand, (B,)) < self.cfg.train.cond_drop
        ctx_sigma = None
        # drawn after the other noise: context_noise = 0 keeps the old stream
        if self.cfg.train.context_noise > 0:
            ctx_sigma = draw(torch.rand, (B,)) * self.cfg.train.context_noise
            win = self.noise_context(win, ctx_sigma, draw(torch.randn, win.ctx_img.shape))
        s_i = sigma.view(B, 1, 1, 1, 1, 1)
        s_s = sigma.view(B, 1, 1, 1, 1)
        vi, vs = self.velocity(
            win,
            (1 - s_i) * x0_img + s_i * e_img,
            (1 - s_s) * x0_state + s_s * e_state,
            sigma,
            drop,
            ctx_sigma,
        )
        l_img = ((vi - (e_img - x0_img)) ** 2).mean()
        l_state = ((vs - (e_state - x0_state)) ** 2).mean()
        out = {"image": l_img.detach(), "state": l_state.detach()}
        if state_win is not None:  # drawn after everything else: without it the stream is unchanged
            assert state_win.fut_vec is not None
            n = state_win.fut_vec.shape[0]
            l_only = self.state_only_loss(state_win, generator)
            out["state_only"] = l_only.detach()
            l_state = (B * l_state + n * l_only) / (B + n)
        out["loss"] = l_img + self.cfg.state_frame.loss_weight * l_state
        return out

    def state_only_loss(self, win: Window, generator: torch.Generator | None = None) -> torch.Tensor:
        """Flow-matching loss of the future state frames alone, from a state-only pass (a separate state
        stream; `win` needs no latents)."""
        assert win.fut_vec is not None
        n = win.fut_vec.shape[0]
        draw = _drawer(generator, win.fut_vec.device)
        x0 = self.encode_future(win, win.fut_vec)
        sig = torch.sigmoid(draw(torch.randn, (n,)))
        eps = draw(torch.randn, x0.shape)
        drop = draw(torch.rand, (n,)) < self.cfg.train.cond_drop
        s = sig.view(n, 1, 1, 1, 1)
        v = self.state_velocity(win, (1 - s) * x0 + s * eps, sig, drop)
        return ((v - (eps - x0)) ** 2).mean()

    def state_shape(self) -> tuple[int, int, int]:
        return self.codec.shape

    @torch.no_grad()
    def sample(
        self,
        win: Window,
        noise_img: torch.Tensor,
        noise_state: torch.Tensor,
        steps: int | None = None,
        guidance: float | None = None,
        ctx_noise: tuple[float, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate the future: noise_img [B, F, V, c, h, w], noise_state [B, F, cs, hs, ws] ->
        (latents [B, F, V, c, h, w], vectors [B, F, D]) with a flow-matching Euler sampler.
        `ctx_noise` = (level, eps [B, K, V, c, h, w]) noises the context latents to `level` first."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        steps = steps or self.cfg.sampler.steps
        g = self.cfg.sampler.guidance if guidance is None else guidance
        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.cfg.sampler.shift)
        sched.set_timesteps(steps, device=noise_img.device)
        x_img, x_state = noise_img.clone(), noise_state.clone()
        B = x_img.shape[0]
        clean = win  # residual frames are relative to the clean context
        ctx_sigma = None
        if ctx_noise is not None and ctx_noise[0] > 0:
            ctx_sigma = x_img.new_full((B,), ctx_noise[0])
            win = self.noise_context(win, ctx_sigma, ctx_noise[1])
        for i in range(len(sched.timesteps)):
            sigma = sched.sigmas[i].expand(B).to(x_img.dtype)
            if g == 1.0:
                vi, vs = self.velocity(win, x_img, x_state, sigma, ctx_sigma=ctx_sigma)
            else:
                both = Window(
                    *(
                        torch.cat([x, x]) if isinstance(x, torch.Tensor) else x
                        for x in (
                            win.ctx_img,
                            win.ctx_vec,
                            win.actions,
                            win.has_action,
                            win.poses,
                            win.offsets,
                        )
                    )
                )
                drop = torch.cat([torch.zeros(B, dtype=torch.bool), torch.ones(B, dtype=torch.bool)]).to(
                    x_img.device
                )
                vi2, vs2 = self.velocity(
                    both,
                    torch.cat([x_img, x_img]),
                    torch.cat([x_state, x_state]),
                    torch.cat([sigma, sigma]),
                    drop,
                    None if ctx_sigma is None else torch.cat([ctx_sigma, ctx_sigma]),
                )
                vi = vi2[B:] + g * (vi2[:B] - vi2[B:])
                vs = vs2[B:] + g * (vs2[:B] - vs2[B:])
            dt = sched.sigmas[i + 1] - sched.sigmas[i]
            x_img = x_img + dt * vi
            x_state = x_state + dt * vs
        return self.decode_future_latents(clean, x_img), self.decode_future(clean, x_state)

    # ------------------------------------------------------------------ persistence
    def resolved_config(self) -> VideoWorldModelConfig:
        """The config with the loaded architectures recorded, so the checkpoint rebuilds without them."""
        upd: dict = {"vae_arch": dict(self.vae.config)}
        if isinstance(self.cfg.backbone, SVDConfig):
            upd["backbone"] = self.cfg.backbone.model_copy(update={"unet": dict(self.denoiser.unet.config)})
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
