"""The one worker pool: local processes, in-process, Ray; errors name the missing extra."""

from __future__ import annotations

import os

import pytest

from common.errors import DreamTwinError
from common.pool import WorkerPool


class Worker:
    """A stand-in for a world: built once per worker from plain data, called per task."""

    def __init__(self, offset: int) -> None:
        self.offset, self.pid, self.calls = offset, os.getpid(), 0

    def run(self, x: int) -> tuple[int, int, int, str]:
        self.calls += 1
        return x + self.offset, self.pid, self.calls, os.environ.get("OMP_NUM_THREADS", "")


def test_in_process_pool_builds_one_object_and_keeps_it():
    with WorkerPool("tests.common.test_pool:Worker", (10,), workers=1) as pool:
        out = list(pool.map_unordered("run", [1, 2, 3]))
    assert [o[0] for o in out] == [11, 12, 13]
    assert {o[1] for o in out} == {os.getpid()} and [o[2] for o in out] == [1, 2, 3]


def test_given_local_object_is_used():
    mine = Worker(100)
    with WorkerPool("tests.common.test_pool:Worker", (0,), workers=1, local=mine) as pool:
        assert [o[0] for o in pool.map_unordered("run", [1])] == [101]
    assert mine.calls == 1


def test_process_pool_spreads_tasks_and_restores_thread_settings():
    before = os.environ.get("OMP_NUM_THREADS")
    with WorkerPool("tests.common.test_pool:Worker", (1,), workers=2) as pool:
        out = list(pool.map_unordered("run", list(range(8))))
    assert sorted(o[0] for o in out) == list(range(1, 9))
    assert os.getpid() not in {o[1] for o in out}
    assert {o[3] for o in out} == {str(max(1, (os.cpu_count() or 1) // 2))}
    assert os.environ.get("OMP_NUM_THREADS") == before


@pytest.mark.slow
def test_ray_actors_give_the_same_results():
    pytest.importorskip("ray")
    with WorkerPool("tests.common.test_pool:Worker", (1,), workers=2, backend="ray") as pool:
        out = sorted(o[0] for o in pool.map_unordered("run", range(5)))
    assert out == [t + 1 for t in range(5)]


def test_bad_worker_count_and_missing_ray_are_one_line_errors(monkeypatch):
    import builtins

    with pytest.raises(DreamTwinError, match="workers must be >= 1"):
        WorkerPool("tests.common.test_pool:Worker", (0,), workers=0)
    real = builtins.__import__

    def no_ray(name, *a, **kw):
        if name == "ray":
            raise ImportError("no ray")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with (
        pytest.raises(DreamTwinError, match=r"distributed") as e,
        WorkerPool("tests.common.test_pool:Worker", (0,), workers=2, backend="ray") as pool,
    ):
        list(pool.map_unordered("run", [1]))
    assert "\n" not in str(e.value)
