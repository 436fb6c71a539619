"""save_pretrained directories: exact round trip, one-line errors for malformed checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from common.config import Strict
from worldmodels.checkpoint import CheckpointError, check_state, load_pretrained, save_pretrained


class TinyConfig(Strict):
    width: int = 8
    depth: int = 2


def build(cfg: TinyConfig) -> torch.nn.Module:
    return torch.nn.Sequential(*[torch.nn.Linear(cfg.width, cfg.width) for _ in range(cfg.depth)])


def test_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    cfg = TinyConfig(width=6, depth=3)
    model = build(cfg)
    save_pretrained(model, cfg, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    state, cfg2 = load_pretrained(tmp_path / "ckpt", TinyConfig)
    assert cfg2 == cfg
    again = build(cfg2)
    check_state(again, state, tmp_path / "ckpt")
    again.load_state_dict(state)
    x = torch.randn(4, 6)
    assert torch.equal(model(x), again(x))
    save_pretrained(again, cfg2, tmp_path / "ckpt")  # overwrite in place
    assert not list(tmp_path.glob(".ckpt.tmp-*"))


def test_malformed_checkpoints_give_one_line(tmp_path):
    cfg = TinyConfig()
    save_pretrained(build(cfg), cfg, tmp_path / "c")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_pretrained(tmp_path / "nope", TinyConfig)
    (tmp_path / "c" / "config.json").write_text(json.dumps({"width": 8, "depht": 2}))
    with pytest.raises(
        CheckpointError, match=r"c/config\.json: depht: unknown key; allowed: width, depth"
    ) as e:
        load_pretrained(tmp_path / "c", TinyConfig)
    assert "\n" not in str(e.value)
    (tmp_path / "c" / "config.json").write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_pretrained(tmp_path / "c", TinyConfig)
    (tmp_path / "c" / "config.json").write_text(json.dumps({"width": 8, "depth": 2}))
    (tmp_path / "c" / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable"):
        load_pretrained(tmp_path / "c", TinyConfig)
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_pretrained(tmp_path / "c", TinyConfig)
    save_pretrained(build(TinyConfig(width=4)), TinyConfig(width=4), tmp_path / "d")
    state, _ = load_pretrained(tmp_path / "d", TinyConfig)
    with pytest.raises(CheckpointError, match=r"0\.weight has shape \[4, 4\], the model expects \[8, 8\]"):
        check_state(build(TinyConfig()), state, tmp_path / "d")
    with pytest.raises(CheckpointError, match="missing"):
        check_state(build(TinyConfig(width=4, depth=3)), state, tmp_path / "d")


def test_diffusers_directory_without_config_is_one_line(tmp_path):
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    from worldmodels.checkpoint import load_diffusers_model

    with pytest.raises(CheckpointError, match=r"vae.pretrained .*: not a diffusers AutoencoderKL directory"):
        load_diffusers_model(AutoencoderKL, tmp_path, True, "vae.pretrained")
    AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=2).save_pretrained(tmp_path)
    arch = load_diffusers_model(AutoencoderKL, tmp_path, False, "vae.pretrained")
    loaded = load_diffusers_model(AutoencoderKL, tmp_path, True, "vae.pretrained")
    assert list(arch.config.block_out_channels) == list(loaded.config.block_out_channels) == [8]
