"""The datagen tests' session dataset (`small_dataset`) and its job live in tests/conftest.py, shared
with the benchmark smoke tests."""

from __future__ import annotations

from tests.conftest import RANDOMIZE, job_dict

__all__ = ["RANDOMIZE", "job_dict"]
