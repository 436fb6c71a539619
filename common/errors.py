"""Errors raised at DreamTwin's boundaries: one line, naming the file/field and what was expected."""

from __future__ import annotations


class DreamTwinError(Exception):
    """Base class for every error DreamTwin raises on purpose (CLIs print them as one line)."""


class SpecError(DreamTwinError, ValueError):
    """A spec/config file is malformed: unknown key, wrong type, missing file, bad value."""


class ActionError(DreamTwinError, ValueError):
    """An action chunk has the wrong shape, dtype or contains NaN/inf."""


class UsageError(DreamTwinError, RuntimeError):
    """An API was called out of order or with arguments that contradict each other (e.g. stepping a
    world after its episode ended); bad spec/config files raise `SpecError` instead."""
