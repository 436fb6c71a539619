"""A small rollout dataset generated once per session with the session's push twin."""

from __future__ import annotations

import pytest

from tests.conftest import PUSH, ROOT

RANDOMIZE = ROOT / "configs/randomization/push_cube.yaml"


def job_dict(out, **kw):
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
