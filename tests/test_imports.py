"""Importing the light packages must not load Genesis, open3d or gsplat."""

from __future__ import annotations

import subprocess
import sys


def _heavy_modules_after(imports: str, heavy: tuple[str, ...]) -> list[str]:
    """Which of `heavy` a fresh interpreter has loaded after `import <imports>`."""
    code = f"import sys, {imports}; print([m for m in {heavy!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return eval(r.stdout.strip())  # a printed list of str


def test_light_imports():
    imports = (
        "worldmodels, policy_eval, datagen, scenes, dreamtwin.cli, datagen.rollouts, datagen.lerobot, "
        "common, common.video, common.pool, common.config, common.io, common.types, scenes.randomization"
    )
    assert _heavy_modules_after(imports, ("genesis", "open3d", "gsplat", "torch")) == []


def test_world_model_modules_do_not_load_the_simulator_or_renderers():
    imports = "worldmodels.video_world, worldmodels.training, worldmodels.evaluation, worldmodels.svd"
    assert _heavy_modules_after(imports, ("genesis", "open3d", "gsplat", "lightning")) == []
