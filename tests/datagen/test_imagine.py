"""`dreamtwin datagen imagine`: episodes imagined by a video world model from the twin's initial states,
written as a synthetic LeRobot dataset (resumable), that a BC policy can be fine-tuned on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.benchmarks.conftest import tiny_world_model  # noqa: F401  (a session fixture)
from tests.conftest import PUSH

pytestmark = [pytest.mark.sim, pytest.mark.slow]


def test_imagined_episodes_become_a_synthetic_dataset(push_twin, tiny_world_model, tmp_path):  # noqa: F811
    from datagen.lerobot import verify_dataset
    from datagen.rollouts import RolloutJob, generate
    from datagen.windows import load_episodes

    _, model, _ = tiny_world_model
    job = RolloutJob(
        scene=str(PUSH),
        world=f"worldmodel:{model}",
        policies={"image_expert": 1.0},
        episodes=2,
        seed=9300,
        out=str(tmp_path / "imagined"),
        samples=1,
        sampler_steps=2,
    )
    summary = generate(job, progress=False, twin=push_twin)
    assert summary["episodes"] == 2
    assert generate(job, progress=False, twin=push_twin)["resumed"] == "already complete"
    verify_dataset(tmp_path / "imagined")
    doc = json.loads((tmp_path / "imagined" / "meta" / "dreamtwin.json").read_text())
    assert doc["synthetic"] and doc["world"] == f"worldmodel:{model}"
    arrays, meta = load_episodes(tmp_path / "imagined")
    assert all(np.isfinite(a["env_state"]).all() for a in arrays)  # the imagined state read-out
    # the first frame is the twin's; every later one is imagined
    first = push_twin.reset(9300).images[meta["cameras"][0]]
    frames = arrays[0]["frames"][:, 0].transpose(0, 2, 3, 1)
    assert np.abs(frames[0].astype(int) - first.astype(int)).mean() < 3  # (video coding)
    assert len(frames) > 2 and np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > 0.5
