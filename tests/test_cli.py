"""The `dreamtwin` console command, run as a user would (subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PUSH, ROOT


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dreamtwin", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


@pytest.mark.parametrize("group", ["scenes", "eval", "datagen", "train", "policies", "serve"])
def test_every_group_has_help_with_an_example(group):
    r = _cli(group, "--help")
    assert r.returncode == 0, r.stderr
    assert "Example" in r.stdout


def test_policies_list():
    r = _cli("policies", "list")
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    names = [ln.split()[0] for ln in lines]
    assert {"expert", "image_expert", "image_mild", "image_medium", "image_severe", "random"} <= set(names)
    assert all(len(ln.split(None, 1)) == 2 for ln in lines)  # every name has a description


def test_validate_reports_a_bad_spec_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        PUSH.read_text().replace("  friction: 0.6\nobjects:", "  friction: 0.6\n  legs: 4\nobjects:")
    )
    r = _cli("scenes", "validate", str(bad), "--no-build")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "table.legs: unknown key" in r.stderr
    assert "Traceback" not in r.stderr
    ok = _cli("scenes", "validate", str(PUSH), "--no-build")
    assert ok.returncode == 0 and "spec ok" in ok.stdout


def test_eval_rejects_unknown_policy_in_one_line(tmp_path):
    r = _cli("eval", "--scene", str(PUSH), "--policies", "expert,nope", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown policy 'nope'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.sim
@pytest.mark.slow
def test_preview_writes_one_png_per_camera_and_a_sheet(tmp_path, push_twin):
    """In-process (Genesis is already initialised by the session's twin): a subprocess would pay
    the kernel compilation again."""
    from PIL import Image
    from typer.testing import CliRunner

    from dreamtwin.cli import app

    r = CliRunner().invoke(app, ["scenes", "preview", str(PUSH), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "side.png").size == (128, 128)
    assert Image.open(tmp_path / "sheet.png").size == (256, 128)  # Genesis | splat
    assert sorted(p.name for p in Path(tmp_path).glob("*.png")) == ["sheet.png", "side.png"]


def test_serve_policy_until_interrupted():
    """`dreamtwin serve policy` on a free loopback port, driven by openpi's own client, then Ctrl-C."""
    import os
    import re
    import signal

    import numpy as np
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dreamtwin",
            "serve",
            "policy",
            "random",
            "--port",
            "0",
            "--api-key-env",
            "DT_KEY",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "DT_KEY": "k1", "COLUMNS": "200"},
        # as from a terminal: Ctrl-C is delivered even when this test process runs with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = proc.stdout.readline()
        url = re.search(r"ws://127\.0\.0\.1:\d+", line)
        assert url, line
        client = WebsocketClientPolicy(url.group(0), api_key="k1")
        obs = {
            "observation/images/side": np.zeros((128, 128, 3), np.uint8),
            "observation/state": np.zeros(11, np.float32),
        }
        assert client.infer(obs)["actions"].shape == (1, 4)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_serve_refuses_a_missing_api_key_in_one_line():
    r = _cli("serve", "policy", "random", "--port", "0", "--api-key-env", "DT_UNSET_KEY_VAR")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --api-key-env: environment variable DT_UNSET_KEY_VAR is not set"


def test_datagen_imagine_checks_its_world_in_one_line(tmp_path):
    r = _cli(
        "datagen",
        "imagine",
        "--world",
        "dream:x",
        "--policy",
        "bc_mid",
        "--episodes",
        "1",
        "--out",
        str(tmp_path / "d"),
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "world" in r.stderr and "worldmodel:PATH" in r.stderr
