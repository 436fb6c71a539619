"""Shared fixtures. Genesis compiles kernels on first build, so each scene is built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

ROOT = Path(__file__).resolve().parents[1]
PUSH = ROOT / "configs/scenes/push_cube.yaml"
LIFT = ROOT / "configs/scenes/lift_cube.yaml"
RANDOMIZE = ROOT / "configs/randomization/push_cube.yaml"


@pytest.fixture(scope="session")
def push_spec():
    from scenes.spec import load_scene_spec

    return load_scene_spec(PUSH)


@pytest.fixture(scope="session")
def lift_spec():
    from scenes.spec import load_scene_spec

    return load_scene_spec(LIFT)


@pytest.fixture(scope="session")
def genesis_kernel_cache():
    """Compile Genesis's kernels in a child process once per machine.

    Genesis writes its kernel cache when the compiling process exits, so a test session that
    compiled in-process would make every subprocess it starts (CLI jobs, workers) compile again.
    """
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    marker = cache / "dreamtwin" / f"genesis-kernels-{version('genesis-world')}"
    if not marker.exists():
        code = (
            "from scenes.spec import load_scene_spec; from scenes.twin import DigitalTwin; "
            f"t = DigitalTwin(load_scene_spec({str(PUSH)!r})); t.reset(0); t.step([[0, 0, 0, 0]])"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=1200)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


@pytest.fixture(scope="session")
def push_twin(push_spec, genesis_kernel_cache):
    from scenes.twin import DigitalTwin

    return DigitalTwin(push_spec, render=True)


@pytest.fixture(scope="session")
def lift_twin(lift_spec, genesis_kernel_cache):
    from scenes.twin import DigitalTwin

    return DigitalTwin(lift_spec, render=True)


def job_dict(out, **kw):
    """The session dataset's rollout job as a dict (keywords override its fields)."""
    d = {
        "scene": str(PUSH),
        "policies": {"expert": 1.0, "image_mild": 1.0},
        "episodes": 12,
        "seed": 0,
        "out": str(out),
        "randomize": str(RANDOMIZE),
    }
    d.update(kw)
    return d


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory, push_twin, push_spec):
    """12 randomised episodes of two policies (default AV1 codec), written and assembled in-process."""
    from datagen.rollouts import RolloutJob, generate

    out = tmp_path_factory.mktemp("datasets") / "push_small"
    try:
        summary = generate(RolloutJob.model_validate(job_dict(out)), progress=False, twin=push_twin)
    finally:
        push_twin.set_variant(push_spec)  # leave the shared twin nominal for other tests
    return out, summary
