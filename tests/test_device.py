"""The `device` and `threads` params: device selection per worker (with a fake GPU count), thread counts."""
from __future__ import annotations

import pytest
import torch

from salbench.device import resolve_device, set_threads, worker_index
from salbench.params import ParamsError


@pytest.fixture
def gpus(monkeypatch):
    """Pretend ``n`` CUDA devices are visible."""
    def fake(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return fake


def test_auto_spreads_workers_over_the_gpus(gpus, monkeypatch) -> None:
    for name in ("SALBENCH_WORKER", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    gpus(0)
    assert resolve_device("auto") == torch.device("cpu")
    gpus(3)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert [resolve_device("auto", worker=w).index for w in range(5)] == [0, 1, 2, 0, 1]
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("auto") == torch.device("cuda", 2)
    monkeypatch.setenv("SALBENCH_WORKER", "4")  # wins over LOCAL_RANK
    assert worker_index() == 4 and resolve_device("auto") == torch.device("cuda", 1)
    monkeypatch.setenv("SALBENCH_WORKER", "x")
    with pytest.raises(ParamsError, match="SALBENCH_WORKER"):
        resolve_device("auto")


def test_explicit_devices_are_checked(gpus) -> None:
    gpus(2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1) and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ParamsError, match="only 2 GPU"):
        resolve_device("cuda:2")
    gpus(0)
    with pytest.raises(ParamsError, match="CUDA is not available"):
        resolve_device("cuda")


def test_threads_are_applied_and_validated() -> None:
    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
        assert set_threads(0) == 2  # 0 keeps torch's default
        assert set_threads(1) == 1
        for bad in (-1, 1.5, "2", True):
            with pytest.raises(ParamsError, match="threads"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)
