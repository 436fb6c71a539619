"""Strict config loading: YAML -> pydantic model, one-line errors.

Errors name the file, the dotted key path, and for unknown keys the allowed ones, e.g.
`configs/scenes/x.yaml: objects.0.colr: unknown key; allowed: name, shape, size, ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from common.errors import SpecError
from common.io import read_text

M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    """Base for every config model: unknown keys are rejected, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _submodel(annotation: Any, key: Any) -> type[BaseModel] | None:
    """The pydantic model reached from `annotation` through one path element `key`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(key))
        return _unwrap(field.annotation) if field is not None else None
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/list/dict/Union wrappers down to a model class when there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = _unwrap(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for key in loc[:-1]:
        if isinstance(key, int):
            continue
        nxt = _submodel(current, key)
        if nxt is None:
            return []
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line per problem (first problem first), prefixed with the source file."""
    parts = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        path = ".".join(str(x) for x in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            msg = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
            if "input" in e and not isinstance(e["input"], (dict, list)):
                msg += f" (got {e['input']!r})"
        parts.append(f"{path}: {msg}")
    return f"{source}: " + "; ".join(parts)


def validate_model(model: type[M], data: Any, source: str, context: dict[str, Any] | None = None) -> M:
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise SpecError(format_validation_error(e, model, source)) from None


def load_yaml(path: str | Path) -> Any:
    """The YAML in file `path`; SpecError naming the file (and line) when missing or malformed."""
    path = Path(path)
    text = read_text(path, SpecError, "file not found")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: malformed YAML{where}: {problem}") from None


def load_model(model: type[M], path: str | Path, overrides: dict[str, Any] | None = None) -> M:
    """Load a YAML file into `model`; `overrides` are dotted keys (`control.rate_hz=5`)."""
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value, source=str(path))
    return validate_model(model, data, str(path), context={"base_dir": path.parent})


def set_dotted(data: dict[str, Any], key: str, value: Any, source: str = "<overrides>") -> None:
    """Set `key` (dotted; list items by index) in `data`. An index one past a list's end appends
    (`cameras.1={...}` adds a second camera)."""
    node: Any = data
    parts = key.split(".")

    def index(items: list[Any], p: str, appending: bool) -> int:
        if not p.lstrip("-").isdigit() or not 0 <= int(p) <= len(items) - (0 if appending else 1):
            raise SpecError(
                f"{source}: cannot set {key}: {p!r} is not an index of a list of {len(items)} "
                f"(0..{len(items) - 1}{f', or {len(items)} to append' if appending else ''})"
            )
        return int(p)

    for p in parts[:-1]:
        if isinstance(node, list):
            node = node[index(node, p, False)]
        elif isinstance(node, dict):
            node = node.setdefault(p, {})
        else:
            raise SpecError(f"{source}: cannot set {key}: {p!r} is inside a {type(node).__name__}")
    if isinstance(node, list):
        i = index(node, parts[-1], True)
        node.append(value) if i == len(node) else node.__setitem__(i, value)
    elif isinstance(node, dict):
        node[parts[-1]] = value
    else:
        raise SpecError(f"{source}: cannot set {key}: {'.'.join(parts[:-1])} is not a mapping")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`["a.b=3", "c=[1,2]"]` -> {"a.b": 3, "c": [1, 2]} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SpecError(f"override {item!r}: expected KEY=VALUE with a dotted key")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out
