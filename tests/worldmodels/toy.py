"""A toy world for fast world-model tests: a red square on a grey floor, moved by its actions.

Frames are 16x16; the square (4x4 px) moves by action * 2 px per step (clipped to the image);
state = [x, y, gripper] in pixels, env_state = square pose (x, y, 0, 1, 0, 0, 0) in metres-like
units. Success: the square's centre in the right-hand third of the image (a scene predicate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldmodels.video_config import VideoWorldModelConfig

SIZE = 16


def render(x: float, y: float) -> np.ndarray:
    img = np.full((3, SIZE, SIZE), 128, np.uint8)
    i, j = int(round(y)), int(round(x))
    img[:, max(0, i - 2) : i + 2, max(0, j - 2) : j + 2] = np.array([220, 30, 30], np.uint8)[:, None, None]
    return img


def toy_positions(actions: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Square positions (px) [T, 2] under `actions` [T, A], from `start` (the toy world's dynamics)."""
    pos, out = np.asarray(start, np.float64), []
    for a in actions:
        out.append(pos.copy())
        pos = np.clip(pos + 2 * a[:2], 2, 14)
    return np.array(out)


def toy_episode(seed: int, T: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pos = rng.uniform(4, 12, 2)
    acts = rng.uniform(-1, 1, (T, 4)).astype(np.float32)
    acts[:, 2:] = 0
    positions = toy_positions(acts, pos)
    frames = [render(*p)[None] for p in positions]
    state = [[p[0], p[1], 0.0] for p in positions]
    env_a = np.array([[p[0] / 100, p[1] / 100, 0.0, 1.0, 0.0, 0.0, 0.0] for p in positions], np.float32)
    return {
        "frames": np.stack(frames),
        "actions": acts,
        "state": np.array(state, np.float32),
        "env_state": env_a,
        "success": env_a[:, 0] > 0.11,
    }


def toy_scene() -> dict[str, Any]:
    """A SceneSpec dict whose predicate is 'the square is in the right third' (x > 0.11)."""
    from scenes.spec import load_scene_spec

    spec = load_scene_spec("configs/scenes/push_cube.yaml")
    d = spec.model_dump(mode="json")
    d["objects"] = d["objects"][:1]
    d["task"]["success"] = {
        "name": "object_in_region",
        "params": {"object": d["objects"][0]["name"], "center": [0.15, 0.08], "size": [0.08, 0.2]},
    }
    d["task"]["max_steps"] = 30
    return d


TOY_META = {"cameras": ["top"], "fps": 10.0, "image_size": [SIZE, SIZE], "scene": None}


def toy_config(**train: Any) -> VideoWorldModelConfig:
    t = {
        "steps": 300,
        "batch_size": 8,
        "lr": 2e-3,
        "warmup": 20,
        "holdout_episodes": 0,
        "val_every": 1000,
        "checkpoint_every": 1000,
        "cond_drop": 0.0,
    }
    t.update(train)
    return VideoWorldModelConfig.model_validate(
        {
            "future": 2,
            "memory": {"recent": 1, "retrieved": 1, "pose_dims": [0, 1]},
            "vae": {
                "block_out_channels": [8, 16],
                "norm_num_groups": 4,
                "latent_channels": 4,
                "train_steps": 150,
                "batch_size": 16,
                "lr": 3e-3,
            },
            "backbone": {
                "type": "video_dit",
                "dim": 64,
                "depth": 2,
                "heads": 4,
                "patch": 2,
                "state_patch": 2,
            },
            "state_frame": {"channels": 2, "height": 4, "width": 4},
            "sampler": {"steps": 4, "samples": 2},
            "train": t,
        }
    )


def randomise(model: Any, seed: int = 0, scale: float = 0.05) -> None:
    """Give zero-initialised layers non-zero weights, so tests see a non-trivial function."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
