"""A tiny video world model recipe for the benchmark and experiment smoke tests: it trains in seconds on
the session's small push_cube dataset (128x128, one camera) and judges a few episodes in seconds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TINY_RECIPE: dict[str, Any] = {
    "version": 1,
    "future": 2,
    "vae": {
        "block_out_channels": [8, 8, 8, 8],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "train_steps": 2,
        "batch_size": 2,
    },
    "backbone": {"type": "video_dit", "dim": 32, "depth": 1, "heads": 2, "patch": 4, "state_patch": 2},
    "memory": {"recent": 1, "retrieved": 1},
    "state_frame": {"channels": 2, "height": 4, "width": 4},
    "sampler": {"steps": 1, "samples": 2},
    "train": {
        "steps": 2,
        "batch_size": 2,
        "warmup": 1,
        "holdout_episodes": 3,
        "val_every": 1000,
        "checkpoint_every": 1000,
    },
}


def write_tiny_recipe(path: str | Path) -> Path:
    """TINY_RECIPE as a YAML config file (for scripts that take `--config`)."""
    path = Path(path)
    path.write_text(yaml.safe_dump(TINY_RECIPE))
    return path


def train_tiny_model(data: str | Path, out: str | Path) -> Path:
    """Train TINY_RECIPE on the dataset at `data` into `out`; returns the model directory."""
    from datagen.windows import load_episodes
    from worldmodels.training import train_worldmodel
    from worldmodels.video_config import load_video_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_video_config(write_tiny_recipe(out / "recipe.yaml"))
    episodes, meta = load_episodes(data, cfg.cameras or None, progress=False)
    model = train_worldmodel(cfg, episodes, meta, out / "run", progress=False)
    assert model is not None
    return model
