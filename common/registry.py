"""Name -> factory registries. Registering a name imports nothing heavy: entries may be given as
`"module.path:attr"` strings that are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from common.errors import SpecError

T = TypeVar("T")


def import_path(path: str) -> Any:
    """The object at `"package.module:attr.attr"`, importing the module (how registries and the worker
    pool name factories without importing them)."""
    module, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, obj: T | str | None = None, description: str = "") -> Any:
        """`reg.register("n", obj)` or as a decorator `@reg.register("n")`."""

        def add(o: T | str) -> T | str:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = o
            doc = description or (getattr(o, "__doc__", None) or "").strip().splitlines()
            self._descriptions[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise SpecError(f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._entries))}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = import_path(entry)
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def description(self, name: str) -> str:
        self.get(name)
        return self._descriptions.get(name, "")

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def items(self) -> list[tuple[str, T]]:
        return [(n, self.get(n)) for n in self.names()]
