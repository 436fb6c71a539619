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

import numpy as np
import torch

from datagen.lerobot import DatasetError, LeRobotDataset


class WindowDataset(torch.utils.data.Dataset):
    def __init__(self, root: str | Path, context: int = 4, future: int = 4, *, cameras: list[str] | None = None,
                 stride: int = 1, episodes: list[int] | None = None, cache_episodes: int = 16) -> None:
        if context < 1 or future < 0 or stride < 1:
            raise DatasetError(f"windows need context >= 1, future >= 0, stride >= 1; got {context}, {future}, {stride}")
        self.ds = LeRobotDataset(root)
        self.context, self.future = context, future
        keys = self.ds.camera_keys
        if cameras is not None:
            wanted = [c if c.startswith("observation.images.") else f"observation.images.{c}" for c in cameras]
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
        cols = self.ds.episode(k)
        frames = np.stack([self.ds.frames(k, key) for key in self.camera_keys], axis=1)  # [T, V, H, W, 3]
        done = cols["next.success"].astype(bool)
        item = {
            "frames": np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3)),
            "actions": cols["action"].astype(np.float32),
            "state": cols["observation.state"].astype(np.float32),
            "env_state": cols["observation.environment_state"].astype(np.float32),
            "success": np.concatenate([[False], done[:-1]]),
        }
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
