"""Importing the light packages must not load Genesis, open3d or gsplat."""

from __future__ import annotations

import subprocess
import sys


def test_light_imports():
    code = (
        "import sys, worldmodels, policy_eval, datagen, scenes, dreamtwin.cli;"
        "import datagen.rollouts, datagen.lerobot, datagen.video, scenes.randomization;"
        "heavy = [m for m in ('genesis', 'open3d', 'gsplat', 'torch') if m in sys.modules];"
        "print(heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_world_model_modules_do_not_load_the_simulator_or_renderers():
    code = (
        "import sys, worldmodels.video_world, worldmodels.training, worldmodels.evaluation, worldmodels.svd;"
        "heavy = [m for m in ('genesis', 'open3d', 'gsplat', 'lightning') if m in sys.modules];"
        "print(heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
