"""Parameter validation and task rules on hand-built scene records (no rendering)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import PRESENCE

from salbench.registry import UnknownNameError
from salbench.render import TASKS, RenderParamsError, TaskError, World, build_task, task_world


def obj(color: str, shape: str, material: str = "rubber", size: str = "large") -> dict:
    return {"color": color, "shape": shape, "material": material, "size": size}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"resolution": 16}, "below the minimum of 32"),
        ({"min_objects": 0}, "at least one object"),
        ({"colors": ("red", "magenta")}, r"unknown color \['magenta'\]"),
        ({"min_distance": 5.0}, "min_distance=5.0 cannot be satisfied"),
        ({"min_pixels": 10_000}, "min_pixels"),
        ({"shapes": ()}, "render.shapes is empty"),
        ({"zoom": 0.0}, "render.zoom=0.0 must be > 0"),
    ],
)
def test_bad_world_params_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(RenderParamsError, match=match):
        World(**kwargs)


def test_unknown_task_lists_known_names() -> None:
    with pytest.raises(UnknownNameError, match="Known tasks: presence, unique-query"):
        build_task("uniqe-query", World(), {})
    with pytest.raises(UnknownNameError, match="Did you mean 'unique-query'"):
        build_task("uniqe-query", World(), {})


def test_unique_query_rule_on_hand_built_records() -> None:
    task = build_task("unique-query", World(), {"query": {"material": "metal"}, "target": "color"})
    rec = {"objects": [obj("red", "cube"), obj("cyan", "sphere", "metal"), obj("cyan", "cylinder")]}
    assert task.label(rec) == task.classes.index("cyan")
    assert task.relevant(rec) == [1]
    two = {"objects": [obj("red", "cube", "metal"), obj("cyan", "sphere", "metal")]}
    with pytest.raises(TaskError, match="exactly one object"):
        task.label(two)


def test_unique_query_needs_a_non_matching_value() -> None:
    with pytest.raises(TaskError, match="never be unique"):
        build_task("unique-query", World(materials=("metal",)), {"query": {"material": "metal"}})
    with pytest.raises(TaskError, match="target must be an attribute"):
        build_task("unique-query", World(), {"query": {"material": "metal"}, "target": "material"})
    with pytest.raises(TaskError, match="is not among render.colors"):
        build_task("unique-query", World(colors=("red", "blue")), {"query": {"color": "cyan"}})


def test_presence_rule_on_hand_built_records() -> None:
    task = build_task("presence", World(), PRESENCE)
    positive = {"objects": [obj("red", "cube"), obj("blue", "cube"), obj("green", "cylinder")]}
    blocked = {"objects": [obj("red", "cube"), obj("blue", "sphere", "metal"), obj("gray", "sphere")]}
    absent = {"objects": [obj("red", "sphere"), obj("yellow", "cube")]}
    assert [task.label(r) for r in (positive, blocked, absent)] == [1, 0, 0]
    assert task.relevant(positive) == [0]  # the spurious green cylinder is not ground truth
    assert task.relevant(blocked) == [0, 1]
    assert task.relevant(absent) == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"rule": "red_cube or not red_cube"}, "is never False"),
        ({"rule": "red_cube and __import__"}, "unknown concept '__import__'"),
        ({"rule": "red_cube + 1"}, "may only use concept names"),
        ({"spurious": {"concept": "red_cube"}}, "concept outside the rule"),
        ({"concepts": {**PRESENCE["concepts"], "purple": {"colour": "purple"}}}, "unknown attribute 'colour'"),
    ],
)
def test_presence_bad_params(change: dict, match: str) -> None:
    with pytest.raises(TaskError, match=match):
        build_task("presence", World(), {**PRESENCE, **change})


@pytest.mark.parametrize("name", TASKS.names())
def test_sampled_objects_satisfy_the_rule(name: str) -> None:
    """For every class, sampled attributes give that label under the task's own rule."""
    world = World(max_objects=6)
    task = build_task(name, world, PRESENCE if name == "presence" else {})
    rng = np.random.default_rng(0)
    for label in range(len(task.classes)):
        for _ in range(50):
            objs = task.sample_objects(rng, label, "test")
            assert world.min_objects <= len(objs) <= world.max_objects
            assert task.label({"objects": objs}) == label


def test_spurious_concept_correlates_only_in_its_splits() -> None:
    task = build_task("presence", World(), PRESENCE)
    rng = np.random.default_rng(1)

    def rate(label: int, split: str) -> float:
        hits = [task.present({"objects": task.sample_objects(rng, label, split)})["green_cylinder"] for _ in range(400)]
        return float(np.mean(hits))

    assert rate(1, "train") > 0.8 and rate(0, "train") < 0.2
    assert 0.4 < rate(1, "test") < 0.6 and 0.4 < rate(0, "test") < 0.6


def test_a_task_world_overrides_render_keys_for_that_task_only() -> None:
    render = {"resolution": 64, "max_objects": 8, "extent": 3.0, "seed": 0}
    world, own = task_world(render, {"query": {"material": "metal"}, "world": {"max_objects": 4, "zoom": 1.5}})
    assert (world.resolution, world.max_objects, world.extent, world.zoom) == (64, 4, 3.0, 1.5)
    assert own == {"query": {"material": "metal"}}  # the task's own params, without `world`
    assert task_world(render, None) == (World(resolution=64, max_objects=8), {})
    with pytest.raises(RenderParamsError, match=r"unknown key\(s\) \['resolution'\].*render.resolution"):
        task_world(render, {"world": {"resolution": 32}})
    with pytest.raises(RenderParamsError, match="^tasks.presence.world: need 1 <= render.min_objects"):
        task_world(render, {"world": {"min_objects": 5, "max_objects": 4}}, "tasks.presence.world")


def test_zoom_narrows_the_field_of_view_by_its_factor() -> None:
    from salbench.render.scene import YFOV, sample_view

    rng = np.random.default_rng(0)
    assert sample_view(rng, World())["camera"]["yfov"] == YFOV  # the default view is unchanged
    yfov = sample_view(rng, World(zoom=2.0))["camera"]["yfov"]
    assert np.tan(yfov / 2) == pytest.approx(np.tan(YFOV / 2) / 2, rel=1e-5)
