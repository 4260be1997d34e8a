"""Where a stage's independent tasks run: in this process (the default; Ray is never imported) or as Ray tasks,
on a local Ray instance of ``workers`` processes or on an existing cluster (``ray: {address: ...}``).

An :class:`Executor` maps a task function over work items, ``fn(shared, item) -> result``, and returns the
results in the items' order. ``shared`` (e.g. the model) goes to Ray's object store once; every item is one
Ray task, retried ``max_retries`` times when its worker process dies. Tasks write their files themselves,
so on a cluster of several machines every worker must see the stage's output directory (a shared
filesystem); the caller assembles what they return.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, TypeVar

from .errors import SalbenchError

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

INSTALL = "pip install 'salbench[ray]'"


class Executor(Protocol):
    """Runs ``fn(shared, item)`` for every item; ``parallel``: whether items run in other processes at once
    (callers then split their work finer)."""

    parallel: bool

    def map(self, fn: Callable[[S, T], R], shared: S, items: Sequence[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


class InProcess:
    """Items one after the other in this process, lazily (one item's result is held at a time)."""

    parallel = False

    def map(self, fn: Callable[[S, T], R], shared: S, items: Sequence[T]) -> Iterator[R]:
        return (fn(shared, item) for item in items)

    def close(self) -> None:
        pass


@dataclass
class RayExecutor:
    """Items as Ray tasks: a local instance of ``workers`` CPUs, or the cluster at ``address`` (``auto``: the
    one ``ray start`` made on this machine). Each task takes ``cpus_per_task`` CPUs and ``gpus_per_task``
    GPUs (Ray then gives it its own GPU through ``CUDA_VISIBLE_DEVICES``)."""

    workers: int = 1
    address: str | None = None
    max_retries: int = 3
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    parallel = True

    def __post_init__(self) -> None:
        try:
            import ray
        except ImportError:
            raise SalbenchError(f"Ray is not installed, but attribute.workers or attribute.ray asks for it; "
                                f"run `{INSTALL}`, or set workers: 0 and drop the ray key to run in-process") from None
        self._ray, self._started = ray, False
        if ray.is_initialized():
            return
        try:
            if self.address is None:
                # "local": a new instance even where `ray start` or RAY_ADDRESS names another
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, logging_level="WARNING",
                         log_to_driver=False)
            else:
                _check_reachable(self.address)
                ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise SalbenchError(f"cannot start or join {where}: {e}; check attribute.ray.address (e.g. "
                                "127.0.0.1:6379 of `ray start --head --port 6379`) or set workers instead") from None
        self._started = True

    def map(self, fn: Callable[[S, T], R], shared: S, items: Sequence[T]) -> Iterator[R]:
        ray = self._ray
        task = ray.remote(max_retries=self.max_retries, num_cpus=self.cpus_per_task,
                          num_gpus=self.gpus_per_task)(fn)
        shared_ref = ray.put(shared)
        refs = [task.remote(shared_ref, item) for item in items]
        try:
            return iter(ray.get(refs))
        except BaseException as e:
            # cancel what still runs, only that: cancelling a task whose reply is being processed aborts the driver
            # in Ray 2.60 ("Check failed: it != submissible_tasks_.end()", ray-project/ray#54527)
            running = ray.wait(refs, num_returns=len(refs), timeout=0)[1]
            for ref in running:
                ray.cancel(ref, force=True)
            if isinstance(e, ray.exceptions.RayTaskError):
                raise (e.cause if isinstance(e.cause, BaseException) else e) from None
            if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
                raise SalbenchError(f"a Ray task's worker died {self.max_retries + 1} times ({type(e).__name__}: "
                                    "out of memory or killed?); raise attribute.ray.max_retries, lower batch_size "
                                    "or shard_size, or run in-process (workers: 0)") from None
            raise

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def _check_reachable(address: str) -> None:
    """Fail fast on a ``host:port`` nothing listens on (Ray itself retries for minutes); other forms (``auto``,
    ``ray://...``) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise SalbenchError(f"attribute.ray.address: nothing answers at {address!r} ({e}); start the head with "
                            f"`ray start --head --port {port}` there, or fix the address") from None


def executor(workers: int = 0, ray: Mapping[str, Any] | None = None, cuda: bool = False) -> Executor:
    """The executor a stage's params ask for: ``workers`` > 1 starts a local Ray instance of that many CPUs,
    ``ray: {address, max_retries, cpus_per_task, gpus_per_task}`` joins a cluster (or tunes the local one);
    neither (workers 0 or 1, no ray key) runs in this process without importing Ray. ``cuda``: the stage
    runs on a GPU, so each task takes one unless ``gpus_per_task`` says otherwise."""
    use_ray = workers > 1 or ray is not None
    ray = {k: v for k, v in (ray or {}).items() if v is not None}
    if workers > 1 and ray.get("address"):
        raise SalbenchError(f"attribute.workers={workers} starts a local Ray instance but attribute.ray.address="
                            f"{ray['address']!r} joins a cluster; set one of them")
    if not use_ray:
        return InProcess()
    if cuda:
        ray.setdefault("gpus_per_task", 1.0)
    return RayExecutor(workers=max(workers, 1), **ray)
