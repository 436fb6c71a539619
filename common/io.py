"""Files that are never half-written, and stable content hashes.

`atomic_write_text` (temp file + fsync + rename), `append_jsonl` (one fsynced line per record),
`fsync_dir`, `stable_hash` (canonical JSON), `files_sha256`, `read_text` / `read_json` (one-line errors).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from common.errors import SpecError


def stable_hash(data: Any) -> str:
    """sha256 over canonical JSON, first 16 hex digits."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_text(path: str | Path, error: type[Exception] = SpecError, missing: str = "not found") -> str:
    """The text of file `path`, or `error` with one line naming it when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {missing}")
    return path.read_text()


def read_json(path: str | Path, error: type[Exception] = SpecError, missing: str = "not found") -> Any:
    """The JSON in `path`, or `error` with one line naming the file (missing / not valid JSON)."""
    path = Path(path)
    text = read_text(path, error, missing)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same directory and rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new entry in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file directly in directory `path`, then the directory itself."""
    path = Path(path)
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(path)


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: a killed writer leaves at most a torn last line."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def files_sha256(paths: list[Path]) -> str:
    """sha256 over the bytes of `paths`, in order (e.g. a checkpoint's config and weights)."""
    h = hashlib.sha256()
    for p in paths:
        with Path(p).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
