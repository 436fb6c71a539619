"""Fixed-length training windows over a LeRobot dataset, as a torch Dataset.

    ds = WindowDataset("data/push", context=4, future=4)
    item = ds[0]
    item["frames"]        # uint8 [k + f, V, 3, H, W]  (V cameras, in the dataset's order)
    item["actions"]       # float32 [k + f - 1, A]: the action taken from frame j leads to frame j + 1
    item["state"]         # float32 [k + f, D]       proprio
    item["env_state"]     # float32 [k + f, E]       privileged object poses
    item["success"]       # bool [k + f]             whether frame j shows the task solved

Frames are decoded once per episode (seeking to the episode inside the joined video file) and
kept in a small LRU cache, so random access never decodes whole video files per item.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datagen.lerobot import DatasetError, LeRobotDataset


def episode_arrays(
    ds: LeRobotDataset, k: int, camera_keys: list[str], frames: bool = True
) -> dict[str, np.ndarray]:
    """Episode k as arrays: frames uint8 [T, V, 3, H, W] (not decoded with `frames=False`), actions [T, A],
    state [T, D], env_state [T, E], success bool [T] (frame j shows the task solved), and randomization
    [T, R] where the dataset has it."""
    cols = ds.episode(k)
    done = cols["next.success"].astype(bool)
    out = {
        "actions": cols["action"].astype(np.float32),
        "state": cols["observation.state"].astype(np.float32),
        "env_state": cols["observation.environment_state"].astype(np.float32),
        "success": np.concatenate([[False], done[:-1]]),
    }
    if frames:
        video = np.stack([ds.frames(k, key) for key in camera_keys], axis=1)  # [T, V, H, W, 3]
        out["frames"] = np.ascontiguousarray(video.transpose(0, 1, 4, 2, 3))
    if "randomization" in cols:  # the episode's domain-randomisation parameters, [T, R] (constant over T)
        out["randomization"] = cols["randomization"].astype(np.float32)
    return out


def load_episodes(
    root: str | Path,
    cameras: list[str] | None = None,
    episodes: list[int] | None = None,
    progress: bool = False,
    frames: bool = True,
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Every (or the chosen) episode of a dataset decoded into memory (without its video with
    `frames=False`), and what a model needs to know about the dataset: cameras (short names), fps,
    image size, the scene it was made in."""
    import json

    ds = LeRobotDataset(root)
    keys = ds.camera_keys
    if cameras:
        keys = [c if c.startswith("observation.images.") else f"observation.images.{c}" for c in cameras]
        missing = [c for c in keys if c not in ds.camera_keys]
        if missing:
            raise DatasetError(f"{root}: no cameras {missing}; it has {ds.camera_keys}")
    chosen = list(range(ds.num_episodes)) if episodes is None else episodes
    it: Any = chosen
    if progress:
        from rich.progress import track

        it = track(chosen, description="decoding episodes")
    eps = [episode_arrays(ds, k, keys, frames) for k in it]
    ours = Path(root) / "meta" / "dreamtwin.json"
    scene = json.loads(ours.read_text()).get("scene") if ours.exists() else None
    h, w = eps[0]["frames"].shape[-2:] if eps and frames else (0, 0)
    meta = {
        "cameras": [k.removeprefix("observation.images.") for k in keys],
        "fps": ds.fps,
        "image_size": [int(h), int(w)],
        "scene": scene,
        "randomization_names": list(ds.info["features"].get("randomization", {}).get("names") or []),
    }
    return eps, meta


class WindowDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        root: str | Path,
        context: int = 4,
        future: int = 4,
        *,
        cameras: list[str] | None = None,
        stride: int = 1,
        episodes: list[int] | None = None,
        cache_episodes: int = 16,
    ) -> None:
        if context < 1 or future < 0 or stride < 1:
            raise DatasetError(
                f"windows need context >= 1, future >= 0, stride >= 1; got {context}, {future}, {stride}"
            )
        self.ds = LeRobotDataset(root)
        self.context, self.future = context, future
        keys = self.ds.camera_keys
        if cameras is not None:
            wanted = [
                c if c.startswith("observation.images.") else f"observation.images.{c}" for c in cameras
            ]
            missing = [c for c in wanted if c not in keys]
            if missing:
                raise DatasetError(f"{root}: no cameras {missing}; it has {keys}")
            keys = wanted
        self.camera_keys = keys
        eps = range(self.ds.num_episodes) if episodes is None else episodes
        span = context + future
        self.index = [(k, t) for k in eps for t in range(0, self.ds.episodes[k]["length"] - span + 1, stride)]
        self.cache_episodes = cache_episodes
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def _episode(self, k: int) -> dict[str, np.ndarray]:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        item = episode_arrays(self.ds, k, self.camera_keys)
        self._cache[k] = item
        if len(self._cache) > self.cache_episodes:
            self._cache.popitem(last=False)
        return item

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        k, t = self.index[i]
        e = self._episode(k)
        s = slice(t, t + self.context + self.future)
        return {
            "frames": torch.from_numpy(e["frames"][s]),
            "actions": torch.from_numpy(e["actions"][t : t + self.context + self.future - 1]),
            "state": torch.from_numpy(e["state"][s]),
            "env_state": torch.from_numpy(e["env_state"][s]),
            "success": torch.from_numpy(e["success"][s]),
            "episode_index": k,
            "frame_index": t,
        }
