"""Behaviour-cloning image policies: a compact CNN from camera images + proprio to an action chunk.

    dreamtwin train policy --config configs/policies/bc_cnn.yaml --data data/push_cube_small \
        --out runs/bc_push
    policy = BCPolicy.from_pretrained("runs/bc_push/step-002000")

The network (robomimic-style): a small conv stack per camera ending in a spatial soft-argmax (one
image keypoint per channel, good at "where is the cube"), the end-effector position and gripper,
and an MLP to `chunk` future actions. Inputs and actions are normalised with the training set's
statistics, stored as buffers so that a checkpoint is self-contained. Training (the one harness,
`common.training`, on Lightning) draws (episode, step) pairs from the successful episodes of a
LeRobot dataset, with random-shift augmentation, and saves a `save_pretrained` checkpoint at every
step in `save_at` — checkpoints of one run at different steps are the "which checkpoint is best"
case of policy evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from common.config import Strict, load_model
from common.errors import UsageError
from common.io import atomic_write_text
from common.training import Hardware, Log, Run, TrainingError, cosine_annealing, fit
from common.types import Observation

PROPRIO_DIMS = 4  # ee x, y, z, gripper width: the first entries of every robot state here


class BCConfig(Strict):
    """A BC CNN policy and how to train it; `cameras`/`image_size`/`action_dim` come from the data."""

    version: int = 1
    type: str = Field("bc_cnn", pattern="^bc_cnn$")
    cameras: list[str] = Field(
        default_factory=list, description="camera names; empty = every camera of the data"
    )
    image_size: tuple[int, int] = (64, 64)
    action_dim: int = 4
    chunk: int = Field(1, ge=1, description="actions predicted (and executed) per decision")
    channels: tuple[int, ...] = (32, 64, 64)
    hidden: int = Field(256, ge=8)
    # training
    steps: int = Field(3000, ge=1)
    save_at: list[int] = Field(default_factory=list, description="also save checkpoints at these steps")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    shift: int = Field(4, ge=0, description="random-shift augmentation (pixels)")
    only_success: bool = Field(True, description="train on successful episodes only")
    init: str | None = Field(
        None,
        description="fine-tune this checkpoint (its weights and normalisation) instead of a fresh network",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> BCConfig:
        bad = [s for s in self.save_at if not 1 <= s <= self.steps]
        if bad:
            raise ValueError(f"save_at steps {bad} are outside 1..steps ({self.steps})")
        return self


def load_bc_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BCConfig:
    return load_model(BCConfig, path, overrides)


class SpatialSoftArgmax(nn.Module):
    """[B, C, H, W] -> [B, 2C]: the expected (x, y) in [-1, 1] of each channel's softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = x.flatten(2).softmax(-1).view(B, C, H, W)
        ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype)
        return torch.cat([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=1)


class BCNet(nn.Module):
    # the training set's statistics (buffers, saved with the weights): proprio [4], actions [A]
    state_mean: torch.Tensor
    state_std: torch.Tensor
    action_mean: torch.Tensor
    action_std: torch.Tensor

    def __init__(self, cfg: BCConfig) -> None:
        super().__init__()
        self.cfg = cfg
        V = max(len(cfg.cameras), 1)
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate(cfg.channels):
            layers += [
                nn.Conv2d(c_in, c, 5 if i == 0 else 3, stride=2 if i < 2 else 1, padding="valid"),
                nn.GroupNorm(8 if c % 8 == 0 else 1, c),
                nn.ReLU(),
            ]
            c_in = c
        self.encoder = nn.Sequential(*layers, SpatialSoftArgmax())
        feat = V * 2 * c_in + PROPRIO_DIMS
        self.head = nn.Sequential(
            nn.Linear(feat, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.hidden),
            nn.ReLU(),
            nn.Linear(cfg.hidden, cfg.chunk * cfg.action_dim),
        )
        self.register_buffer("state_mean", torch.zeros(PROPRIO_DIMS))
        self.register_buffer("state_std", torch.ones(PROPRIO_DIMS))
        self.register_buffer("action_mean", torch.zeros(cfg.action_dim))
        self.register_buffer("action_std", torch.ones(cfg.action_dim))

    def forward(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """images uint8 or float in [0, 255] [B, V, 3, H, W]; state [B, >= 4] -> normalised actions [B, K, A]."""
        B, V = images.shape[:2]
        x = images.flatten(0, 1).float() / 127.5 - 1.0
        f = self.encoder(x).view(B, -1)
        s = (state[:, :PROPRIO_DIMS] - self.state_mean) / self.state_std
        return self.head(torch.cat([f, s], 1)).view(B, self.cfg.chunk, self.cfg.action_dim)

    def act(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self(images, state) * self.action_std + self.action_mean

    def save_pretrained(self, path: str | Path) -> Path:
        from worldmodels.checkpoint import save_pretrained

        return save_pretrained(self, self.cfg, path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BCNet:
        from worldmodels.checkpoint import load_module

        net: BCNet = load_module(cls, BCConfig, path)
        return net


def is_bc_checkpoint(path: str | Path) -> bool:
    from worldmodels.checkpoint import checkpoint_type

    return checkpoint_type(path) == "bc_cnn"


class BCPolicy:
    """A trained BC CNN as a `Policy`: sees only camera images and proprio."""

    privileged = False

    def __init__(self, net: BCNet) -> None:
        self.net = net.eval()
        self.cfg = net.cfg

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BCPolicy:
        return cls(BCNet.from_pretrained(path))

    def reset(self, seed: int | None = None) -> None:
        pass  # deterministic and memoryless

    def _images(self, observation: Observation) -> torch.Tensor:
        out = []
        for cam in self.cfg.cameras:
            img = observation.images.get(cam)
            if img is None:
                raise UsageError(
                    f"BC policy needs camera {cam!r}; observation has {sorted(observation.images)}"
                )
            x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
            if tuple(x.shape[1:]) != tuple(self.cfg.image_size):
                x = torch.nn.functional.interpolate(
                    x[None], size=self.cfg.image_size, mode="bilinear", antialias=True, align_corners=False
                )[0]
            out.append(x)
        return torch.stack(out)[None]

    @torch.no_grad()
    def act(self, observation: Observation) -> np.ndarray:
        state = torch.from_numpy(np.asarray(observation.state, np.float32))[None]
        chunk = self.net.act(self._images(observation), state)[0].numpy()
        chunk[:, 3] = chunk[:, 3].clip(0, 1)
        return chunk.astype(np.float32)


# ---------------------------------------------------------------------- training
class BCTrainingError(TrainingError):
    """Training data that cannot train a BC policy."""


def _samples(episodes: list[dict[str, np.ndarray]], cfg: BCConfig) -> tuple[np.ndarray, ...]:
    """Flatten chosen episodes into (images [N, V, 3, H, W], state [N, D], action chunks [N, K, A])."""
    imgs, states, chunks = [], [], []
    for ep in episodes:
        if cfg.only_success and not ep["success"].any():
            continue
        T = len(ep["actions"])
        last = T - 1 if T > 1 else T  # the final frame carries no executed action
        idx = np.arange(last)
        future = np.minimum(idx[:, None] + np.arange(cfg.chunk)[None], last - 1)
        imgs.append(ep["frames"][idx])
        states.append(ep["state"][idx, :PROPRIO_DIMS])
        chunks.append(ep["actions"][future])
    if not imgs:
        raise BCTrainingError(
            "no training episodes (with only_success: true, the dataset has no successful episode)"
        )
    return (
        np.concatenate(imgs),
        np.concatenate(states).astype(np.float32),
        np.concatenate(chunks).astype(np.float32),
    )


def _random_shift(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Pad by replication and crop back at a random offset, per image (DrQ augmentation). x [N, 3, H, W]."""
    if pad == 0:
        return x
    N, _, H, W = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    off = torch.randint(0, 2 * pad + 1, (N, 2), generator=gen)
    return torch.stack([xp[i, :, off[i, 0] : off[i, 0] + H, off[i, 1] : off[i, 1] + W] for i in range(N)])


def train_policy(
    cfg: BCConfig,
    episodes: list[dict[str, np.ndarray]],
    meta: dict[str, Any],
    out: str | Path,
    progress: bool = True,
) -> list[Path]:
    """Train a BC CNN on dataset episodes (`datagen.windows.load_episodes` form); returns the saved
    checkpoint directories `out/step-XXXXXX` (every `save_at` step and the last)."""
    out = Path(out)
    cfg = cfg.model_copy(
        update={
            "cameras": cfg.cameras or list(meta["cameras"]),
            "image_size": tuple(meta["image_size"]),
            "action_dim": int(episodes[0]["actions"].shape[1]),
        }
    )
    imgs, states, chunks = _samples(episodes, cfg)
    torch.manual_seed(cfg.seed)
    net = BCNet(cfg)
    if cfg.init is not None:  # fine-tuning: the base's weights and normalisation, the same architecture
        base = BCNet.from_pretrained(cfg.init)
        fields = ("cameras", "image_size", "action_dim", "chunk", "channels", "hidden")
        differ = [f for f in fields if getattr(base.cfg, f) != getattr(cfg, f)]
        if differ:
            raise BCTrainingError(
                f"init {cfg.init}: "
                + ", ".join(f"{f} {getattr(base.cfg, f)} != {getattr(cfg, f)}" for f in differ)
            )
        net.load_state_dict(base.state_dict())
    else:
        net.state_mean.copy_(torch.from_numpy(states.mean(0)))
        net.state_std.copy_(torch.from_numpy(states.std(0) + 1e-3))
        flat = chunks.reshape(-1, cfg.action_dim)
        net.action_mean.copy_(torch.from_numpy(flat.mean(0)))
        net.action_std.copy_(torch.from_numpy(flat.std(0) + 1e-4))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(cfg.model_dump(mode="json"), indent=2))
    imgs_t, states_t, chunks_t = torch.from_numpy(imgs), torch.from_numpy(states), torch.from_numpy(chunks)
    save_at = sorted(set(cfg.save_at) | {cfg.steps})
    saved: list[Path] = []
    (out / "log.jsonl").unlink(missing_ok=True)

    def loss(step: int, device: torch.device) -> dict[str, torch.Tensor]:
        """MSE of the normalised action chunks of step `step`'s batch (drawn from its own generator)."""
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        i = torch.randint(0, len(imgs_t), (cfg.batch_size,), generator=g)
        V = imgs_t.shape[1]
        x = _random_shift(imgs_t[i].flatten(0, 1).float(), cfg.shift, g).view(
            cfg.batch_size, V, *imgs_t.shape[2:]
        )
        s, a = states_t[i].to(device), chunks_t[i].to(device)
        target = (a - net.action_mean) / net.action_std
        return {"loss": torch.nn.functional.mse_loss(net(x.to(device), s), target)}

    def save(step: int, _: dict[str, float]) -> None:
        if step in save_at:
            saved.append(net.save_pretrained(out / f"step-{step:06d}"))

    fit(
        Run(
            model=net,
            params=list(net.parameters()),
            loss=loss,
            lr=cosine_annealing(cfg.lr, cfg.steps, eta_min=cfg.lr * 0.05),
            steps=cfg.steps,
            weight_decay=cfg.weight_decay,
            log=Log(path=out / "log.jsonl", every=100),
            after_step=save,
            hardware=Hardware(accelerator="auto", devices=1),
            progress=progress,
        )
    )
    net.eval()
    return saved
