"""Every shipped dataset and evaluation config loads strictly, with its scene and overrides."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

DATASETS = sorted((ROOT / "configs/datasets").glob("*.yaml"))
EVALS = sorted((ROOT / "configs/eval").glob("*.yaml"))


@pytest.mark.parametrize("path", DATASETS, ids=lambda p: p.stem)
def test_dataset_configs_load(path):
    from datagen.rollouts import ResolvedJob, load_job

    job = ResolvedJob.load(load_job(path))
    assert job.spec.cameras and all(c.resolution == (64, 64) for c in job.spec.cameras)


@pytest.mark.parametrize("path", EVALS, ids=lambda p: p.stem)
def test_eval_configs_load(path):
    from policy_eval.evaluate import load_eval_config
    from scenes.spec import load_scene_spec

    cfg = load_eval_config(path)
    spec = load_scene_spec(cfg.scene, dict(cfg.scene_overrides) or None)
    assert spec.cameras[0].attach is None  # the image policies read a fixed camera


def test_the_two_view_configs_add_the_same_wrist_camera():
    from datagen.rollouts import ResolvedJob, load_job
    from policy_eval.evaluate import load_eval_config
    from scenes.spec import load_scene_spec

    data = ResolvedJob.load(load_job(ROOT / "configs/datasets/push_cube_two_views.yaml")).spec
    cfg = load_eval_config(ROOT / "configs/eval/two_views.yaml")
    ev = load_scene_spec(cfg.scene, dict(cfg.scene_overrides))
    assert [c.name for c in data.cameras] == ["side", "wrist"] and data.cameras == ev.cameras
