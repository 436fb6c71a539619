"""Every benchmark and experiment script runs from anywhere (`python benchmarks/x.py` and
`python -m benchmarks.x`), imports only the installed packages, writes through `common.results`, and
has a smoke test."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SCRIPTS = sorted(
    p.relative_to(ROOT).as_posix()
    for d in ("benchmarks", "experiments")
    for p in (ROOT / d).glob("*.py")
    if p.name != "__init__.py"
)
# smoke tests run a script through `run_script("<package>.<script>", ...)` in any of these files
SMOKE_TESTS = sorted(p for p in (ROOT / "tests/benchmarks").glob("test_*.py") if p.name != "test_scripts.py")
PATH_EDIT = re.compile(r"sys\.path\.(insert|append)\(")
PROJECT = ("common", "scenes", "worldmodels", "policy_eval", "datagen", "dreamtwin")


def _imports(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    return names


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_imports_only_installed_packages_and_writes_the_envelope(script):
    text = (ROOT / script).read_text()
    assert "sys.path" not in text
    tops = {name.split(".")[0] for name in _imports(script)}
    assert not tops & {"benchmarks", "experiments", "tests"}, "a script may import only installed packages"
    assert "common.results" in _imports(script) and "write_result(" in text


def test_no_sys_path_edits_anywhere():
    sources = [p for d in (*PROJECT, "benchmarks", "experiments", "tests") for p in (ROOT / d).rglob("*.py")]
    assert [p for p in sources if PATH_EDIT.search(p.read_text())] == []


def test_every_script_has_a_smoke_test():
    tested = "".join(t.read_text() for t in SMOKE_TESTS)
    modules = [s.removesuffix(".py").replace("/", ".") for s in SCRIPTS]
    assert [m for m in modules if f'"{m}"' not in tested] == []


@pytest.mark.parametrize("form", ["path", "module"])
def test_scripts_run_as_a_file_from_anywhere_and_as_a_module(form, tmp_path):
    script = "benchmarks/twin_speed.py"
    if form == "path":  # outside the repository: only the installed packages are importable
        cmd, cwd = [sys.executable, str(ROOT / script), "--help"], tmp_path
    else:
        cmd, cwd = [sys.executable, "-m", "benchmarks.twin_speed", "--help"], ROOT
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--results-dir" in r.stdout
