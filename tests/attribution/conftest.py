"""Fixtures for the attribution tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand((4, 3, 32, 32), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def targets() -> torch.Tensor:
    return torch.tensor([0, 3, 1, 4])
