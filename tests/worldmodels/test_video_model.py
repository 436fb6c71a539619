"""The video world model: save/load, overfitting, causality, exact resume, SVD adapters, batched
rollouts, one-line errors. All on the 16x16 toy world (tests/worldmodels/toy.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.errors import SpecError, UsageError
from tests.worldmodels.toy import TOY_META, randomise, toy_config, toy_positions
from worldmodels.checkpoint import CheckpointError
from worldmodels.training import EpisodeStore, train_worldmodel
from worldmodels.video_config import load_video_config
from worldmodels.video_model import VideoWorldModel
from worldmodels.video_world import Context, ContextError, SlowPrecisionWarning, VideoWorld


def _resolved(cfg, episodes, scene=None):
    from worldmodels.training import resolve_config

    return resolve_config(cfg, episodes, {**TOY_META, "scene": scene})


def _store(model, episodes):
    store = EpisodeStore(episodes, model.cfg)
    store.latents = [model.encode_frames(torch.from_numpy(e["frames"])) for e in episodes]
    return store


def _with_statistics(cfg, episodes):
    """A randomised model of `cfg` holding the toy episodes' statistics, and its store (raw latents)."""
    from worldmodels.training import _statistics

    torch.manual_seed(0)
    model = VideoWorldModel(cfg)
    randomise(model)
    store = _store(model, episodes)
    _statistics(model, store, list(range(len(episodes))))
    return model, store


def _separate(cfg, state_batch_size=0):
    """`cfg` with a separate (MM-DiT style) state stream, and state-only batches of that size."""
    return cfg.model_copy(
        update={
            "backbone": cfg.backbone.model_copy(update={"state_stream": "separate"}),
            "train": cfg.train.model_copy(update={"state_batch_size": state_batch_size}),
        }
    )


def _random_model(episodes, stream="shared", **update):
    """A randomised toy model (seeded) of the resolved toy config with `update` applied and the given
    state stream, and its store (raw latents)."""
    cfg = _resolved(toy_config(), episodes).model_copy(update=update)
    if stream == "separate":
        cfg = _separate(cfg)
    torch.manual_seed(0)
    model = VideoWorldModel(cfg).eval()
    randomise(model, scale=0.2)
    return model, _store(model, episodes)


def _world(path, **sampler):
    """The VideoWorld of a checkpoint, with the model's sampler changed by `sampler`."""
    model = VideoWorldModel.from_pretrained(path)
    return VideoWorld(model, model.cfg.sampler.updated(**sampler))


def _fixed_loss(model, store, seed=7):
    """Flow-matching loss on every window at fixed noise levels and noise (comparable across training)."""
    g = torch.Generator().manual_seed(seed)
    win = store.window(store.starts(list(range(len(store)))))
    with torch.no_grad():
        return float(model.loss(win, g)["loss"])


def test_tiny_config_overfits_four_episodes(trained, episodes):
    out, path = trained
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    vae_psnr = next(r["val_psnr_db"] for r in log if "val_psnr_db" in r)
    assert vae_psnr > 25, vae_psnr
    model = VideoWorldModel.from_pretrained(path)
    store = _store(model, episodes)
    after = _fixed_loss(model, store)
    fresh = VideoWorldModel(model.cfg, weights=False)
    fresh.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("denoiser.")}, strict=False
    )
    before = _fixed_loss(fresh, store)
    assert before / after >= 10, (before, after)


def test_save_load_round_trip_is_exact(tmp_path, episodes):
    cfg = _resolved(toy_config(), episodes)
    torch.manual_seed(0)
    model = VideoWorldModel(cfg)
    randomise(model)
    model.save_pretrained(tmp_path / "m")
    again = VideoWorldModel.from_pretrained(tmp_path / "m")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    store = _store(model, episodes)
    win = store.window(store.starts([0])[:3])
    noise = torch.randn(3, 2, 1, 4, 8, 8), torch.randn(3, 2, 2, 4, 4)
    x1, v1 = model.eval().sample(win, *noise)
    x2, v2 = again.sample(win, *noise)
    assert torch.equal(x1, x2) and torch.equal(v1, v2)


@pytest.mark.parametrize(("context_noise", "guidance"), [(0.0, 1.0), (0.2, 1.0), (0.2, 2.0)])
def test_the_context_cache_gives_the_full_passes_numbers(episodes, context_noise, guidance):
    """A sampler that computes the context's keys and values once per pass generates what full passes (the
    context recomputed at every step) generate, within float rounding."""
    model, store = _random_model(episodes, "separate", future=4)
    win = store.window([(0, 3), (1, 5)])
    noise = torch.randn(2, 4, 1, 4, 8, 8), torch.randn(2, 4, 2, 4, 4)
    sampler = model.cfg.sampler.updated(context_noise=context_noise, guidance=guidance, steps=3)
    ctx_eps = torch.randn(win.ctx_img.shape)
    cached = model.sample(win, *noise, sampler, ctx_eps)
    model.context_cache = lambda *a, **k: None  # every step a full pass
    full = model.sample(win, *noise, sampler, ctx_eps)
    for a, b in zip(cached, full, strict=True):
        assert (a - b).abs().max() < 2e-3 and (a - b).abs().mean() < 1e-5
    assert (full[0] - noise[0]).abs().max() > 0.1  # the sampler did move the noise


@pytest.mark.parametrize(
    ("context_noise", "guidance", "stream"),
    [(0.0, 1.0, "shared"), (0.2, 1.0, "shared"), (0.0, 2.0, "shared"), (0.2, 2.0, "separate")],
)
def test_a_future_action_never_changes_an_earlier_frame(episodes, context_noise, guidance, stream):
    model, store = _random_model(episodes, stream, future=4)
    cfg = model.cfg
    win = store.window([(0, 3)])
    noise = torch.randn(1, 4, 1, 4, 8, 8), torch.randn(1, 4, 2, 4, 4)
    sampler = cfg.sampler.updated(context_noise=context_noise, guidance=guidance)
    ctx_eps = torch.randn(win.ctx_img.shape)
    x1, v1 = model.sample(win, *noise, sampler, ctx_eps)
    win.actions = win.actions.clone()
    K = win.ctx_img.shape[1]
    win.actions[0, K + 2] += torch.tensor([5.0, -5.0, 0.0, 0.0])  # the action into future step 3 of 4
    x2, v2 = model.sample(win, *noise, sampler, ctx_eps)
    assert torch.equal(x1[:, :2], x2[:, :2]) and torch.equal(v1[:, :2], v2[:, :2])
    assert (x1[:, 2:] - x2[:, 2:]).abs().max() > 1e-3  # the changed step and later ones do move


@pytest.mark.parametrize("state_only", [0, 4])
def test_resume_after_every_step_equals_an_uninterrupted_run(tmp_path, episodes, state_only):
    cfg = toy_config(steps=5, checkpoint_every=2).model_copy(
        update={"vae": toy_config().vae.model_copy(update={"train_steps": 4})}
    )
    if state_only:
        cfg = _separate(cfg, state_only)
    straight = train_worldmodel(cfg, episodes, TOY_META, tmp_path / "a", progress=False)
    # a time limit of zero stops (resumably) after every step; resume until done
    assert train_worldmodel(cfg, episodes, TOY_META, tmp_path / "b", max_minutes=0, progress=False) is None
    for _ in range(20):
        done = train_worldmodel(
            cfg, episodes, TOY_META, tmp_path / "b", max_minutes=0, resume=True, progress=False
        )
        if done is not None:
            break
    assert done is not None
    a = VideoWorldModel.from_pretrained(straight).state_dict()
    b = VideoWorldModel.from_pretrained(done).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(Exception, match="not empty; pass --resume"):
        train_worldmodel(cfg, episodes, TOY_META, tmp_path / "a", progress=False)


@pytest.mark.parametrize(("context_noise", "frames"), [(0.0, "first"), (0.1, "first"), (0.1, "mean")])
def test_batched_rollout_equals_single_rollouts(trained, episodes, context_noise, frames):
    _, path = trained
    world = _world(path, context_noise=context_noise, frames=frames)
    ctxs = [Context.from_episode(e, world.cameras, 2) for e in episodes[:3]]
    chunks = [e["actions"][2:9] for e in episodes[:3]]
    world.reset_batch(ctxs, seeds=[10, 11, 12])
    batched = world.step_batch(chunks)
    for i in range(3):
        world.reset(10 + i, {"context": ctxs[i]})
        single = world.step(chunks[i])
        assert len(single.observations) == len(batched[i].observations)
        for o1, o2 in zip(single.observations, batched[i].observations, strict=True):
            assert np.abs(o1.images["top"].astype(int) - o2.images["top"].astype(int)).max() <= 1
            np.testing.assert_allclose(o1.environment_state, o2.environment_state, atol=1e-5)
        assert single.info["success"] == batched[i].info["success"]


def test_context_noise_is_drawn_in_training_and_told_to_the_denoiser(episodes):
    """train.context_noise noises each window's context to a drawn level and gives the level to the
    denoiser; at 0 the training noise stream is exactly the clean-context one."""
    model, store = _random_model(episodes)
    cfg = model.cfg
    win = store.window([(0, 3), (1, 5)])
    clean = model.loss(win, torch.Generator().manual_seed(3))["loss"]
    assert torch.equal(clean, model.loss(win, torch.Generator().manual_seed(3))["loss"])
    model.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"context_noise": 0.5})})
    noisy = model.loss(win, torch.Generator().manual_seed(3))["loss"]
    assert not torch.allclose(clean, noisy)
    # the level alone (same latents) changes the prediction: the denoiser is told how noisy its context is
    x, s = torch.randn(2, cfg.future, 1, 4, 8, 8), torch.randn(2, cfg.future, *model.state_shape)
    sig = torch.full((2,), 0.5)
    v0 = model.velocity(win, x, s, sig)[0]
    v1 = model.velocity(win, x, s, sig, ctx_sigma=torch.full((2,), 0.3))[0]
    assert (v0 - v1).abs().max() > 1e-4
    # the SVD UNet has one noise level per clip: context noise is refused there
    from worldmodels.video_config import VideoWorldModelConfig

    with pytest.raises(ValueError, match="need the video_dit backbone"):
        VideoWorldModelConfig.model_validate(
            {**toy_config().model_dump(), "backbone": {"type": "svd_unet"}, "sampler": {"context_noise": 0.1}}
        )


def test_trained_toy_world_follows_its_actions(trained, episodes):
    """Open loop with the true actions, the imagined square stays near the true one and success is judged."""
    _, path = trained
    world = VideoWorld.from_pretrained(path)
    e = episodes[1]
    world.reset(0, {"context": Context.from_episode(e, world.cameras, 1)})
    r = world.step(e["actions"][1:9])
    pred = np.stack([o.environment_state[:2] for o in r.observations])
    true = e["env_state"][2 : 2 + len(pred), :2]
    assert np.abs(pred - true).max() < 0.02, (pred, true)  # 2 px of 16
    assert len(r.info["uncertainty_per_step"]) == len(r.observations)
    # the imagined frames show the square where it is (red pixels' centroid within 2 px)
    for o, t in zip(r.observations, true, strict=True):
        img = o.images["top"].astype(int)
        red = (img[..., 0] > 170) & (img[..., 1] < 90)
        assert red.sum() >= 4
        ys, xs = np.nonzero(red)
        assert abs(xs.mean() + 0.5 - 100 * t[0]) < 2 and abs(ys.mean() + 0.5 - 100 * t[1]) < 2


def test_svd_adapters_start_as_the_identity(tmp_path):
    from diffusers import UNetSpatioTemporalConditionModel

    from worldmodels.svd import SVDDenoiser
    from worldmodels.video_config import SVDConfig

    torch.manual_seed(0)
    base = UNetSpatioTemporalConditionModel(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,
        layers_per_block=1,
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        num_frames=4,
    ).eval()
    base.save_pretrained(tmp_path / "svd" / "unet")
    den = SVDDenoiser(
        SVDConfig(pretrained=str(tmp_path / "svd")), latent_channels=4, views=1, cond_dim=6, max_offset=8
    ).eval()
    assert len(den.adapters) >= 2
    x = torch.randn(2, 4, 8, 8, 8)
    t = torch.tensor([500.0, 20.0])
    ehs = torch.randn(2, 1, 32)
    ids = torch.tensor([[6.0, 127.0, 0.02]] * 2)
    tokens = torch.randn(2, 4, den.token_dim)
    with torch.no_grad():
        ref = base(x, t, ehs, ids).sample
        out = den.unet_forward(x, t, ehs, ids, tokens)
    assert torch.equal(ref, out)
    with torch.no_grad():  # once an adapter has learnt something, the actions change the output
        den.adapters[0].xattn.out.weight.add_(0.1)
        moved = den.unet_forward(x, t, ehs, ids, tokens)
    assert (moved - ref).abs().max() > 1e-4


def test_svd_backbone_trains_inside_the_world_model(tmp_path, episodes):
    from worldmodels.video_config import VideoWorldModelConfig

    base = toy_config(steps=3).model_dump()
    base["vae"]["train_steps"] = 2
    cfg = VideoWorldModelConfig.model_validate(
        {
            **base,
            "backbone": {
                "type": "svd_unet",
                "unet": {
                    "sample_size": 8,
                    "in_channels": 8,
                    "out_channels": 4,
                    "down_block_types": ["CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"],
                    "up_block_types": ["UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"],
                    "block_out_channels": [32, 64],
                    "addition_time_embed_dim": 4,
                    "projection_class_embeddings_input_dim": 12,
                    "layers_per_block": 1,
                    "cross_attention_dim": 16,
                    "num_attention_heads": [2, 4],
                    "num_frames": 4,
                },
            },
        }
    )
    path = train_worldmodel(cfg, episodes, TOY_META, tmp_path / "svd", progress=False)
    world = _world(path, samples=1, steps=2)
    world.reset(0, {"context": Context.from_episode(episodes[0], world.cameras, 1)})
    r = world.step(episodes[0]["actions"][1:4])
    assert len(r.observations) == 3 and r.observations[0].images["top"].shape == (16, 16, 3)


def test_one_line_errors(tmp_path, episodes, trained):
    _, path = trained
    # malformed checkpoint directories
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        VideoWorldModel.from_pretrained(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        VideoWorldModel.from_pretrained(bad)
    cfg = json.loads((path / "config.json").read_text())
    cfg["backbone"]["dim"] = 48
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="has shape|do not fit") as e:
        VideoWorldModel.from_pretrained(bad)
    assert "\n" not in str(e.value)
    # an unknown config key
    y = tmp_path / "wm.yaml"
    y.write_text("future: 4\nbackbone: {type: video_dit, depht: 3}\n")
    with pytest.raises(
        SpecError,
        match=r"wm.yaml: backbone.video_dit.depht: unknown key|wm.yaml: backbone.*depht.*unknown key",
    ) as e:
        load_video_config(y)
    assert "\n" not in str(e.value)
    # context frames of the wrong size
    world = VideoWorld.from_pretrained(path)
    e0 = dict(episodes[0])
    e0["frames"] = np.zeros((12, 1, 3, 32, 32), np.uint8)
    with pytest.raises(ContextError, match=r"are 32x32; the model was trained on 16x16 images"):
        world.reset(0, {"context": Context.from_episode(e0, world.cameras, 2)})
    with pytest.raises(UsageError, match="needs options"):
        world.reset(0)


def test_cli_unknown_key_is_one_line(tmp_path):
    y = tmp_path / "wm.yaml"
    y.write_text("future: 4\nsampler: {stepz: 3}\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "dreamtwin.cli",
            "train",
            "worldmodel",
            "--config",
            str(y),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "sampler.stepz: unknown key" in r.stderr, r.stderr


def test_residual_state_frames_are_relative_to_the_last_context_step(tmp_path, episodes):
    """With `state_frame.residual`, future state frames carry the change from the last context step,
    normalised by the (much smaller) range of such changes; encode/decode are inverse, the value stays
    absolute, and the statistics survive save/load."""
    cfg = _resolved(toy_config(), episodes)
    cfg = cfg.model_copy(update={"state_frame": cfg.state_frame.model_copy(update={"residual": True})})
    model, store = _with_statistics(cfg, episodes)
    vi = cfg.value_index
    abs_span, delta_span = model.codec.span, model.delta_codec.span
    varies = torch.cat(store.vectors).std(0) > 1e-6
    moving = [i for i in range(cfg.vector_dim) if i != vi and varies[i]]
    assert moving and (delta_span[moving] < abs_span[moving]).all(), (delta_span, abs_span)
    assert (
        float(model.delta_codec.low[vi]) == 0.0 and float(delta_span[vi]) == 1.0
    )  # the value is not a change

    win = store.window(store.starts([0, 1])[:5])
    frames = model.encode_future(win, win.fut_vec)
    torch.testing.assert_close(model.decode_future(win, frames), win.fut_vec, atol=1e-5, rtol=0)
    # the same frame perturbation moves a residual prediction less than an absolute one, by the span ratio
    eps = 0.1 * torch.randn(frames.shape, generator=torch.Generator().manual_seed(0))
    err_res = (model.decode_future(win, frames + eps) - win.fut_vec).abs()
    err_abs = (model.codec.decode(model.codec.encode(win.fut_vec) + eps) - win.fut_vec).abs()
    assert (err_res[..., moving].mean((0, 1)) < err_abs[..., moving].mean((0, 1))).all()

    model.save_pretrained(tmp_path / "m")
    again = VideoWorldModel.from_pretrained(tmp_path / "m")
    assert again.cfg.state_frame.residual and torch.equal(again.delta_codec.span, delta_span)
    noise = torch.randn(5, 2, 1, 4, 8, 8), torch.randn(5, 2, 2, 4, 4)
    _, v1 = model.eval().sample(win, *noise)
    _, v2 = again.sample(win, *noise)
    assert torch.equal(v1, v2)


def test_mean_frames_average_the_samples_latents(trained, episodes):
    """`frames="mean"` continues an episode with the mean of the samples' latents (one sample: the sample
    itself); the first-sample frame is one of the samples, not their mean."""
    _, path = trained
    e = episodes[0]
    ctx = Context.from_episode(e, ["top"], 2)
    out = {}
    for frames, samples in (("first", 3), ("mean", 3), ("first", 1), ("mean", 1)):
        world = _world(path, frames=frames, samples=samples)
        world.stop_on_success = False
        world.reset_batch([ctx], [5])
        lat, _, _ = world._generate(world.episodes, [torch.from_numpy(e["actions"][2:4])])
        world.reset_batch([ctx], [5])
        world.step_batch([e["actions"][2:4]])
        out[frames, samples] = (lat[0], world.episodes[0].latents[-2:])
    lat3, kept = out["mean", 3]
    torch.testing.assert_close(kept, lat3.mean(0), atol=1e-6, rtol=0)
    lat3f, kept_f = out["first", 3]
    torch.testing.assert_close(kept_f, lat3f[0], atol=1e-6, rtol=0)
    assert (lat3[0] - lat3.mean(0)).abs().max() > 1e-3  # samples differ, so the two estimates do too
    torch.testing.assert_close(out["mean", 1][1], out["first", 1][1], atol=0, rtol=0)
    with pytest.raises(UsageError, match=r"^sampler: frames: Input should be 'first' or 'mean'"):
        _world(path, frames="median")


def test_temperature_scales_only_the_first_samples_noise(trained, episodes):
    """`sampler.temperature`: at 1 the rollout is the default one, bit for bit; at 0 the first sample starts
    the flow ODE at the centre of the noise distribution, so its frames no longer depend on the seed, while
    the other samples' still do (their disagreement stays the uncertainty)."""
    _, path = trained
    e = episodes[0]
    ctx = Context.from_episode(e, ["top"], 2)
    chunk = torch.from_numpy(e["actions"][2:4])

    def generate(seed, **kw):
        world = _world(path, samples=3, **kw)
        world.reset_batch([ctx], [seed])
        lat, vec, unc = world._generate(world.episodes, [chunk])
        return lat[0], unc[0]

    ref, _ = generate(5)
    assert torch.equal(generate(5, temperature=1.0)[0], ref)
    z5, u5 = generate(5, temperature=0.0)
    z6, _ = generate(6, temperature=0.0)
    torch.testing.assert_close(z5[0], z6[0], atol=1e-5, rtol=0)
    assert (ref[0] - z5[0]).abs().max() > 1e-3  # not the default first sample
    assert (z5[1] - z6[1]).abs().max() > 1e-3 and (z5[2] - z6[2]).abs().max() > 1e-3
    assert (u5 > 0).all()
    with pytest.raises(UsageError, match=r"^sampler: temperature: Input should be less than or equal to 1"):
        _world(path, temperature=1.5)


def test_uniform_spacing_spends_every_pass_on_denoising(trained, episodes, monkeypatch):
    """diffusers' spacing with N steps ends on a pass from noise level 0.001 to 0 that changes next to
    nothing, so it samples like N - 1 uniform steps (same noise, same result within 1e-2 of latents whose
    spread is ~1) with one network pass more; uniform N makes N passes and differs from uniform N - 1."""
    _, path = trained
    model = VideoWorldModel.from_pretrained(path).eval()
    store = _store(model, episodes)
    win = store.window(store.starts([0, 1])[:2])
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 2, 1, 4, 8, 8, generator=g), torch.randn(2, 2, 2, 4, 4, generator=g)
    calls = []
    velocity = model.velocity
    monkeypatch.setattr(model, "velocity", lambda *a, **k: calls.append(1) or velocity(*a, **k))

    def sample(steps, spacing):
        calls.clear()
        with torch.no_grad():
            out = model.sample(win, *noise, model.cfg.sampler.updated(steps=steps, spacing=spacing))
        return out, len(calls)

    (z4, v4), n4 = sample(4, "diffusers")
    (z3, v3), n3 = sample(3, "uniform")
    (z4u, _), n4u = sample(4, "uniform")
    assert (n4, n3, n4u) == (4, 3, 4)
    torch.testing.assert_close(z3, z4, atol=1e-2, rtol=0)
    torch.testing.assert_close(v3, v4, atol=1e-2, rtol=0)
    assert (z4u - z3).abs().max() > 1e-2
    with pytest.raises(UsageError, match=r"^sampler: spacing: Input should be 'diffusers' or 'uniform'"):
        model.cfg.sampler.updated(spacing="karras")


@pytest.mark.filterwarnings("ignore::worldmodels.video_world.SlowPrecisionWarning")  # emulated here or not
def test_bfloat16_passes_imagine_nearly_the_float32_frames(trained, episodes):
    """`sampler.precision: bfloat16` runs the denoiser and the decoder's layers in bfloat16 (seen by a hook)
    and gives frames within a few grey levels of float32's and the same state to a millimetre's order; the
    sampler's own state and what the world returns stay float32."""
    _, path = trained
    e = episodes[0]
    ctx = Context.from_episode(e, ["top"], 2)
    out, seen = {}, {}
    for precision in ("float32", "bfloat16"):
        world = _world(path, precision=precision)
        dtypes = seen.setdefault(precision, set())
        hook = world.model.denoiser.img_in.register_forward_hook(lambda m, i, o, d=dtypes: d.add(o.dtype))
        world.reset(5, {"context": ctx})
        out[precision] = world.step(e["actions"][2:6])
        hook.remove()
    assert seen == {"float32": {torch.float32}, "bfloat16": {torch.bfloat16}}
    a, b = (np.stack([o.images["top"] for o in out[p].observations]).astype(int) for p in out)
    assert np.abs(a - b).mean() < 3 and np.abs(a - b).max() > 0  # close, and not the float32 run itself
    s32, s16 = (np.stack([o.environment_state for o in out[p].observations]) for p in out)
    assert s16.dtype == np.float32
    np.testing.assert_allclose(s16, s32, atol=5e-3)


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_on_a_cpu_without_it_warns(trained, monkeypatch, native):
    """A CPU that emulates bfloat16 (no avx512_bf16, amx_bf16 or bf16 feature) runs bfloat16 passes several
    times slower than float32: asking for them there warns, naming the setting; float32 never warns."""
    import warnings

    import worldmodels.video_world as vw

    _, path = trained
    monkeypatch.setattr(vw, "native_bfloat16", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _world(path, precision="float32")
        _world(path, precision="bfloat16")
    slow = [w for w in caught if issubclass(w.category, SlowPrecisionWarning)]
    assert len(slow) == (0 if native else 1)
    if slow:
        assert "sampler precision bfloat16" in str(slow[0].message) and "use float32" in str(slow[0].message)


def test_detail_weights_single_out_small_objects():
    """`vae.detail_weight`: flat background keeps weight 1; a 2x2 red spot on a flat table, the kind of
    object the policies must find, gets the largest weights, and the loss grows by them."""
    from worldmodels.training import detail_weights

    x = torch.full((1, 3, 16, 16), 0.2)
    torch.testing.assert_close(detail_weights(x, 10.0, 7), torch.ones(1, 1, 16, 16), atol=1e-5, rtol=0)
    x[0, :, 7:9, 7:9] = torch.tensor([0.9, -0.8, -0.8])[:, None, None]
    w = detail_weights(x, 10.0, 7)[0, 0]
    assert w[7:9, 7:9].min() > 10 and w[0:3, 0:3].max() < 1 + 1e-5
    assert w.argmax() // 16 in (7, 8) and w.argmax() % 16 in (7, 8)


def test_motion_windows_fill_their_share_of_each_batch(episodes):
    """`train.motion_fraction`: the windows where an object moves are found by position change, and that
    share of every dynamics batch is drawn from them (the rest uniformly), reproducibly per step."""
    from worldmodels.training import Stage, step_generator

    eps = [dict(e) for e in episodes]
    for e in eps:  # the square stands still in steps 0..6, then moves
        e["actions"] = e["actions"].copy()
        e["actions"][:6] = 0
        still = toy_positions(e["actions"], e["state"][0, :2])
        e["env_state"] = e["env_state"].copy()
        e["env_state"][:, :2] = still / 100
    cfg = _resolved(toy_config(batch_size=8, motion_fraction=0.5), eps)
    model = VideoWorldModel(cfg)
    store = _store(model, eps)
    windows = store.starts(list(range(len(eps))))
    moving = store.moving(windows, 0.005)
    F = cfg.future
    expect = [
        (k, t)
        for k, t in windows
        if np.abs(eps[k]["env_state"][t + 1 : t + 1 + F, :2] - eps[k]["env_state"][t, :2]).max() > 0.004
    ]
    assert set(moving) <= set(expect) and len(moving) >= len(expect) - 2 and 0 < len(moving) < len(windows)
    assert all(t >= 6 - F for _, t in moving)  # nothing moves before step 6
    module = Stage(model, store, "dynamics", list(range(len(eps))))
    assert module.moving == moving
    rng, _ = step_generator(0, "dynamics", 3)
    win, state_only = module.batch(rng)
    assert state_only is None  # train.state_batch_size = 0
    first = win.fut_vec[:, :, cfg.state_dim : cfg.state_dim + 2]
    last_ctx = win.ctx_vec[:, -1:, cfg.state_dim : cfg.state_dim + 2]
    moved = (first - last_ctx).norm(dim=-1).amax(1) > 0.005
    assert moved[4:].all()  # the second half of the batch: contact windows
    rng2, _ = step_generator(0, "dynamics", 3)
    assert torch.equal(module.batch(rng2)[0].fut_img, win.fut_img)


@pytest.mark.gpu
def test_cuda_training_and_rollout_match_cpu(tmp_path, episodes):
    """On CUDA a training step draws the same batch and noise as on CPU (seeded CPU generators, moved), so
    its loss matches; a short CUDA run trains like the CPU run; a CUDA rollout matches the CPU rollout."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from worldmodels.training import step_generator

    model, store = _with_statistics(_resolved(toy_config(), episodes), episodes)
    win = store.window(store.starts([0, 1])[:8])
    with torch.no_grad():
        cpu_loss = float(model.loss(win, step_generator(0, "dynamics", 3)[1])["loss"])
        model.cuda()
        cuda_loss = float(
            model.loss(win.map(lambda x: x.to("cuda")), step_generator(0, "dynamics", 3)[1])["loss"]
        )
    assert abs(cpu_loss - cuda_loss) <= 1e-3 * abs(cpu_loss), (cpu_loss, cuda_loss)

    cfg = toy_config(steps=60, holdout_episodes=1, val_every=60)
    runs = {}
    for accel in ("cpu", "gpu"):
        c = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"accelerator": accel, "devices": 1})}
        )
        runs[accel] = train_worldmodel(c, episodes, TOY_META, tmp_path / accel, progress=False)
    val = {
        a: [
            json.loads(x)["val_loss"]
            for x in (tmp_path / a / "log.jsonl").read_text().splitlines()
            if "val_loss" in x
        ][-1]
        for a in runs
    }
    assert np.isfinite(val["gpu"]) and abs(val["gpu"] - val["cpu"]) <= 0.25 * val["cpu"], val

    ctx = Context.from_episode(episodes[0], ["top"], 2)
    rolled = []
    for device in ("cpu", "cuda"):
        world = VideoWorld.from_pretrained(runs["cpu"], device=device)
        world.reset(3, {"context": ctx})
        rolled.append(world.step(episodes[0]["actions"][2:6]))
    for o1, o2 in zip(rolled[0].observations, rolled[1].observations, strict=True):
        assert np.abs(o1.images["top"].astype(int) - o2.images["top"].astype(int)).mean() < 2
        np.testing.assert_allclose(o1.environment_state, o2.environment_state, atol=5e-3)


@pytest.mark.parametrize("stream", ["shared", "separate"])
def test_a_separate_state_stream_never_sees_the_images(episodes, stream):
    """With `state_stream: separate` the state velocity is a function of poses, actions and noise alone (a
    state-only pass gives exactly the full pass's), while the image velocity still depends on the state."""
    model, store = _random_model(episodes, stream)
    cfg = model.cfg
    win = store.window([(0, 3), (1, 5), (2, 0)])
    g = torch.Generator().manual_seed(0)
    x_img = torch.randn(3, cfg.future, *win.ctx_img.shape[2:], generator=g)
    x_state = torch.randn(3, cfg.future, *model.state_shape, generator=g)
    sigma = torch.tensor([0.2, 0.5, 0.9])
    other = replace(win, ctx_img=torch.randn(win.ctx_img.shape, generator=g))
    with torch.no_grad():
        vi, vs = model.velocity(win, x_img, x_state, sigma)
        vi2, vs2 = model.velocity(other, torch.randn(x_img.shape, generator=g), x_state, sigma)
        vi3, _ = model.velocity(win, x_img, torch.randn(x_state.shape, generator=g), sigma)
        assert (vi3 - vi).abs().max() > 1e-4  # the frames follow the state either way
        if stream == "shared":
            assert (vs2 - vs).abs().max() > 1e-4  # a shared stream's state reads the images
            with pytest.raises(UsageError, match="needs the image latents"):
                model.state_velocity(win, x_state, sigma)
            return
        assert torch.equal(vs, vs2)
        # context noise is on the latents only: the state stream is told its context is clean either way
        level = torch.full((3,), 0.3)
        noisy = model.noise_context(win, level, torch.randn(win.ctx_img.shape, generator=g))
        assert torch.equal(model.velocity(noisy, x_img, x_state, sigma, ctx_sigma=level)[1], vs)
        alone = model.state_velocity(store.window([(0, 3), (1, 5), (2, 0)], images=False), x_state, sigma)
    assert torch.allclose(alone, vs, atol=1e-6, rtol=0), (alone - vs).abs().max()


def test_state_only_batches_train_the_state_stream_alone(episodes):
    """`train.state_batch_size`: the state loss is pooled over the full and the state-only windows, and the
    state-only windows send no gradient to the image stream; a few hundred state-only steps fit the toy
    world's state."""
    cfg = _separate(_resolved(toy_config(), episodes), 16)
    torch.manual_seed(0)
    model = VideoWorldModel(cfg)
    randomise(model, scale=0.05)
    store = _store(model, episodes)
    win = store.window([(0, 3), (1, 5)])
    state_win = store.window([(2, 4), (3, 1), (0, 6)], images=False)
    out = model.loss(win, torch.Generator().manual_seed(1), state_win)
    pooled = (2 * out["state"] + 3 * out["state_only"]) / 5
    assert torch.allclose(out["loss"].detach(), out["image"] + cfg.state_frame.loss_weight * pooled)
    # the stream of the full batch is unchanged by the extra windows
    plain = model.loss(win, torch.Generator().manual_seed(1))
    assert torch.equal(plain["image"], out["image"]) and torch.equal(plain["state"], out["state"])

    model.zero_grad()
    x0 = model.encode_future(state_win, state_win.fut_vec)
    v = model.state_velocity(state_win, torch.zeros_like(x0), torch.ones(3))
    v.square().mean().backward()
    img_params = [p for n, p in model.denoiser.named_parameters() if ".img." in n or n.startswith("img_")]
    assert img_params and all(p.grad is None or not p.grad.any() for p in img_params)

    windows = store.starts(list(range(len(episodes))))
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)

    def state_loss(seed):
        with torch.no_grad():
            full = store.window(windows, images=False)
            return float(model.loss(win, torch.Generator().manual_seed(seed), full)["state_only"])

    before = state_loss(5)
    for _ in range(100):
        pick = torch.randint(len(windows), (16,), generator=g).tolist()
        loss = model.loss(win, g, store.window([windows[i] for i in pick], images=False))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before / state_loss(5) >= 3, (before, state_loss(5))


def test_a_warm_start_to_longer_episodes_computes_what_the_checkpoint_did():
    """A checkpoint trained on shorter episodes reaches less far back in time; grown to a longer reach
    (`VideoDiT.grow_offsets`), the model gives every frame offset, near or beyond the old reach, exactly the
    embedding the checkpoint gave it (the checkpoint clamped far offsets to its furthest row)."""
    from worldmodels.dit import VideoDiT

    def dit(max_offset):
        torch.manual_seed(0)
        return VideoDiT(
            dim=32, depth=1, heads=2, mlp_ratio=2.0, patch=2, state_patch=2, latent_channels=4,
            latent_size=(4, 4), views=1, state_shape=(2, 4, 4), cond_dim=5, max_offset=max_offset,
        )  # fmt: skip

    old, new = dit(3), dit(7)
    state = new.grow_offsets(old.state_dict(), "")
    new.load_state_dict(state)
    assert state["offset.weight"].shape == (15, 32)
    offsets = torch.arange(-9, 10)[None]
    sigma, cond = torch.full((1, 19), 0.5), torch.zeros(1, 19, 5)
    torch.testing.assert_close(
        new._conditioning(sigma, cond, offsets, None)[2], old._conditioning(sigma, cond, offsets, None)[2]
    )
    assert not torch.equal(dit(7).offset.weight[:4], state["offset.weight"][:4])  # grown, not re-drawn
    assert new.grow_offsets(state, "") is state  # a model as far-reaching as the checkpoint: nothing to do
