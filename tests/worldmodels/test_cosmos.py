"""The Cosmos-Predict2 backbone: velocity layouts, identity of the zero-initialised action adapters against
the bare transformer fed the Predict2 Video2World way, training inside the world model, an exact
save/load round trip that needs no transformer directory, the GPU recipe, one-line refusals. A tiny
`CosmosTransformer3DModel` (2 blocks, width 32) saved into tmp_path stands in for Predict2-2B."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from einops import rearrange

from tests.worldmodels.toy import TOY_META, randomise, toy_config
from worldmodels.checkpoint import CheckpointError
from worldmodels.video_config import CosmosConfig, VideoWorldModelConfig, load_video_config
from worldmodels.video_model import VideoWorldModel

# a 4-channel latent (the toy VAE's) + the condition-mask channel in, 4 channels out
TINY: dict[str, Any] = {
    "in_channels": 5,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 2,
    "mlp_ratio": 2.0,
    "text_embed_dim": 16,
    "adaln_lora_dim": 8,
    "max_size": (8, 32, 32),
    "patch_size": (1, 2, 2),
    "rope_scale": (1.0, 3.0, 3.0),
    "concat_padding_mask": False,  # True needs torchvision (see test_cosmos_refusals)
    "extra_pos_embed_type": "learnable",
}


def _save_tiny(root: Path, seed: int = 0) -> Any:
    """A tiny Predict2-like transformer, saved as `root/transformer` (a pipeline directory's layout)."""
    from diffusers.models.transformers.transformer_cosmos import CosmosTransformer3DModel

    torch.manual_seed(seed)
    model = CosmosTransformer3DModel(**TINY)
    with torch.no_grad():  # the learnt positions start at zero; give them a value so they are exercised
        for p in model.learnable_pos_embed.parameters():
            p.normal_(0, 0.1)
    model.save_pretrained(root / "transformer")
    return model.eval()


def _inputs(
    B: int = 2, Fr: int = 4, V: int = 2, c: int = 4, h: int = 8, w: int = 8
) -> dict[str, torch.Tensor]:
    """Denoiser inputs: 2 context frames (offsets -1, 0) then 2 future frames, per-frame noise levels."""
    g = torch.Generator().manual_seed(1)
    return {
        "img": torch.randn(B, Fr, V, c, h, w, generator=g),
        "state": torch.randn(B, Fr, c, h, w, generator=g),
        "sigma": torch.tensor([[0.0, 0.0, 0.6, 0.6], [0.2, 0.2, 0.9, 0.9]])[:B],
        "cond": torch.randn(B, Fr, 6, generator=g),
        "offsets": torch.tensor([[-1, 0, 1, 2]]).expand(B, -1),
    }


def _toy_cosmos_config(pretrained: Path | None = None, **train: Any) -> VideoWorldModelConfig:
    """The toy world model's config (resolved for the toy dataset) with the tiny Cosmos backbone."""
    backbone: dict[str, Any] = {"type": "cosmos_predict2", "adapter_heads": 2}
    if pretrained is None:
        backbone["transformer"] = TINY
    else:
        backbone["pretrained"] = str(pretrained)
    data = toy_config(**train).model_dump()
    meta = {k: TOY_META[k] for k in ("cameras", "fps", "image_size")}
    return VideoWorldModelConfig.model_validate(
        {**data, **meta, "action_dim": 4, "state_dim": 3, "env_dim": 7, "backbone": backbone}
    )


def _with_statistics(
    cfg: VideoWorldModelConfig, episodes: list[dict[str, Any]]
) -> tuple[VideoWorldModel, Any]:
    from worldmodels.training import EpisodeStore, _statistics

    torch.manual_seed(0)
    model = VideoWorldModel(cfg)
    store = EpisodeStore(episodes, model.cfg)
    store.latents = [model.encode_frames(torch.from_numpy(e["frames"])) for e in episodes]
    _statistics(model, store, list(range(len(episodes))))
    return model, store


def test_cosmos_velocities_have_the_frame_layouts(episodes):
    """v_img [B, Fr, V, c, h, w] and v_state [B, Fr, c, h, w] from the denoiser; the world model's state
    frames are one latent-sized tile, and its future velocities come back in its own layouts."""
    from worldmodels.cosmos import CosmosDenoiser

    den = CosmosDenoiser(CosmosConfig(transformer=TINY), latent_channels=4, views=2, cond_dim=6, max_offset=8)
    x = _inputs()
    vi, vs = den(**x)
    assert vi.shape == (2, 4, 2, 4, 8, 8) and vs.shape == (2, 4, 4, 8, 8)
    assert len(den.adapters) == TINY["num_layers"]
    # the state tile is part of each frame: changing the state input changes both outputs
    vi2, vs2 = den(**{**x, "state": x["state"] + 1})
    assert (vs2 - vs).abs().max() > 1e-3 and (vi2 - vi).abs().max() > 1e-4

    model, store = _with_statistics(_toy_cosmos_config(), episodes)
    assert model.state_shape == (4, 8, 8)  # the latent's channels and size (16x16 frames, downsampling 2)
    win = store.window([(0, 3), (1, 5)])
    F = model.cfg.future
    v_img, v_state = model.velocity(
        win, torch.randn(2, F, 1, 4, 8, 8), torch.randn(2, F, 4, 8, 8), torch.full((2,), 0.5)
    )
    assert v_img.shape == (2, F, 1, 4, 8, 8) and v_state.shape == (2, F, 4, 8, 8)


def test_cosmos_adapters_start_as_the_identity(tmp_path):
    """At initialisation the denoiser computes exactly what the bare transformer computes when fed the
    Predict2 Video2World way; a moved adapter, or the context's noise level, changes the output."""
    from worldmodels.cosmos import T_CONDITIONING, CosmosDenoiser

    root = tmp_path / "predict2"
    bare = _save_tiny(root)  # the saved transformer itself: the denoiser must load exactly its weights
    den = CosmosDenoiser(
        CosmosConfig(pretrained=str(root), adapter_heads=2),
        latent_channels=4,
        views=2,
        cond_dim=6,
        max_offset=8,
    ).eval()
    x = _inputs()
    # the Predict2 layout, packed here independently: views then the state tile along the height
    hidden = torch.cat(
        [
            rearrange(x["img"], "b f v c h w -> b c f (v h) w"),
            rearrange(x["state"], "b f c h w -> b c f h w"),
        ],
        dim=3,
    )
    B, _, Fr, H, W = hidden.shape
    is_ctx = torch.tensor([1.0, 1.0, 0.0, 0.0])
    timestep = torch.where(is_ctx > 0, x["sigma"].clamp_min(T_CONDITIONING), x["sigma"])
    mask = is_ctx.view(1, 1, Fr, 1, 1).expand(B, 1, Fr, H, W)
    with torch.no_grad():
        ref = bare(
            hidden,
            timestep.view(B, 1, Fr, 1, 1),
            torch.zeros(B, 1, TINY["text_embed_dim"]),  # the learnt text token starts at zero
            fps=16,
            condition_mask=mask,
            return_dict=False,
        )[0]
        vi, vs = den(**x)
    out = torch.cat(
        [rearrange(vi, "b f v c h w -> b c f (v h) w"), rearrange(vs, "b f c h w -> b c f h w")], dim=3
    )
    assert torch.equal(out, ref)
    with torch.no_grad():  # the condition mask and the context's noise level reach the transformer
        no_ctx = den(**{**x, "offsets": x["offsets"] + 2})[0]
        noisier = den(**{**x, "sigma": x["sigma"] + torch.tensor([0.3, 0.3, 0.0, 0.0])})[0]
    assert (no_ctx - vi).abs().max() > 1e-4 and (noisier[:, 2:] - vi[:, 2:]).abs().max() > 1e-4
    with torch.no_grad():  # once an adapter has learnt something, each frame's action changes the output
        torch.manual_seed(2)  # (random: a shift equal in every channel would be undone by the LayerNorms)
        den.adapters[0].xattn.out.weight.normal_(0, 0.1)
        moved, _ = den(**x)
        other, _ = den(**{**x, "cond": x["cond"].flip(1)})
    assert (moved - vi).abs().max() > 1e-4 and (other - moved).abs().max() > 1e-4


def test_cosmos_backbone_trains_inside_the_world_model(episodes):
    """A few seeded AdamW steps of the whole world model's loss on a fixed batch (with context noise,
    which Cosmos is told per frame) lower that loss, and the action adapters move off zero."""
    model, store = _with_statistics(_toy_cosmos_config(context_noise=0.2, cond_drop=0.0), episodes)
    win = store.window([(0, 2), (1, 5), (2, 4), (3, 6)])
    opt = torch.optim.AdamW(model.denoiser.parameters(), lr=2e-3)

    def loss() -> torch.Tensor:
        return model.loss(win, torch.Generator().manual_seed(7))["loss"]

    with torch.no_grad():
        before = loss().item()
    for _ in range(8):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = loss().item()
    assert after < 0.8 * before, (before, after)
    assert all(a.xattn.out.weight.abs().max() > 0 for a in model.denoiser.adapters)


def test_cosmos_world_model_round_trips_without_its_directory(tmp_path):
    """save_pretrained records the transformer's config; from_pretrained rebuilds it with the source
    directory gone and computes exactly the same velocities."""
    root = tmp_path / "predict2"
    _save_tiny(root, seed=3)
    model = VideoWorldModel(_toy_cosmos_config(pretrained=root)).eval()
    randomise(model)  # non-zero adapters, so the round trip carries them too
    model.save_pretrained(tmp_path / "ckpt")
    shutil.rmtree(root)
    loaded = VideoWorldModel.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded.cfg.backbone, CosmosConfig)
    assert loaded.cfg.backbone.transformer["num_layers"] == TINY["num_layers"]
    K, F = 2, model.cfg.future
    g = torch.Generator().manual_seed(0)
    from worldmodels.video_model import Window

    win = Window(
        ctx_img=torch.randn(2, K, 1, 4, 8, 8, generator=g),
        ctx_vec=torch.rand(2, K, model.cfg.vector_dim, generator=g),
        actions=torch.randn(2, K + F, 4, generator=g),
        has_action=torch.ones(2, K + F, dtype=torch.bool),
        poses=torch.rand(2, K, 3, generator=g),
        offsets=torch.tensor([[-3, 0, 1, 2]] * 2),
    )
    args = (torch.randn(2, F, 1, 4, 8, 8, generator=g), torch.randn(2, F, 4, 8, 8, generator=g))
    with torch.no_grad():
        a = model.velocity(win, *args, torch.full((2,), 0.4), ctx_sigma=torch.full((2,), 0.1))
        b = loaded.velocity(win, *args, torch.full((2,), 0.4), ctx_sigma=torch.full((2,), 0.1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].abs().max() > 0


def test_cosmos_recipe_validates():
    """The GPU recipe loads with the strict loader and fits a 64x64 dataset (weights are not loaded)."""
    cfg = load_video_config("configs/worldmodels/cosmos_predict2.yaml")
    assert isinstance(cfg.backbone, CosmosConfig) and cfg.backbone.pretrained
    assert cfg.vae.latent_channels == 16  # Predict2's latent width: the transformer takes 16 + 1 -> 16
    resolved = VideoWorldModelConfig.model_validate(
        {**cfg.model_dump(), "cameras": ["front"], "image_size": (64, 64)}
    )
    assert resolved.latent_size == (8, 8)
    assert cfg.train.context_noise > 0 and cfg.train.accelerator == "gpu"


def test_svd_recipe_validates():
    """SVD-XT's GPU recipe loads with the strict loader and fits a 64x64 dataset (weights are not loaded)."""
    from worldmodels.video_config import SVDConfig

    cfg = load_video_config("configs/worldmodels/svd_xt.yaml")
    assert isinstance(cfg.backbone, SVDConfig) and cfg.backbone.pretrained
    resolved = VideoWorldModelConfig.model_validate(
        {**cfg.model_dump(), "cameras": ["side"], "image_size": (64, 64)}
    )
    assert resolved.latent_size == (16, 16) and resolved.vae.latent_channels == 4  # SVD: 4 + 4 -> 4
    assert cfg.train.accelerator == "gpu" and cfg.train.context_noise == 0


def test_cosmos_refusals(tmp_path):
    """One-line refusals: no transformer source, a transformer of the wrong width, a latent its patch does
    not divide, state-only batches; a padding-mask transformer without torchvision."""
    from worldmodels.cosmos import CosmosDenoiser

    with pytest.raises(ValueError, match="needs pretrained"):
        CosmosConfig()
    with pytest.raises(CheckpointError, match="a 3-channel latent needs 4"):
        CosmosDenoiser(CosmosConfig(transformer=TINY), latent_channels=3, views=1, cond_dim=6, max_offset=8)
    with pytest.raises(CheckpointError, match="not a diffusers CosmosTransformer3DModel directory"):
        CosmosDenoiser(
            CosmosConfig(pretrained=str(tmp_path)), latent_channels=4, views=1, cond_dim=6, max_offset=8
        )
    base = _toy_cosmos_config().model_dump()
    with pytest.raises(ValueError, match="not divisible by the Cosmos transformer's patch 3x3"):
        VideoWorldModelConfig.model_validate(
            {
                **base,
                "backbone": {"type": "cosmos_predict2", "transformer": {**TINY, "patch_size": [1, 3, 3]}},
            }
        )
    with pytest.raises(ValueError, match="cosmos_predict2 have no state stream"):
        VideoWorldModelConfig.model_validate({**base, "train": {**base["train"], "state_batch_size": 4}})
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(CheckpointError, match="pip install torchvision"):
            CosmosDenoiser(
                CosmosConfig(transformer={**TINY, "concat_padding_mask": True}),
                latent_channels=4,
                views=1,
                cond_dim=6,
                max_offset=8,
            )
