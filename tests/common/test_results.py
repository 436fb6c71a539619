"""The result envelope: command, commit, date and machine ahead of the figures, written atomically."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest

from common.errors import UsageError
from common.results import ENVELOPE_KEYS, command_line, git_commit, result_path, write_result


def test_write_result_puts_the_envelope_before_the_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bench.py"), "--steps", "3", "a b"])
    path = write_result("bench", {"fps": np.float32(2.5), "rows": np.arange(3)}, tmp_path / "results")
    assert path == tmp_path / "results/bench.json"
    r = json.loads(path.read_text())
    assert list(r) == [*ENVELOPE_KEYS, "fps", "rows"]
    assert r["command"] == "python bench.py --steps 3 'a b'"
    assert r["fps"] == 2.5 and r["rows"] == [0, 1, 2]
    assert datetime.fromisoformat(r["date"]).utcoffset().total_seconds() == 0
    assert r["machine"]["cpu_count"] >= 1 and "python" in r["machine"]["versions"]
    assert f"wrote {path}" in capsys.readouterr().out


def test_figures_may_not_shadow_the_envelope(tmp_path):
    with pytest.raises(UsageError, match="machine"):
        write_result(tmp_path / "x.json", {"machine": "mine"})
    assert not (tmp_path / "x.json").exists()


def test_commit_is_none_outside_git_and_marks_a_dirty_tree(tmp_path):
    assert git_commit(tmp_path) is None
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f").write_text("1")
    subprocess.run([*git, "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "f").write_text("2")
    assert git_commit(tmp_path) == head + "-dirty"


def test_paths():
    assert result_path("x", "out") == result_path("out/x.json")
    assert command_line(["/elsewhere/s.py"]) == "python /elsewhere/s.py"


def test_native_bfloat16_reads_the_cpu_features():
    """bfloat16 matrix products are native with AVX-512 BF16, AMX or Arm's BF16, emulated otherwise; the
    machine fingerprint records the features that decide it."""
    from common.machine import ISA_FLAGS, cpu_info, native_bfloat16

    assert not native_bfloat16(["sse4_2", "avx", "avx2", "fma"])  # an AVX2-only x86
    assert not native_bfloat16(["avx512f", "avx512_vnni"])  # AVX-512 without its bfloat16 extension
    assert native_bfloat16(["avx512f", "avx512_bf16"]) and native_bfloat16(["amx_tile", "amx_bf16"])
    assert native_bfloat16(["asimd", "bf16"])
    assert native_bfloat16() == native_bfloat16(cpu_info()[1])
    assert {"avx512_bf16", "amx_bf16", "bf16"} <= set(ISA_FLAGS)
