"""Fan tasks out to worker processes or Ray actors, each holding one heavy object (a world).

    with WorkerPool("policy_eval.evaluate:Evaluator.from_json", (cfg_json,), workers=2) as pool:
        for result in pool.map_unordered("run", tasks):
            ...

`factory` is a "module:attr" path (importable in a fresh process) called with `args` (plain data)
once per worker; every task is passed to the object's `method`. With one local worker the object
lives in this process (or is the `local` object given). Local workers are spawned processes with
one BLAS/OpenMP thread each share of the cores, and exit when the parent dies (a SIGKILLed job leaves
no orphans running on). Ray actors (`backend="ray"`) use a running cluster at `address` or start a
local Ray with `workers` CPUs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from common.errors import DreamTwinError
from common.registry import import_path

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_OBJECT: Any = None


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)  # the job was killed: stop instead of running on as an orphan


def _init_worker(factory: str, args: tuple[Any, ...], parent: int) -> None:
    global _OBJECT
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    _OBJECT = import_path(factory)(*args)


def _call(method: str, task: Any) -> Any:
    return getattr(_OBJECT, method)(task)


class _Actor:
    def __init__(self, factory: str, args: tuple[Any, ...]) -> None:
        self.obj = import_path(factory)(*args)

    def call(self, method: str, task: Any) -> Any:
        return getattr(self.obj, method)(task)


class WorkerPool:
    def __init__(
        self,
        factory: str,
        args: tuple[Any, ...],
        *,
        workers: int = 1,
        backend: Literal["local", "ray"] = "local",
        address: str | None = None,
        local: Any = None,
    ) -> None:
        if workers < 1:
            raise DreamTwinError(f"workers must be >= 1, got {workers}")
        self.factory, self.args, self.workers, self.backend, self.address = (
            factory,
            args,
            workers,
            backend,
            address,
        )
        self._local = local
        self._pool: Any = None
        self._actors: list[Any] = []
        self._ray: Any = None
        self._ray_started = False
        self._env_before: dict[str, str | None] = {}

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for a in self._actors:
            self._ray.kill(a)
        if self._ray_started:
            self._ray.shutdown()
        for k, v in self._env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def map_unordered(self, method: str, tasks: Iterable[Any]) -> Iterator[Any]:
        tasks = list(tasks)
        if not tasks:
            return
        if self.backend == "ray":
            yield from self._ray_map(method, tasks)
        elif self.workers == 1:
            if self._local is None:
                self._local = import_path(self.factory)(*self.args)
            for t in tasks:
                yield getattr(self._local, method)(t)
        else:
            yield from self._process_map(method, tasks)

    def _process_map(self, method: str, tasks: list[Any]) -> Iterator[Any]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if self._pool is None:
            # one BLAS/OpenMP thread pool per core, not per core per worker: oversubscribed spinning
            # BLAS threads slow everything down when workers share the cores
            threads = str(max(1, (os.cpu_count() or 1) // self.workers))
            self._env_before = {k: os.environ.get(k) for k in _THREAD_VARS}
            os.environ.update({k: threads for k in _THREAD_VARS})
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.factory, self.args, os.getpid()),
            )
        futures = [self._pool.submit(_call, method, t) for t in tasks]
        for f in as_completed(futures):
            yield f.result()

    def _ray_map(self, method: str, tasks: list[Any]) -> Iterator[Any]:
        if self._ray is None:
            try:
                import ray
            except ImportError:
                raise DreamTwinError(
                    "backend 'ray' needs Ray: install the `distributed` extra (pip install 'dreamtwin[distributed]')"
                ) from None
            self._ray = ray
            if not ray.is_initialized():
                kwargs: dict[str, Any] = (
                    {"address": self.address} if self.address else {"num_cpus": self.workers}
                )
                ray.init(log_to_driver=False, include_dashboard=False, **kwargs)
                self._ray_started = True
            actor = ray.remote(num_cpus=1)(_Actor)
            self._actors = [actor.remote(self.factory, self.args) for _ in range(self.workers)]
        from ray.util import ActorPool

        pool = ActorPool(self._actors)
        yield from pool.map_unordered(lambda a, t: a.call.remote(method, t), tasks)
