"""The world-model config format: version-1 configs upgrade on load (options removed in version 2
dropped where off, refused in one line where on), the recipe is the shipped checkpoint's, sampler
changes are validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.errors import SpecError, UsageError
from worldmodels.checkpoint import CheckpointError, load_config
from worldmodels.video_config import (
    REMOVED_IN_VERSION_2,
    VIDEO_CONFIG_VERSION,
    SamplerConfig,
    VideoWorldModelConfig,
    load_video_config,
)

SHIPPED = Path("assets/worldmodels/push_cube_tiny")
RECIPE = Path("configs/worldmodels/video_tiny.yaml")
RECIPE_KEYS = {"future", "value_discount", "vae", "backbone", "memory", "state_frame", "sampler", "train"}


def test_the_shipped_version_1_checkpoint_loads_as_version_2():
    raw = json.loads((SHIPPED / "config.json").read_text())
    # the shipped file is version 1 with every removed option off (its sha256 keys evaluations: never rewritten)
    assert raw["version"] == 1 and {o.key for o in REMOVED_IN_VERSION_2} <= set(raw)
    cfg = load_config(SHIPPED, VideoWorldModelConfig)
    assert cfg.version == VIDEO_CONFIG_VERSION == 2
    dumped = cfg.model_dump()
    assert not {o.key for o in REMOVED_IN_VERSION_2} & set(dumped)
    # every other field is read as it was written (fields added since then take their defaults)
    kept = {k: v for k, v in raw.items() if k not in {"version"} | {o.key for o in REMOVED_IN_VERSION_2}}
    read = json.loads(cfg.model_dump_json(include=set(kept)))

    def written(a, b):
        """Every key of `a` is in `b` with the same value (nested dicts compared the same way)."""
        if isinstance(a, dict) and isinstance(b, dict) and "_class_name" not in a:
            return all(k in b and written(v, b[k]) for k, v in a.items())
        return a == b

    assert written(kept, read) and read.keys() == kept.keys()
    assert cfg.physics == [] and cfg.train.init is None
    # and the recipe trains exactly the shipped model's configuration
    assert load_video_config(RECIPE).model_dump(include=RECIPE_KEYS) == cfg.model_dump(include=RECIPE_KEYS)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("residual_latents", True, "ghost arms"),
        ("action_integration", {"dims": [0, 1, 2], "max_norm": 0.03}, "by command, not contact"),
    ],
)
def test_an_old_config_with_a_removed_option_on_is_refused_in_one_line(tmp_path, key, value, why):
    raw = json.loads((SHIPPED / "config.json").read_text())
    ckpt = tmp_path / "old"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({**raw, key: value}))
    with pytest.raises(CheckpointError) as e:
        load_config(ckpt, VideoWorldModelConfig)
    msg = str(e.value)
    assert isinstance(e.value, SpecError) and "\n" not in msg
    assert msg.startswith(
        f"{ckpt / 'config.json'}: {key}: removed in world-model config version 2, and on here:"
    )
    assert why in msg
    # the same in a YAML recipe of version 1; with the option off it loads
    y = tmp_path / "old.yaml"
    y.write_text(f"version: 1\n{key}: {json.dumps(value)}\n")
    with pytest.raises(SpecError, match=rf"^{y}: {key}: removed in world-model config version 2"):
        load_video_config(y)
    y.write_text("version: 1\nresidual_latents: false\naction_integration: {dims: []}\nfuture: 3\n")
    assert load_video_config(y).future == 3
    # a version-2 config never had these keys
    y.write_text("version: 2\nresidual_latents: false\n")
    with pytest.raises(SpecError, match="residual_latents: unknown key"):
        load_video_config(y)


def test_sampler_updates_are_validated():
    s = SamplerConfig(steps=8, samples=2, temperature=0.0)
    t = s.updated(samples=4, steps=None, frames="mean")
    assert (t.samples, t.steps, t.frames, t.temperature) == (4, 8, "mean", 0.0)
    assert s.samples == 2  # a copy
    with pytest.raises(UsageError, match=r"^sampler: samples: Input should be greater than or equal to 1"):
        s.updated(samples=0)
    with pytest.raises(UsageError, match="sampler: stepz: unknown key"):
        s.updated(stepz=3)


def test_the_shipped_lift_checkpoint_is_small_and_can_represent_a_lift():
    """assets/worldmodels/lift_cube_tiny: under 20 MB, made for the lift scene, and its state range reaches the
    task's 10 cm (a warm start from the push checkpoint once kept the pushed cube's height range, and no
    imagined lift could succeed)."""
    from worldmodels.video_model import VideoWorldModel

    ckpt = Path("assets/worldmodels/lift_cube_tiny")
    assert (ckpt / "model.safetensors").stat().st_size <= 20e6
    model = VideoWorldModel.from_pretrained(ckpt)
    scene = model.cfg.scene
    assert scene is not None and scene["name"] == "lift_cube"
    height = scene["task"]["success"]["params"]["height"]
    z = model.cfg.state_dim + 2  # the cube's height in the state vector (proprio, then the cube's pose)
    top = float(model.codec.low[z] + model.codec.span[z])
    assert top >= scene["objects"][0]["size"][2] / 2 + height
