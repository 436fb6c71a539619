"""A video world model over two camera views, warm-started from a one-view checkpoint: the second view is
the toy world mirrored left to right (a camera facing the first), so a model that imagines both views
consistently puts the square at mirrored places in them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worldmodels.toy import SIZE, TOY_META, toy_scene
from worldmodels.video_model import VideoWorldModel
from worldmodels.video_world import Context, VideoWorld

TWO = {**TOY_META, "cameras": ["top", "mirror"]}


def _two_views(e: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**e, "frames": np.concatenate([e["frames"], e["frames"][..., ::-1]], axis=1)}


@pytest.fixture(scope="module")
def two_views(trained, episodes, tmp_path_factory):
    from tests.worldmodels.toy import toy_config
    from worldmodels.training import train_worldmodel

    _, base = trained
    eps = [_two_views(e) for e in episodes]
    meta = {**TWO, "scene": toy_scene()}
    root = tmp_path_factory.mktemp("views")
    zero = train_worldmodel(toy_config(steps=0, init=str(base)), eps, meta, root / "zero", progress=False)
    tuned = train_worldmodel(toy_config(steps=400, init=str(base)), eps, meta, root / "tuned", progress=False)
    return base, zero, tuned, eps


def test_a_warm_start_can_fine_tune_the_vae_on_the_new_views(two_views, tmp_path):
    """`train.init_vae_steps`: the checkpoint's VAE trains on the new data first (kept as it is by default)."""
    import json

    from tests.worldmodels.toy import toy_config
    from worldmodels.training import train_worldmodel

    base, zero, _, eps = two_views
    cfg = toy_config(steps=0, init=str(base))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"init_vae_steps": 30})})
    path = train_worldmodel(cfg, eps, {**TWO, "scene": toy_scene()}, tmp_path / "vae", progress=False)
    kept, tuned = VideoWorldModel.from_pretrained(zero), VideoWorldModel.from_pretrained(path)
    old = VideoWorldModel.from_pretrained(base)
    assert all(
        torch.equal(a, b)
        for a, b in zip(kept.vae.state_dict().values(), old.vae.state_dict().values(), strict=True)
    )
    assert not torch.equal(tuned.vae.encoder.conv_in.weight, old.vae.encoder.conv_in.weight)
    assert torch.equal(tuned.latent_mean, old.latent_mean)  # the checkpoint's statistics are kept
    rows = [json.loads(line) for line in (tmp_path / "vae" / "log.jsonl").read_text().splitlines()]
    assert max(r.get("step", 0) for r in rows if r.get("stage") == "vae") == 30


def test_a_warm_start_grows_the_position_embedding_by_a_view(two_views):
    base, zero, _, _ = two_views
    old, new = VideoWorldModel.from_pretrained(base), VideoWorldModel.from_pretrained(zero)
    assert new.cfg.cameras == ["top", "mirror"] and new.views == 2
    per_view = old.denoiser.hp * old.denoiser.wp  # patches a view
    p0, p1 = old.denoiser.pos.detach(), new.denoiser.pos.detach()
    assert per_view == 16 and p1.shape[0] == p0.shape[0] + per_view
    assert torch.equal(p1[:per_view], p0[:per_view]) and torch.equal(p1[2 * per_view :], p0[per_view:])
    offset = p1[per_view : 2 * per_view] - p0[:per_view]  # the new view: the first's rows, told apart
    assert 0.005 < offset.std().item() < 0.05
    assert torch.equal(new.denoiser.img_in.weight, old.denoiser.img_in.weight)  # everything else as it was


def _centroid_x(img: np.ndarray) -> float:
    """The red square's column in an image [3, H, W] (uint8)."""
    r, g = img[0].astype(int), img[1].astype(int)
    mask = (r - g) > 80
    assert mask.any(), "no square in view"
    return float(np.nonzero(mask)[1].mean())


def test_a_two_view_model_imagines_both_views_consistently(two_views):
    _, _, tuned, eps = two_views
    model = VideoWorldModel.from_pretrained(tuned)
    world = VideoWorld(model, model.cfg.sampler.updated(samples=1, steps=4))
    world.stop_on_success = False
    errors, mirrored = [], []
    for e in eps:
        world.reset(0, {"context": Context.from_episode(e, world.cameras, 1)})
        r = world.step(e["actions"][1:9])
        for t, o in enumerate(r.observations, start=2):
            top, mirror = o.images["top"].transpose(2, 0, 1), o.images["mirror"].transpose(2, 0, 1)
            errors.append(abs(_centroid_x(top) - _centroid_x(e["frames"][t, 0])))
            mirrored.append(abs(_centroid_x(top) + _centroid_x(mirror) - (SIZE - 1)))
    assert np.mean(errors) < 1.5, np.mean(errors)  # the first view follows the actions
    assert np.mean(mirrored) < 1.5, np.mean(mirrored)  # the second agrees with it


def test_a_warm_start_widens_its_state_ranges_to_data_that_reaches_further(trained, episodes, tmp_path):
    """The checkpoint's latent statistics are kept; its state ranges stay exactly as they were where the new
    data fits them, and grow where it reaches further (here the square rises 1.5 after step 5, as a lifted
    cube does where the checkpoint only saw it pushed; the checkpoint's range of that entry, empty, was
    [0, 1]): otherwise the new motion cannot be represented."""
    from tests.worldmodels.toy import toy_config
    from worldmodels.training import train_worldmodel

    _, base = trained
    meta = {**TOY_META, "scene": toy_scene()}
    rise = np.zeros(7, np.float32)
    rise[2] = 1.5
    lifted = [
        {**e, "env_state": e["env_state"] + rise * (np.arange(len(e["env_state"]))[:, None] > 5)}
        for e in episodes
    ]
    cfg = toy_config(steps=0, init=str(base))
    same = VideoWorldModel.from_pretrained(
        train_worldmodel(cfg, episodes, meta, tmp_path / "s", progress=False)
    )
    grown = VideoWorldModel.from_pretrained(
        train_worldmodel(cfg, lifted, meta, tmp_path / "l", progress=False)
    )
    old = VideoWorldModel.from_pretrained(base)
    z = old.cfg.state_dim + 2  # the square's height in the state vector
    for m in (same, grown):
        assert torch.equal(m.latent_mean, old.latent_mean) and torch.equal(m.latent_std, old.latent_std)
    for name in ("codec", "delta_codec") if old.delta_codec is not None else ("codec",):
        o, s, g = (getattr(m, name) for m in (old, same, grown))
        assert torch.equal(s.low, o.low) and torch.equal(s.span, o.span)
        keep = torch.arange(len(o.low)) != z
        assert torch.equal(g.low[keep], o.low[keep]) and torch.equal(g.span[keep], o.span[keep])
        assert float(g.low[z] + g.span[z]) >= 1.5 > float(o.low[z] + o.span[z])
