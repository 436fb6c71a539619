"""Pose-conditioned memory retrieval and Cosmos-style state frames."""

from __future__ import annotations

import pytest
import torch

from worldmodels.memory import retrieve_memory
from worldmodels.state_frames import StateFrameCodec


def test_memory_returns_recent_frames_and_the_nearest_poses():
    # a robot that goes out along x and comes back to x = 1: frames 1 and 9 are where it is now
    xs = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0, 2.0, 1.0, 1.5, 1.0]
    poses = torch.tensor([[x, 0.0, 0.0] for x in xs])
    idx = retrieve_memory(poses, recent=2, retrieved=3)
    # distance 0: frames 1, 9; distance 1: frames 0, 2, 8 -> the most recent of those, 8
    assert idx.tolist() == [1, 8, 9, 10, 11]
    # only the given pose dimensions count (the model passes memory.pose_dims)
    poses2 = torch.tensor([[0.0, 9.0], [5.0, 0.0], [1.0, 9.0], [9.0, 9.0], [0.0, 0.0]])
    assert retrieve_memory(poses2[:, :1], 1, 1).tolist() == [0, 4]
    assert retrieve_memory(poses2[:, 1:], 1, 1).tolist() == [1, 4]


def test_memory_prefers_recent_among_equal_poses_and_short_histories_use_everything():
    poses = torch.zeros(8, 2)
    assert retrieve_memory(poses, recent=2, retrieved=2).tolist() == [4, 5, 6, 7]
    assert retrieve_memory(poses[:3], recent=2, retrieved=2).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match=r"\[T, P\]"):
        retrieve_memory(torch.zeros(4), 1, 1)


def test_state_frames_round_trip_and_average_out_noise():
    torch.manual_seed(0)
    low, high = torch.tensor([-1.0, 0.0, 0.2, 5.0, -0.3]), torch.tensor([1.0, 0.04, 0.8, 5.0, 0.3])
    codec = StateFrameCodec(low, high, channels=4, height=4, width=4)
    x = low + (high - low) * torch.rand(7, 5)
    f = codec.encode(x)
    assert f.shape == (7, 4, 4, 4) and f.abs().max() <= 1.0 + 1e-6
    torch.testing.assert_close(codec.decode(f), x, atol=1e-6, rtol=0)
    # each entry is spread over >= 12 cells: noise of std 0.1 in the frame shrinks >= 3x in the decode
    noisy = codec.decode(f + 0.1 * torch.randn_like(f))
    err = ((noisy - x) / torch.where(high > low, high - low, torch.ones(5)) * 2).std()
    assert err < 0.1 / 3
    assert codec.count.min() >= 12 and codec.count.sum() == 64
    with pytest.raises(ValueError, match="holds at most 4"):
        StateFrameCodec(torch.zeros(5), torch.ones(5), 1, 2, 2)
