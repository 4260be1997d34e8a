"""Tiny rendered presence scenes shared by the concept tests (64 px, a few images)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
from helpers import PRESENCE

from salbench.render import World, build_task, render_splits
from salbench.render.tasks import Presence

sys.path.insert(0, str(Path(__file__).parent))  # shared test modules (depict_synthetic.py) under --import-mode=importlib

WORLD = World(resolution=64, max_objects=5, min_pixels=12)
# Concepts that are colours only, so a colour detector is an exact concept detector on images.
COLOURS = {
    "concepts": {c: {"color": c.split("_")[0]} for c in ("red_object", "blue_object", "green_object", "yellow_object")},
    "rule": "red_object and not blue_object",
    "spurious": {"concept": "green_object", "p": 0.9, "splits": ["train"]},
}


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors on a shared CPU: a second intra-op thread only adds synchronisation (10x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def world() -> World:
    return WORLD


@pytest.fixture(scope="session")
def presence_params() -> dict:
    return PRESENCE


@pytest.fixture(scope="session")
def task() -> Presence:
    return build_task("presence", WORLD, PRESENCE)


@pytest.fixture(scope="session")
def colour_task() -> Presence:
    return build_task("presence", WORLD, COLOURS)


@pytest.fixture(scope="session")
def scenes() -> dict:
    """{split: (arrays, records)} of 12 train and 12 test presence scenes."""
    return {s: (a, r) for s, a, r in render_splits(WORLD, "presence", PRESENCE, {"train": 12, "test": 12}, seed=5)}


@pytest.fixture(scope="session")
def colour_scenes() -> tuple[dict, list]:
    """(arrays, records) of 16 test scenes of the colour-concept task."""
    (_, arrays, records), = render_splits(WORLD, "presence", COLOURS, {"test": 16}, seed=2)
    return arrays, records
