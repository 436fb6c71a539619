"""Running a benchmark or experiment script in-process at a tiny size, and checking its result file."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from common.results import ENVELOPE_KEYS
from tests.benchmarks.tiny import train_tiny_model
from tests.conftest import ROOT


def run_script(module: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m MODULE ARGS`, in this process (so it shares the session's Genesis and torch)."""
    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [sys.modules[module].__file__, *args])
    main()


def read_checked(path: Path, script: str, args: list[str]) -> dict[str, Any]:
    """The result at `path`, after checking its envelope: the command that wrote it, a commit (or None
    outside git), a UTC date and the machine."""
    result = json.loads(path.read_text())
    assert list(result)[: len(ENVELOPE_KEYS)] == list(ENVELOPE_KEYS)
    assert result["command"].startswith("python ") and script in result["command"]
    assert result["command"].endswith(shlex.join(args))
    assert result["commit"] is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", result["commit"])
    assert datetime.fromisoformat(result["date"]).utcoffset() is not None
    assert {"cpu", "cpu_count", "gpu", "versions"} <= set(result["machine"])
    return result


@pytest.fixture(scope="session")
def tiny_world_model(small_dataset, tmp_path_factory):
    """(dataset, model directory, recipe YAML): tests/benchmarks/tiny.py's recipe trained for a few steps
    on the session's small dataset (its last 3 episodes held out)."""
    data = small_dataset[0]
    out = tmp_path_factory.mktemp("tiny_world_model")
    model = train_tiny_model(data, out)
    return data, model, out / "recipe.yaml"


@pytest.fixture(scope="session")
def tiny_pgd_models(small_dataset, tmp_path_factory):
    """(dataset, trajectory diffusion model, TD3+BC checkpoint), each trained for a few steps on the
    session's small dataset."""
    from datagen.windows import load_episodes
    from policy_eval.policies.td3bc import dataset_scene, load_td3bc_config, train_td3bc, transitions
    from worldmodels.trajectory import TrajectoryConfig, train_trajectory

    data = small_dataset[0]
    out = tmp_path_factory.mktemp("tiny_pgd")
    episodes, meta = load_episodes(data, frames=False)
    train = {"steps": 20, "batch_size": 16, "holdout_episodes": 2, "val_every": 10}
    cfg = TrajectoryConfig.model_validate(
        {"horizon": 8, "dim": 16, "depth": 1, "heads": 2, "sampler_steps": 3, "history": True, "train": train}
    )
    model = train_trajectory(cfg, episodes, meta, out / "traj", progress=False)
    pcfg = load_td3bc_config(ROOT / "configs/policies/td3bc.yaml", {"steps": 20, "hidden": 16, "save_at": []})
    (policy,) = train_td3bc(
        pcfg, transitions(episodes, dataset_scene(meta, data)), out / "td3bc", progress=False
    )
    return data, model, policy
