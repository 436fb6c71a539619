"""Shared fixtures. Genesis compiles kernels on first build, so each scene is built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

ROOT = Path(__file__).resolve().parents[1]
PUSH = ROOT / "configs/scenes/push_cube.yaml"
LIFT = ROOT / "configs/scenes/lift_cube.yaml"


@pytest.fixture(scope="session")
def push_spec():
    from scenes.spec import load_scene_spec

    return load_scene_spec(PUSH)


@pytest.fixture(scope="session")
def lift_spec():
    from scenes.spec import load_scene_spec

    return load_scene_spec(LIFT)


@pytest.fixture(scope="session")
def push_twin(push_spec):
    from scenes.twin import DigitalTwin

    return DigitalTwin(push_spec, render=True)


@pytest.fixture(scope="session")
def lift_twin(lift_spec):
    from scenes.twin import DigitalTwin

    return DigitalTwin(lift_spec, render=True)
