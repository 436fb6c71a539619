"""`dreamtwin datagen synth`: windows sampled by a trajectory diffusion model, rendered in the twin posed at
their states, written as a synthetic LeRobot dataset (resumable, the same content however it is cut)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import PUSH

pytestmark = [pytest.mark.sim]

H = 5


@pytest.fixture
def tiny_trajectory_model(push_twin, tmp_path):
    """An untrained model whose samples are the twin's initial state of seed 0 plus millimetres of noise."""
    from worldmodels.trajectory import TrajectoryConfig, TrajectoryDiffusion

    cfg = TrajectoryConfig(
        horizon=H, dim=16, depth=1, heads=2, sampler_steps=4, state_dim=11, env_dim=7, action_dim=4
    )
    model = TrajectoryDiffusion(cfg)
    obs = push_twin.reset(0)
    with torch.no_grad():
        model.mean.zero_()
        model.mean[0, :18] = torch.from_numpy(np.concatenate([obs.state, obs.environment_state]))
        model.std.fill_(1e-3)
    return model.save_pretrained(tmp_path / "traj")


def job(model, out, episodes, guidance=0.0, policy="expert"):
    from datagen.rollouts import RolloutJob

    return RolloutJob(
        scene=str(PUSH),
        policies={policy: 1.0},
        episodes=episodes,
        seed=50,
        out=str(out),
        synth={"model": str(model), "guidance": guidance, "batch": 2},
    )


def test_sampled_windows_become_a_synthetic_dataset_that_resumes(push_twin, tiny_trajectory_model, tmp_path):
    from datagen.lerobot import verify_dataset
    from datagen.rollouts import generate
    from datagen.windows import load_episodes

    out = tmp_path / "synth"
    assert generate(job(tiny_trajectory_model, out, 2), progress=False, twin=push_twin)["episodes"] == 2
    # a longer job of the same content picks up where it stopped: 3 episodes, the first two kept
    generate(job(tiny_trajectory_model, out, 3), progress=False, twin=push_twin)
    verify_dataset(out)
    doc = json.loads((out / "meta" / "dreamtwin.json").read_text())
    assert doc["synthetic"] and doc["world"] == "twin"
    assert doc["generator"]["model"] == str(tiny_trajectory_model) and doc["generator"]["guidance"] == 0.0
    fresh = tmp_path / "fresh"
    generate(job(tiny_trajectory_model, fresh, 3), progress=False, twin=push_twin)
    a, meta = load_episodes(out)
    b, _ = load_episodes(fresh)
    assert len(a) == 3 and all(len(e["actions"]) == H for e in a)  # H - 1 steps and the final frame
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["state"], y["state"])
        np.testing.assert_array_equal(x["actions"], y["actions"])
    # the frames are the twin's renders of the sampled states: the initial scene of seed 0
    first = push_twin.reset(0).images[meta["cameras"][0]]
    frame = a[0]["frames"][0, 0].transpose(1, 2, 0)
    assert np.abs(frame.astype(int) - first.astype(int)).mean() < 3


def test_guidance_needs_a_policy_with_a_log_likelihood(push_twin, tiny_trajectory_model, tmp_path):
    from common.errors import DreamTwinError
    from datagen.rollouts import RolloutJob, generate

    with pytest.raises(DreamTwinError, match="log_prob"):
        generate(job(tiny_trajectory_model, tmp_path / "g", 1, guidance=0.5), progress=False, twin=push_twin)
    with pytest.raises(Exception, match="exactly one policy"):
        RolloutJob.model_validate(
            {
                **job(tiny_trajectory_model, tmp_path / "x", 1).model_dump(),
                "policies": {"expert": 1, "random": 1},
            }
        )
    with pytest.raises(Exception, match="not a trajectory diffusion checkpoint"):
        job(tmp_path, tmp_path / "y", 1)
