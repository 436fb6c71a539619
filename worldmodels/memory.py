"""Pose-conditioned memory (Ctrl-World style): which past frames condition the next prediction.

The context is the `recent` latest frames plus `retrieved` older frames whose end-effector pose is
nearest to the current one — views of the scene from where the robot is now, which the model
would otherwise have to remember through a long history. Each chosen frame is later tagged with
its pose token by the model.

    idx = retrieve_memory(poses, recent=2, retrieved=4)   # indices into the history, in time order
"""

from __future__ import annotations

import torch


def retrieve_memory(poses: torch.Tensor, recent: int, retrieved: int) -> torch.Tensor:
    """Indices (long, time-ordered) of the frames to condition on.

    poses: [T, P] pose of every past frame (oldest first); the last frame's pose is the query, and
    older frames are ranked by squared distance to it. With fewer than `recent + retrieved` frames
    every frame is used. Ties go to the more recent frame.
    """
    if poses.ndim != 2:
        raise ValueError(f"poses must be [T, P], got {list(poses.shape)}")
    T = poses.shape[0]
    if recent < 1 or retrieved < 0:
        raise ValueError(f"recent must be >= 1 and retrieved >= 0, got {recent}, {retrieved}")
    if T <= recent + retrieved:
        return torch.arange(T)
    older = poses[: T - recent]
    d = ((older - poses[-1]) ** 2).sum(-1)
    # prefer recent frames among equals: sort by (distance, -time)
    order = sorted(range(len(older)), key=lambda i: (float(d[i]), -i))[:retrieved]
    chosen = sorted(order) + list(range(T - recent, T))
    return torch.tensor(chosen, dtype=torch.long)
