"""The envelope of every benchmark and experiment result: which command, commit and machine wrote it.

    write_result("twin_speed", figures, "benchmarks/results")   # -> benchmarks/results/twin_speed.json

writes `{"command", "commit", "date", "machine", **figures}` atomically, so each result file can be
traced to the command line that produced it and rerun.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common.errors import UsageError
from common.io import atomic_write_text
from common.machine import machine_fingerprint

ENVELOPE_KEYS = ("command", "commit", "date", "machine")
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: str | Path = SOURCE_ROOT) -> str | None:
    """HEAD of the git work tree at `root` (default: the tree this code runs from), with "-dirty" when
    tracked files differ from it; None when `root` is not a git work tree or git is missing."""
    root = Path(root)
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return head.stdout.strip() + ("-dirty" if dirty else "")


def command_line(argv: Sequence[str] | None = None) -> str:
    """`argv` (default: this process's) as a command to type again: `python SCRIPT ARGS`, the script's
    path relative to the working directory when it lies inside it."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return "python"
    script = argv[0]
    try:
        script = str(Path(script).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        pass
    return shlex.join(["python", script, *argv[1:]])


def envelope(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The provenance half of a result: command line, git commit, UTC date, machine fingerprint."""
    return {
        "command": command_line(argv),
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_fingerprint(),
    }


def _jsonable(x: Any) -> Any:
    """numpy arrays and scalars as lists and numbers, paths as strings."""
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def add_result_arguments(parser: argparse.ArgumentParser, results_dir: str | Path, name: str) -> None:
    """`--results-dir` and `--name`: the result goes to RESULTS_DIR/NAME.json (tests point it at a
    temporary directory, so a smoke run never overwrites a committed result)."""
    parser.add_argument(
        "--results-dir", type=Path, default=Path(results_dir), help="directory of the result JSON"
    )
    parser.add_argument("--name", default=name, help="result file name, without .json (default: %(default)s)")


def result_path(name_or_path: str | Path, results_dir: str | Path | None = None) -> Path:
    """RESULTS_DIR/NAME.json, or the path itself when no directory is given."""
    if results_dir is None:
        return Path(name_or_path)
    return Path(results_dir) / f"{name_or_path}.json"


def write_result(
    name_or_path: str | Path,
    figures: Mapping[str, Any],
    results_dir: str | Path | None = None,
    *,
    indent: int = 2,
    quiet: bool = False,
) -> Path:
    """Write `{**envelope(), **figures}` atomically to RESULTS_DIR/NAME.json (or to NAME_OR_PATH when
    `results_dir` is None), print where it came from, and return the path."""
    clash = [k for k in ENVELOPE_KEYS if k in figures]
    if clash:
        raise UsageError(f"result figures may not use the envelope's keys: {', '.join(clash)}")
    path = result_path(name_or_path, results_dir)
    head = envelope()
    atomic_write_text(path, json.dumps({**head, **figures}, indent=indent, default=_jsonable) + "\n")
    if not quiet:
        print_envelope(head, path)
    return path


def print_envelope(head: Mapping[str, Any], path: str | Path) -> None:
    """A small table of the command, commit, date and machine of a result; then the file written."""
    from rich.console import Console
    from rich.table import Table

    machine = head["machine"]
    table = Table(show_header=False, title="result")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("command", head["command"])
    table.add_row("commit", str(head["commit"]))
    table.add_row("date", head["date"])
    table.add_row("machine", f"{machine['cpu']} x{machine['cpu_count']}, GPU: {machine['gpu'] or 'none'}")
    Console().print(table)
    print(f"wrote {path}", flush=True)
