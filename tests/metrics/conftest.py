"""Fixtures for the metric tests."""

from __future__ import annotations

import warnings

import pytest
import torch


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def quantus():
    """Quantus (a test dependency), with its parameterisation warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import quantus

        yield quantus
