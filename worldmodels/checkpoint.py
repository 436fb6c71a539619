"""Checkpoints as `save_pretrained` directories: `config.json` (strict, versioned) + `model.safetensors`.

    save_pretrained(model, config, "runs/wm/checkpoint-1000")
    state, config = load_pretrained("runs/wm/checkpoint-1000", VideoWorldModelConfig)
    model = build(config); model.load_state_dict(state)

No pickles: weights go through safetensors, the config through JSON. A directory is written under
a temporary name and renamed into place, so a crash never leaves half a checkpoint. Loading
checks the files, the config's keys and version, and that the weights are exactly what the
config's model holds (`check_state`) — each failure is one line naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from pydantic import BaseModel, ValidationError

from common.config import format_validation_error
from common.errors import SpecError
from common.io import read_json

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
C = TypeVar("C", bound=BaseModel)


class CheckpointError(SpecError):
    """A checkpoint directory that is missing files, malformed, or does not fit the model."""


def save_pretrained(model: torch.nn.Module, config: BaseModel, path: str | Path) -> Path:
    """Write `path/config.json` + `path/model.safetensors` atomically (a temporary directory renamed)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    (tmp / CONFIG_NAME).write_text(json.dumps(config.model_dump(mode="json"), indent=2))
    if path.exists():
        shutil.rmtree(path)
    os.rename(tmp, path)
    return path


M = TypeVar("M", bound=torch.nn.Module)


def checkpoint_type(path: str | Path) -> str | None:
    """The `type` in a directory's config.json (`bc_cnn`, `td3bc`, `dynamics_ensemble`, ...), None when it has
    none or no readable config."""
    f = Path(path) / CONFIG_NAME
    try:
        kind = json.loads(f.read_text()).get("type") if f.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def load_module(model_cls: Any, config_cls: type[C], path: str | Path, map_location: str = "cpu") -> Any:
    """`model_cls(config)` with a checkpoint's weights, checked to fit exactly, in eval mode: the body of
    every `from_pretrained` that builds its model from its config alone."""
    state, cfg = load_pretrained(path, config_cls, map_location)
    model = model_cls(cfg)
    check_state(model, state, Path(path) / WEIGHTS_NAME)
    model.load_state_dict(state)
    return model.eval()


def load_config(path: str | Path, config_cls: type[C]) -> C:
    """The validated config of a checkpoint directory (an older format version is upgraded by the
    config class itself, or refused in one line)."""
    f = Path(path) / CONFIG_NAME
    if not Path(path).is_dir():
        raise CheckpointError(f"{path}: not a checkpoint directory")
    data = read_json(f, CheckpointError, f"missing (a checkpoint holds {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        return config_cls.model_validate(data)
    except ValidationError as e:
        raise CheckpointError(format_validation_error(e, config_cls, str(f))) from None


def load_pretrained(
    path: str | Path, config_cls: type[C], map_location: str = "cpu"
) -> tuple[dict[str, torch.Tensor], C]:
    """(state dict, config) of a checkpoint directory."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = load_config(path, config_cls)
    w = Path(path) / WEIGHTS_NAME
    if not w.exists():
        raise CheckpointError(f"{w}: missing")
    try:
        state = load_file(str(w), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w}: unreadable safetensors ({str(e).splitlines()[0]})") from None
    return state, config


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise one line when `state` does not hold exactly `model`'s tensors with their shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not fit the model (missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: {k} has shape {list(state[k].shape)}, the model expects {list(v.shape)}"
            )


def warm_start(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> list[str]:
    """Load `state` into `model` where every tensor fits; a weight whose last (input-feature) dimension grew
    keeps the old columns and gets zeros for the new ones, so new inputs change nothing until training
    moves them. A model with `adapt_warm_start(state)` first adapts the checkpoint's weights (a video world
    model seeing more camera views). Returns the names of the grown tensors; raises one line on anything
    else that differs."""
    adapt = getattr(model, "adapt_warm_start", None)
    if adapt is not None:
        adapted = adapt(state)
        grown_first = [k for k in adapted if adapted[k] is not state.get(k)]
        state = adapted
    else:
        grown_first = []
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: cannot warm-start this model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    grown, merged = [], {}
    for k, v in own.items():
        old = state[k]
        if old.shape == v.shape:
            merged[k] = old
        elif old.ndim == v.ndim >= 2 and old.shape[:-1] == v.shape[:-1] and old.shape[-1] < v.shape[-1]:
            new = torch.zeros_like(v)
            new[..., : old.shape[-1]] = old
            merged[k] = new
            grown.append(k)
        else:
            raise CheckpointError(
                f"{source}: {k} has shape {list(old.shape)}, the model expects {list(v.shape)}"
            )
    model.load_state_dict(merged)
    return grown_first + grown


class DiffusersModel(Protocol):
    """A diffusers model class (`AutoencoderKL`, `UNetSpatioTemporalConditionModel`, ...)."""

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> Any: ...

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Any: ...

    @classmethod
    def load_config(cls, path: str, **kwargs: Any) -> Any: ...


def load_diffusers_model(cls: type[DiffusersModel], path: Path, weights: bool, what: str) -> Any:
    """A diffusers model from a local directory (never a hub): with its weights, or only its
    architecture (`weights=False`: the weights come from our own safetensors next). `what` names the
    config key in the error."""
    if not (path / "config.json").exists():
        raise CheckpointError(f"{what} {path}: not a diffusers {cls.__name__} directory (no config.json)")
    if weights:
        return cls.from_pretrained(str(path), local_files_only=True)
    return cls.from_config(cls.load_config(str(path)))
