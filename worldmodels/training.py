"""Training the video world model with Lightning: VAE stage, then the latent dynamics stage.

    dreamtwin train worldmodel --config configs/worldmodels/video_tiny.yaml --data data/push_cube_small \\
        --out runs/wm_tiny [--max-minutes 60] [--resume]

Episodes come in as arrays (the CLI reads the LeRobot dataset), so this package never depends on
the dataset code. The last `train.holdout_episodes` episodes are held out for validation.

Output directory:
    config.json          the resolved config (dataset-derived fields filled in)
    state/               the latest training state: model/ (save_pretrained), optimizer.safetensors,
                         trainer.json (stage, step) - written atomically every `checkpoint_every` steps
    model/               the trained model (save_pretrained), written when both stages are done
    log.jsonl            losses after step 1, every 25 steps and the last; validation loss every
                         `val_every` steps

Each stage is a `common.training.Run` (the one training harness): this module supplies the model,
the loss of a step and its batches. Exact resume: the batch, the noise and the condition dropout of
step s are drawn from generators seeded by (seed, stage, s); the learning rate is a function of s;
the optimizer state is restored. Training 2N steps, or N steps + resume + N steps, gives the same
weights.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from pydantic import ValidationError

from common.io import atomic_write_text
from common.training import (
    Hardware,
    Log,
    Run,
    Schedule,
    State,
    TrainingError,
    fit,
    has_optimizer,
    read_state,
    save_state,
    step_generators,
    warmup_cosine,
)
from worldmodels.checkpoint import check_state, load_pretrained, warm_start
from worldmodels.video_config import VideoWorldModelConfig
from worldmodels.video_model import VideoWorldModel, Window, context_indices

STAGES = ("vae", "dynamics")
LOG_EVERY = 25


# ---------------------------------------------------------------------- episodes -> tensors
def value_targets(success: np.ndarray, discount: float) -> np.ndarray:
    """Per-step value: discount ** (steps until the first solved frame), 0 on failed episodes."""
    hit = np.flatnonzero(success)
    v = np.zeros(len(success), np.float32)
    if len(hit):
        t = np.arange(hit[0] + 1)
        v[: hit[0] + 1] = discount ** (hit[0] - t)
        v[hit[0] + 1 :] = 1.0
    return v


class EpisodeStore:
    """Episodes held as tensors: frames (uint8), latents (after the VAE stage), vectors, actions."""

    def __init__(self, episodes: list[dict[str, np.ndarray]], cfg: VideoWorldModelConfig) -> None:
        if not episodes:
            raise TrainingError("no episodes to train on")
        self.frames = [torch.from_numpy(e["frames"]) for e in episodes]  # [T, V, 3, H, W]
        self.actions = [torch.from_numpy(e["actions"]) for e in episodes]
        self.state = [torch.from_numpy(e["state"]) for e in episodes]
        self.vectors = [
            torch.from_numpy(
                np.concatenate(
                    [e["state"], e["env_state"], value_targets(e["success"], cfg.value_discount)[:, None]], 1
                )
            )
            for e in episodes
        ]
        # object positions [T, objects, 3] (env_state = 7 values per object: position, quaternion)
        self.positions = [
            torch.from_numpy(e["env_state"]).reshape(len(e["env_state"]), -1, 7)[..., :3] for e in episodes
        ]
        # log physics scale factors [P] of every episode (`cfg.physics`; see `with_physics`)
        self.physics = [torch.from_numpy(e["physics"]) for e in episodes] if cfg.physics else None
        self.latents: list[torch.Tensor] | None = None
        self.cfg = cfg

    def __len__(self) -> int:
        return len(self.frames)

    def starts(self, episodes: list[int]) -> list[tuple[int, int]]:
        """(episode, t) for every window whose future t+1..t+F lies inside the episode."""
        F = self.cfg.future
        return [(k, t) for k in episodes for t in range(len(self.frames[k]) - F)]

    def moving(self, items: list[tuple[int, int]], threshold: float) -> list[tuple[int, int]]:
        """The windows in which some object's position changes by more than `threshold` over the future."""
        F = self.cfg.future
        out = []
        for k, t in items:
            p = self.positions[k]
            if p.shape[1] and float((p[t + 1 : t + 1 + F] - p[t]).norm(dim=-1).max()) > threshold:
                out.append((k, t))
        return out

    def window(self, items: list[tuple[int, int]], images: bool = True) -> Window:
        """A training window per (episode, t): memory context ending at t, future t+1..t+F. `images=False`:
        the latents are left out (empty [B, K, 0] / [B, F, 0] tensors), for state-only passes."""
        assert self.latents is not None or not images
        m, F = self.cfg.memory, self.cfg.future
        ctx_img, ctx_vec, fut_img, fut_vec, acts, has, poses, offs = [], [], [], [], [], [], [], []
        for k, t in items:
            idx = context_indices(self.state[k][: t + 1], m.recent, m.retrieved, m.pose_dims)
            fut = torch.arange(t + 1, t + 1 + F)
            steps = torch.cat([idx, fut])
            if self.latents is not None and images:
                ctx_img.append(self.latents[k][idx])
                fut_img.append(self.latents[k][fut])
            else:
                ctx_img.append(torch.zeros(len(idx), 0))
                fut_img.append(torch.zeros(len(fut), 0))
            ctx_vec.append(self.vectors[k][idx])
            fut_vec.append(self.vectors[k][fut])
            prev = (steps - 1).clamp_min(0)
            acts.append(torch.where((steps > 0)[:, None], self.actions[k][prev], 0.0))
            has.append(steps > 0)
            poses.append(self.state[k][idx])
            offs.append(steps - t)
        st = torch.stack
        physics = None if self.physics is None else st([self.physics[k] for k, _ in items])
        return Window(
            st(ctx_img),
            st(ctx_vec),
            st(acts),
            st(has),
            st(poses),
            st(offs),
            st(fut_img),
            st(fut_vec),
            physics,
        )


def step_generator(seed: int, stage: str, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The generators of one training step: a pure function of (seed, stage, step)."""
    return step_generators(seed, STAGES.index(stage), step)


# ---------------------------------------------------------------------- one stage's steps
class Stage:
    """The parameters, learning rate, batches and loss of one training stage: `vae` (reconstruction + KL
    on frames) or `dynamics` (flow matching on windows)."""

    def __init__(self, model: VideoWorldModel, store: EpisodeStore, stage: str, train_eps: list[int]) -> None:
        self.model, self.store, self.stage = model, store, stage
        self.cfg = model.cfg
        self.train_eps = train_eps
        self.windows = store.starts(train_eps) if stage == "dynamics" else []
        t = self.cfg.train
        self.moving = (
            store.moving(self.windows, t.motion_threshold) if self.windows and t.motion_fraction > 0 else []
        )
        self.sizes = [len(store.frames[k]) for k in train_eps]

    def params(self) -> list[torch.nn.Parameter]:
        mod = self.model.vae if self.stage == "vae" else self.model.denoiser
        return list(mod.parameters())

    def lr(self, total: int) -> Schedule:
        if self.stage == "vae":
            return warmup_cosine(self.cfg.vae.lr, total)
        return warmup_cosine(self.cfg.train.lr, total, self.cfg.train.warmup)

    @property
    def weight_decay(self) -> float:
        return self.cfg.train.weight_decay if self.stage == "dynamics" else 0.0

    def batch(self, rng: np.random.Generator) -> Any:
        """`vae`: frames [B, 3, H, W] in [-1, 1]; `dynamics`: (window, state-only window or None)."""
        if self.stage == "vae":
            B = self.cfg.vae.batch_size
            ks = rng.integers(0, len(self.train_eps), B)
            frames = []
            for j in ks:
                k = self.train_eps[int(j)]
                f = self.store.frames[k][int(rng.integers(0, self.sizes[int(j)]))]
                frames.append(f[int(rng.integers(0, f.shape[0]))])
            return torch.stack(frames).float().div(127.5).sub(1)
        win = self.store.window(self._items(rng, self.cfg.train.batch_size))
        n = self.cfg.train.state_batch_size  # drawn after the full batch: 0 keeps the old stream
        return win, (self.store.window(self._items(rng, n), images=False) if n else None)

    def _items(self, rng: np.random.Generator, B: int) -> list[tuple[int, int]]:
        n_move = int(round(B * self.cfg.train.motion_fraction)) if self.moving else 0
        items = [self.windows[int(i)] for i in rng.integers(0, len(self.windows), B - n_move)]
        if n_move:  # contact windows, so that pushes are not drowned by still frames
            items += [self.moving[int(i)] for i in rng.integers(0, len(self.moving), n_move)]
        return items

    def loss(self, step: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The losses of training step `step`, drawn from `step_generator(seed, stage, step)` alone."""
        rng, gen = step_generator(self.cfg.train.seed, self.stage, step)
        data = self.batch(rng)
        if self.stage == "vae":
            return vae_loss(self.model, data, gen)
        win, state_win = data

        def to(x: torch.Tensor) -> torch.Tensor:
            return x.to(device)

        return self.model.loss(win.map(to), gen, None if state_win is None else state_win.map(to))


def detail_weights(x: torch.Tensor, weight: float, kernel: int) -> torch.Tensor:
    """[B, 1, H, W] pixel weights 1 + weight * |x - local mean of x| (channels summed): edges and small
    objects count more than flat background. x: images in [-1, 1], [B, 3, H, W]."""
    k = kernel | 1
    local = torch.nn.functional.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)
    return 1 + weight * (x - local).abs().sum(1, keepdim=True)


def vae_loss(model: VideoWorldModel, x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    x = x.to(model.latent_mean.device)
    post = model.vae.encode(x).latent_dist
    z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(x.device)
    rec = model.vae.decode(z).sample
    v = model.cfg.vae
    if v.detail_weight > 0:
        w = detail_weights(x, v.detail_weight, v.detail_kernel)
        l1 = (w * (rec - x).abs()).mean() / w.mean()
        mse = (w * (rec - x) ** 2).mean() / w.mean()
    else:
        l1 = (rec - x).abs().mean()
        mse = ((rec - x) ** 2).mean()
    kl = post.kl().mean()
    plain = ((rec - x) ** 2).mean()  # the unweighted error, for the log
    return {"loss": l1 + mse + model.cfg.vae.kl_weight * kl, "mse": plain.detach(), "kl": kl.detach()}


# ---------------------------------------------------------------------- the job
def resolve_config(
    cfg: VideoWorldModelConfig, episodes: list[dict[str, np.ndarray]], meta: dict[str, Any]
) -> VideoWorldModelConfig:
    e = episodes[0]
    scene = meta.get("scene")
    max_steps = max(len(x["actions"]) for x in episodes)
    if scene is not None:
        max_steps = max(max_steps, int(scene["task"]["max_steps"]) + 1)
    update = {
        "cameras": list(meta["cameras"]),
        "image_size": tuple(meta["image_size"]),
        "action_dim": e["actions"].shape[1],
        "state_dim": e["state"].shape[1],
        "env_dim": e["env_state"].shape[1],
        "max_steps": max_steps,
        "fps": float(meta["fps"]),
        "scene": scene,
    }
    try:  # validated again: some fields are checked against the dataset's sizes (image size, action dims)
        return VideoWorldModelConfig.model_validate({**cfg.model_dump(), **update})
    except ValidationError as err:
        first = err.errors()[0]
        raise TrainingError(f"config does not fit the dataset: {first['msg']}") from None


def with_physics(
    episodes: list[dict[str, np.ndarray]], meta: dict[str, Any], names: list[str]
) -> list[dict[str, np.ndarray]]:
    """The episodes with `physics` [P]: the log of each named randomisation scale factor (from the dataset's
    per-frame `randomization` columns, `meta["randomization_names"]`); unchanged when `names` is empty."""
    if not names:
        return episodes
    have = list(meta.get("randomization_names") or [])
    missing = [n for n in names if n not in have]
    if missing:
        raise TrainingError(
            f"physics {missing} are not among the dataset's randomisation parameters {have or '(none)'}"
        )
    cols = [have.index(n) for n in names]
    out = []
    for e in episodes:
        scale = e["randomization"][0, cols].astype(np.float64)
        if (scale <= 0).any():
            raise TrainingError(
                f"physics scale factors must be positive, got {dict(zip(names, scale, strict=True))}"
            )
        out.append({**e, "physics": np.log(scale).astype(np.float32)})
    return out


def split(n: int, holdout: int) -> tuple[list[int], list[int]]:
    if n - holdout < 1:
        raise TrainingError(f"{n} episodes and train.holdout_episodes={holdout}: nothing left to train on")
    return list(range(n - holdout)), list(range(n - holdout, n))


class _Statistics(TypedDict):
    """`VideoWorldModel.set_statistics`'s arguments."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    action_scale: torch.Tensor
    delta_low: torch.Tensor | None
    delta_high: torch.Tensor | None


def _dataset_statistics(model: VideoWorldModel, store: EpisodeStore, train_eps: list[int]) -> _Statistics:
    """The training episodes' statistics."""
    assert store.latents is not None, "the statistics are taken from the encoded latents"
    z = torch.cat([store.latents[k].flatten(0, 1) for k in train_eps])  # [N, c, h, w]  (already normalised)
    raw = z * model.latent_std[:, None, None] + model.latent_mean[:, None, None]
    vec = torch.cat([store.vectors[k] for k in train_eps])
    lo, hi = vec.amin(0), vec.amax(0)
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    lo[model.cfg.value_index], hi[model.cfg.value_index] = 0.0, 1.0
    acts = torch.cat([store.actions[k] for k in train_eps]).abs().amax(0)
    d_lo = d_hi = None
    # range of vec[t + f] - vec[t] over f = 1..F (the value stays absolute)
    if model.cfg.state_frame.residual:
        vi = model.cfg.value_index
        deltas = []
        for k in train_eps:
            v = store.vectors[k]
            for f in range(1, min(model.cfg.future, len(v) - 1) + 1):
                d = v[f:] - v[:-f]
                d[:, vi] = v[f:, vi]
                deltas.append(d)
        dv = torch.cat(deltas)
        d_lo, d_hi = dv.amin(0), dv.amax(0)
        pad = (d_hi - d_lo) * 0.05
        d_lo, d_hi = d_lo - pad, d_hi + pad
        d_lo[vi], d_hi[vi] = 0.0, 1.0
    return {
        "latent_mean": raw.mean((0, 2, 3)),
        "latent_std": raw.std((0, 2, 3)),
        "low": lo,
        "high": hi,
        "action_scale": acts,
        "delta_low": d_lo,
        "delta_high": d_hi,
    }


def _statistics(model: VideoWorldModel, store: EpisodeStore, train_eps: list[int]) -> None:
    model.set_statistics(**_dataset_statistics(model, store, train_eps))


def _widen_statistics(model: VideoWorldModel, store: EpisodeStore, train_eps: list[int]) -> None:
    """A warm start keeps its checkpoint's latent statistics (its latents are normalised with them) and
    widens the state and action ranges to the new data's where they reach further (a lifted cube where the
    checkpoint only saw it pushed); an entry the new data fits keeps its range exactly."""
    new = _dataset_statistics(model, store, train_eps)
    with torch.no_grad():
        model.action_scale.copy_(torch.maximum(model.action_scale, new["action_scale"]))
        codecs = [(new["low"], new["high"], model.codec)]
        if model.delta_codec is not None:
            assert new["delta_low"] is not None and new["delta_high"] is not None
            codecs.append((new["delta_low"], new["delta_high"], model.delta_codec))
        for lo, hi, codec in codecs:
            old_hi = codec.low + codec.span
            low, high = torch.minimum(codec.low, lo), torch.maximum(old_hi, hi)
            grown = (lo < codec.low) | (hi > old_hi)
            codec.span.copy_(torch.where(grown, high - low, codec.span))
            codec.low.copy_(low)


def _state(model: VideoWorldModel, out: Path, stage: str) -> State:
    return State(
        directory=out / "state",
        save_model=model.save_pretrained,
        info={"stage": stage},
        every=model.cfg.train.checkpoint_every,
    )


@torch.no_grad()
def vae_psnr(model: VideoWorldModel, store: EpisodeStore, eps: list[int], n: int = 256) -> float:
    """Mean reconstruction PSNR (dB) of up to n held-out frames."""
    frames = (
        torch.cat([store.frames[k].flatten(0, 1) for k in eps])[:n]
        if eps
        else store.frames[0].flatten(0, 1)[:n]
    )
    model.eval()
    rec = model.decode_latents(model.encode_frames(frames))
    mse = ((rec.float() - frames.float()) ** 2).mean((1, 2, 3)).clamp_min(1e-3)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


@torch.no_grad()
def validation_loss(
    model: VideoWorldModel, store: EpisodeStore, eps: list[int], n: int = 32, seed: int = 12345
) -> float:
    starts = store.starts(eps)
    if not starts:
        return float("nan")
    rng = np.random.default_rng(seed)
    picks = [starts[int(i)] for i in rng.integers(0, len(starts), n)]
    g = torch.Generator().manual_seed(seed)
    dev = model.latent_mean.device
    total = 0.0
    for i in range(0, n, 8):
        total += float(model.loss(store.window(picks[i : i + 8]).map(lambda x: x.to(dev)), g)["loss"]) * len(
            picks[i : i + 8]
        )
    return total / n


def _start_or_resume(
    cfg: VideoWorldModelConfig,
    episodes: list[dict[str, np.ndarray]],
    meta: dict[str, Any],
    out: Path,
    resume: bool,
) -> tuple[VideoWorldModel, str, int]:
    """The model (its config resolved against the dataset, or the run's saved one when resuming, with
    the saved weights), and the stage and step to continue from; writes the run's config.json."""
    if out.exists() and any(out.iterdir()) and not resume:
        raise TrainingError(
            f"{out}: not empty; pass --resume to continue the run there, or choose a new --out"
        )
    if resume and not (out / "config.json").exists():
        raise TrainingError(f"{out}: nothing to resume (no config.json)")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    if resume:
        cfg = VideoWorldModelConfig.model_validate_json((out / "config.json").read_text())
    else:
        cfg = resolve_config(cfg, episodes, meta)
    init = None
    if cfg.train.init is not None and not resume:
        init = load_pretrained(cfg.train.init, VideoWorldModelConfig)
        cfg = cfg.model_copy(update={"vae_arch": init[1].vae_arch})  # the checkpoint's VAE
    model = VideoWorldModel(cfg)
    if init is not None:
        grown = warm_start(model, init[0], Path(str(cfg.train.init)) / "model.safetensors")
        Log(path=out / "log.jsonl", every=1).write({"warm_start": cfg.train.init, "grown": grown})
    stage, step = "vae", 0
    state_dir = out / "state"
    st = read_state(state_dir) if resume else None
    if st is not None:
        stage, step = st["stage"], st["step"]
        weights, _ = load_pretrained(state_dir / "model", VideoWorldModelConfig)
        check_state(model, weights, state_dir / "model" / "model.safetensors")
        model.load_state_dict(weights)
    model.cfg = model.resolved_config()
    atomic_write_text(out / "config.json", model.cfg.model_dump_json(indent=2))
    return model, stage, step


def _encode_for_dynamics(
    model: VideoWorldModel, store: EpisodeStore, train_eps: list[int], first: bool, warm: bool = False
) -> None:
    """Encode every episode's frames with the trained VAE and freeze it. On the dynamics stage's first
    step the latents were encoded with identity statistics: set the dataset statistics, then
    normalise the latents in place. A warm start's first step (`warm`) widens its checkpoint's
    state ranges to the new data instead (`_widen_statistics`)."""
    store.latents = [model.encode_frames(f) for f in store.frames]
    if warm:
        _widen_statistics(model, store, train_eps)
    elif first:
        _statistics(model, store, train_eps)
        m, sd = model.latent_mean[:, None, None], model.latent_std[:, None, None]
        store.latents = [(z - m) / sd for z in store.latents]
    model.vae.requires_grad_(False)


def train_worldmodel(
    cfg: VideoWorldModelConfig,
    episodes: list[dict[str, np.ndarray]],
    meta: dict[str, Any],
    out: str | Path,
    *,
    max_minutes: float | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path | None:
    """Train (or resume) and return the finished model's directory, or None when the time limit
    stopped the run first (rerun with `--resume` to continue)."""
    t0 = time.monotonic()
    out = Path(out)
    state_dir = out / "state"
    model, stage, step = _start_or_resume(cfg, episodes, meta, out, resume)
    cfg = model.cfg
    if stage == "done":
        return out / "model"
    train_eps, val_eps = split(len(episodes), cfg.train.holdout_episodes)
    store = EpisodeStore(with_physics(episodes, meta, cfg.physics), cfg)
    deadline = None if max_minutes is None else t0 + 60 * max_minutes
    t = cfg.train
    hardware = Hardware(accelerator=t.accelerator, devices=t.devices, strategy=t.strategy)

    for st_name in STAGES[STAGES.index(stage) :]:
        if st_name == "vae" and cfg.train.init:
            total = cfg.train.init_vae_steps
        elif st_name == "vae" and cfg.vae.pretrained:
            total = 0
        else:
            total = cfg.vae.train_steps if st_name == "vae" else t.steps
        start = step if st_name == stage else 0
        if st_name == "dynamics":
            # a warm start keeps its checkpoint's latent statistics (the latents are normalised with them)
            # and widens its state ranges to the new data
            _encode_for_dynamics(
                model,
                store,
                train_eps,
                first=start == 0 and not cfg.train.init,
                warm=start == 0 and bool(cfg.train.init),
            )
        steps = Stage(model, store, st_name, train_eps)
        log = Log(path=out / "log.jsonl", every=LOG_EVERY, fields={"stage": st_name}, t0=t0)
        if st_name == "dynamics" and start == 0:
            log.write({"windows": len(steps.windows), "moving_windows": len(steps.moving)})

        def validate(s: int, _: dict[str, float], total: int = total, log: Log = log) -> None:
            if s % t.val_every == 0 or s == total:
                model.eval()
                log.write({"step": s, "val_loss": validation_loss(model, store, val_eps)})
                model.train()

        restore = resume and st_name == stage and start > 0 and has_optimizer(state_dir)
        finished = fit(
            Run(
                model=model,
                params=steps.params(),
                loss=steps.loss,
                lr=steps.lr(total),
                steps=total,
                start=start,
                weight_decay=steps.weight_decay,
                grad_clip=t.grad_clip,
                restore=state_dir if restore else None,
                log=log,
                state=_state(model, out, st_name),
                deadline=deadline,
                after_step=validate if st_name == "dynamics" else None,
                hardware=hardware,
                progress=progress,
            )
        )
        if not finished:
            return None
        if st_name == "vae":
            log.write({"step": total, "val_psnr_db": vae_psnr(model, store, val_eps)})
            save_state(_state(model, out, "dynamics"), 0, None)
        stage, step = st_name, 0
    model.eval()
    model.save_pretrained(out / "model")
    save_state(_state(model, out, "done"), 0, None)
    return out / "model"
