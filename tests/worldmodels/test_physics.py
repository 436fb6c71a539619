"""Physics-conditioned world models: the physics a user knows (scale factors of mass and friction) as
condition inputs, warm-started from a checkpoint without them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worldmodels.toy import TOY_META, toy_scene
from worldmodels.video_model import VideoWorldModel
from worldmodels.video_world import Context, ContextError, VideoWorld

NAMES = ["box.mass_scale", "light0.intensity_scale", "box.friction_scale"]
PHYSICS = ["box.mass_scale", "box.friction_scale"]


def _with_randomization(episodes):
    """The toy episodes with per-frame randomisation columns (mass scale differs per episode)."""
    out = []
    for k, e in enumerate(episodes):
        row = np.array([0.7 + 0.2 * k, 1.1, 1.25 - 0.1 * k], np.float32)
        out.append({**e, "randomization": np.tile(row, (len(e["actions"]), 1))})
    return out


def _physics_config(init, steps):
    from tests.worldmodels.toy import toy_config

    cfg = toy_config(steps=steps, init=str(init))
    return cfg.model_copy(update={"physics": PHYSICS})


@pytest.fixture(scope="module")
def warm(trained, episodes, tmp_path_factory):
    """The toy checkpoint warm-started with physics inputs: after 0 steps and after 60 steps."""
    from worldmodels.training import train_worldmodel

    _, base = trained
    eps, meta = (
        _with_randomization(episodes),
        {**TOY_META, "scene": toy_scene(), "randomization_names": NAMES},
    )
    root = tmp_path_factory.mktemp("physics")
    zero = train_worldmodel(_physics_config(base, 0), eps, meta, root / "zero", progress=False)
    tuned = train_worldmodel(_physics_config(base, 60), eps, meta, root / "tuned", progress=False)
    return base, zero, tuned, eps


def _rollout(path, episode, physics, seed=3):
    model = VideoWorldModel.from_pretrained(path)
    world = VideoWorld(model, model.cfg.sampler.updated(samples=1, steps=4))
    world.stop_on_success = False
    ctx = Context.from_episode(episode, world.cameras, 1)
    ctx.physics = physics
    world.reset(seed, {"context": ctx})
    r = world.step(episode["actions"][2:8])
    return np.stack([o.images["top"] for o in r.observations]), np.stack([o.state for o in r.observations])


def test_a_warm_start_begins_from_exactly_the_checkpoints_predictions(warm):
    base, zero, _, eps = warm
    a = VideoWorldModel.from_pretrained(base).state_dict()
    b = VideoWorldModel.from_pretrained(zero).state_dict()
    grown = [k for k in b if a[k].shape != b[k].shape]
    assert grown == ["denoiser.cond.0.weight"]
    assert torch.equal(b["denoiser.cond.0.weight"][:, : a[grown[0]].shape[1]], a[grown[0]])
    assert not b["denoiser.cond.0.weight"][:, a[grown[0]].shape[1] :].any()
    assert all(torch.equal(a[k], b[k]) for k in a if k not in grown)  # VAE, statistics, denoiser kept
    f0, s0 = _rollout(base, eps[0], {})
    for physics in (
        {"box.mass_scale": 1.0, "box.friction_scale": 1.0},
        {"box.mass_scale": 3.0, "box.friction_scale": 0.5},
    ):
        f1, s1 = _rollout(zero, eps[0], physics)
        assert np.array_equal(f0, f1) and np.allclose(s0, s1, atol=1e-6)


def test_training_moves_the_physics_inputs_and_they_change_the_rollout(warm):
    _, _, tuned, eps = warm
    w = VideoWorldModel.from_pretrained(tuned).state_dict()["denoiser.cond.0.weight"]
    assert w[:, -len(PHYSICS) :].abs().max() > 1e-3
    light = _rollout(tuned, eps[0], {"box.mass_scale": 0.7, "box.friction_scale": 1.25})
    heavy = _rollout(tuned, eps[0], {"box.mass_scale": 1.5, "box.friction_scale": 0.8})
    assert np.abs(light[1] - heavy[1]).max() > 1e-4


def test_a_physics_model_needs_the_physics_in_its_context(warm):
    _, zero, _, eps = warm
    with pytest.raises(ContextError, match=r"lacks \['box.friction_scale'\]"):
        _rollout(zero, eps[0], {"box.mass_scale": 1.0})
    with pytest.raises(ContextError, match="positive"):
        _rollout(zero, eps[0], {"box.mass_scale": 0.0, "box.friction_scale": 1.0})
    ctx = Context.from_episode(eps[1], ["top"], 0, NAMES)  # read from the dataset's columns
    assert ctx.physics == pytest.approx(
        {"box.mass_scale": 0.9, "light0.intensity_scale": 1.1, "box.friction_scale": 1.15}
    )


def test_physics_names_are_checked_against_the_dataset(episodes, tmp_path, trained):
    from common.training import TrainingError
    from worldmodels.training import train_worldmodel

    cfg = _physics_config(trained[1], 0).model_copy(update={"physics": ["table.friction_scale"]})
    with pytest.raises(TrainingError, match="not among the dataset's randomisation parameters"):
        train_worldmodel(
            cfg,
            _with_randomization(episodes),
            {**TOY_META, "scene": toy_scene(), "randomization_names": NAMES},
            tmp_path / "x",
            progress=False,
        )
    with pytest.raises(ValueError, match="scale factors"):
        cfg.model_validate({**cfg.model_dump(), "physics": ["light0.intensity_scale"]})


def test_physics_scales_invert_the_randomisation():
    from scenes.randomization import RandomizationSpec, physics_scales, sample_variation
    from scenes.spec import load_scene_spec as load_scene

    spec = load_scene("configs/scenes/push_cube.yaml")
    assert set(physics_scales(spec, spec).values()) == {1.0}
    v = sample_variation(spec, RandomizationSpec(friction_scale=(0.8, 1.25), mass_scale=(0.7, 1.5)), 5)
    got = physics_scales(v.spec, spec)
    for k, val in got.items():
        assert val == pytest.approx(v.params[k], rel=1e-9), k
