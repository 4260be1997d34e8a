"""The `device` and `threads` params shared by every stage."""
from __future__ import annotations

import os

import torch

from .params import ParamsError

WORKER_ENV = ("SALBENCH_WORKER", "LOCAL_RANK")
"""Environment variables naming a worker process's index (the first set wins), for ``device: auto``."""


def worker_index() -> int:
    """This process's worker index: ``SALBENCH_WORKER``, else ``LOCAL_RANK`` (torchrun), else 0."""
    for name in WORKER_ENV:
        value = os.environ.get(name)
        if value is not None:
            try:
                return max(0, int(value))
            except ValueError:
                raise ParamsError(f"{name}={value!r} is not a worker index; set it to 0, 1, ...") from None
    return 0


def resolve_device(name: str, worker: int | None = None) -> torch.device:
    """``cpu``, ``cuda[:N]``, or ``auto``: CUDA when available, worker ``w`` (default :func:`worker_index`)
    on GPU ``w mod device_count`` so that worker processes spread over the visible GPUs; asking for CUDA
    without it is an error."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = max(1, torch.cuda.device_count())
        return torch.device("cuda", (worker_index() if worker is None else worker) % count)
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ParamsError(f"device={name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"device={name!r} but CUDA is not available here; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ParamsError(f"device={name!r} but only {torch.cuda.device_count()} GPU(s) are visible; use "
                          f"cuda:0..cuda:{torch.cuda.device_count() - 1} or auto")
    return device


def set_threads(threads: int) -> int:
    """Apply a stage's `threads` param with torch.set_num_threads: N > 0 threads, 0 torch's default (all
    cores). Returns the count in effect. One thread is the default: on a shared 2-core machine more
    threads than free cores made metrics several times slower (README, "Threads and devices")."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ParamsError(f"threads={threads!r} must be a whole number >= 0 (0: torch's default, all cores); "
                          "set it in the stage's params section")
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
