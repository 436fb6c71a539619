"""The toy world's episodes and a toy model trained on them, shared by the world-model test modules."""

from __future__ import annotations

import pytest

from tests.worldmodels.toy import TOY_META, toy_config, toy_episode, toy_scene


@pytest.fixture(scope="session")
def episodes():
    return [toy_episode(s) for s in range(4)]


@pytest.fixture(scope="session")
def trained(tmp_path_factory, episodes):
    """A toy model trained to overfit 4 episodes (also the model of the rollout tests), with contact-window
    sampling as the shipped recipe."""
    from worldmodels.training import train_worldmodel

    out = tmp_path_factory.mktemp("toy") / "run"
    cfg = toy_config(steps=1000, motion_fraction=0.5)
    path = train_worldmodel(cfg, episodes, {**TOY_META, "scene": toy_scene()}, out, progress=False)
    return out, path
