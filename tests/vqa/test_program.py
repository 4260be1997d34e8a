"""Programs executed on hand-built scene records: every node kind, relations with the margin, the four GTs."""
from __future__ import annotations

import numpy as np
import pytest

from salbench.vqa import IllPosed, Node, ProgramError, SceneFacts, execute, ground_directions, ground_truths

# Camera on +x looking at the origin: front (towards the camera) = +x, right = -z, left = +z.
CAMERA = {"position": [10.0, 5.0, 0.0], "target": [0.0, 0.0, 0.0], "yfov": 0.6}


def obj(size: str, color: str, material: str, shape: str, x: float, z: float) -> dict:
    return {"size": size, "color": color, "material": material, "shape": shape,
            "position": [x, 0.7 if size == "large" else 0.35, z]}


RECORD = {"camera": CAMERA, "objects": [
    obj("large", "red", "metal", "cube", 0.0, 0.0),       # 0: the anchor
    obj("small", "blue", "rubber", "sphere", 0.0, 2.0),   # 1: left of 0
    obj("small", "red", "rubber", "cylinder", 0.0, -2.0),  # 2: right of 0
    obj("large", "blue", "rubber", "cube", 2.0, 0.1),     # 3: in front of 0; 0.1 to the left (< margin)
    obj("small", "green", "metal", "sphere", -2.0, 0.3),  # 4: behind 0 and 0.3 to its left (> margin)
]}
FACTS = SceneFacts.from_record(RECORD, margin=0.2)


def objects(mask: int) -> set[int]:
    return {k for k in range(FACTS.n) if mask >> k & 1}


def run(*nodes: tuple, facts: SceneFacts = FACTS) -> list:
    return execute(tuple(Node(k, tuple(i), v) for k, i, v in nodes), facts)


S = ("scene", (), None)


def test_ground_directions_of_a_camera_on_the_x_axis() -> None:
    d = ground_directions(CAMERA)
    np.testing.assert_allclose(d["front"], [1, 0, 0])
    np.testing.assert_allclose(d["behind"], [-1, 0, 0])
    np.testing.assert_allclose(d["left"], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(d["right"], [0, 0, -1], atol=1e-12)


@pytest.mark.parametrize("rel, expected", [("left", {1, 4}), ("right", {2}), ("front", {3}), ("behind", {4})])
def test_relations_from_the_anchor_with_the_margin(rel: str, expected: set[int]) -> None:
    out = run(S, ("filter_material", (0,), "metal"), ("filter_shape", (1,), "cube"), ("unique", (2,), None),
              (f"relate_{rel}", (3,), None))
    assert out[3] == 0 and objects(out[4]) == expected


def test_margin_moves_borderline_objects() -> None:
    wide = SceneFacts.from_record(RECORD, margin=0.35)  # object 4 is only 0.3 to the left of 0
    assert objects(wide.relate["left"][0]) == {1}
    tight = SceneFacts.from_record(RECORD, margin=0.05)  # now object 3 (0.1) counts as left too
    assert objects(tight.relate["left"][0]) == {1, 3, 4}
    assert objects(FACTS.relate["left"][2]) == {0, 1, 3, 4} and objects(FACTS.relate["right"][1]) == {0, 2, 3, 4}


def test_separation_makes_relations_with_a_too_close_object_ill_posed() -> None:
    facts = SceneFacts.from_record(RECORD, margin=0.2, separation=0.4)
    anchor = [S, ("filter_material", (0,), "metal"), ("filter_shape", (1,), "cube"), ("unique", (2,), None)]
    with pytest.raises(IllPosed, match="too close to object 0 along the left axis"):  # object 3 is 0.1 off
        run(*anchor, ("relate_left", (3,), None), facts=facts)
    with pytest.raises(IllPosed, match="front axis"):  # objects 1 and 2 are at the same depth as 0
        run(*anchor, ("relate_front", (3,), None), facts=facts)
    sphere = [S, ("filter_color", (0,), "blue"), ("filter_shape", (1,), "sphere"), ("unique", (2,), None)]
    out = run(*sphere, ("relate_right", (3,), None), facts=facts)  # every z offset from object 1 is >= 1.7
    assert objects(out[4]) == {0, 2, 3, 4}


def test_filters_same_union_intersect_count_exist() -> None:
    assert objects(run(S, ("filter_color", (0,), "red"))[1]) == {0, 2}
    assert objects(run(S, ("filter_size", (0,), "small"))[1]) == {1, 2, 4}
    assert objects(FACTS.same["color"][0]) == {2} and objects(FACTS.same["size"][0]) == {3}
    assert objects(FACTS.same["shape"][1]) == {4} and objects(FACTS.same["material"][0]) == {4}
    out = run(S, ("filter_color", (0,), "red"), ("filter_color", (0,), "blue"), ("union", (1, 2), None),
              ("count", (3,), None), ("filter_size", (0,), "small"), ("intersect", (1, 5), None),
              ("count", (6,), None), ("filter_color", (0,), "yellow"), ("exist", (8,), None), ("exist", (6,), None))
    assert objects(out[3]) == {0, 1, 2, 3} and out[4] == 4
    assert objects(out[6]) == {2} and out[7] == 1
    assert out[9] is False and out[10] is True


def test_unique_query_and_attribute_comparison() -> None:
    out = run(S, ("filter_shape", (0,), "cylinder"), ("unique", (1,), None), ("query_color", (2,), None),
              ("filter_material", (0,), "metal"), ("filter_shape", (4,), "cube"), ("unique", (5,), None),
              ("query_color", (6,), None), ("equal_color", (3, 7), None),
              ("query_size", (2,), None), ("query_size", (6,), None), ("equal_size", (9, 10), None),
              ("query_shape", (6,), None), ("query_material", (2,), None))
    assert (out[2], out[3], out[6], out[7], out[8]) == (2, "red", 0, "red", True)
    assert (out[9], out[10], out[11], out[12], out[13]) == ("small", "large", False, "cube", "rubber")


def test_integer_comparisons() -> None:
    base = [S, ("filter_color", (0,), "red"), ("count", (1,), None), ("filter_color", (0,), "blue"),
            ("count", (3,), None), ("filter_size", (0,), "small"), ("count", (5,), None)]
    out = run(*base, ("equal_integer", (2, 4), None), ("less_than", (6, 2), None), ("greater_than", (6, 2), None),
              ("less_than", (2, 6), None))
    assert out[2] == 2 and out[4] == 2 and out[6] == 3
    assert out[7:] == [True, False, True, True]


def test_ill_posed_programs_raise() -> None:
    with pytest.raises(IllPosed, match="unique over 2"):
        run(S, ("filter_color", (0,), "red"), ("unique", (1,), None))
    with pytest.raises(IllPosed, match="unique over 0"):
        run(S, ("filter_color", (0,), "yellow"), ("unique", (1,), None))
    with pytest.raises(IllPosed, match="nothing is right"):  # object 2 is the rightmost
        run(S, ("filter_shape", (0,), "cylinder"), ("unique", (1,), None), ("relate_right", (2,), None))
    with pytest.raises(ProgramError, match="unknown program node kind 'relate'"):
        run(S, ("relate", (0,), None))


def gts(*nodes: tuple) -> dict[str, set[int]]:
    prog = tuple(Node(k, tuple(i), v) for k, i, v in nodes)
    return {k: objects(v) for k, v in ground_truths(prog, execute(prog, FACTS), FACTS.full).items()}


ANCHOR = [S, ("filter_material", (0,), "metal"), ("filter_shape", (1,), "cube"), ("unique", (2,), None)]


def test_ground_truths_of_a_one_hop_query() -> None:
    # What colour is the small rubber thing left of the metal cube? -> object 1 (blue)
    g = gts(*ANCHOR, ("relate_left", (3,), None), ("filter_size", (4,), "small"), ("filter_material", (5,), "rubber"),
            ("unique", (6,), None), ("query_color", (7,), None))
    assert g == {"single_object": {0, 1}, "unique": {0, 1}, "unique_first_nonempty": {0, 1},
                 "union": {0, 1, 4}, "all_objects": {0, 1, 2, 3, 4}}


def test_first_nonempty_walks_past_an_empty_set() -> None:
    # How many yellow things are left of the metal cube? (0): the first non-empty set is the relate output.
    g = gts(*ANCHOR, ("relate_left", (3,), None), ("filter_color", (4,), "yellow"), ("count", (5,), None))
    assert g["unique"] == {0} and g["unique_first_nonempty"] == {0, 1, 4} and g["union"] == {0, 1, 4}
    # How many yellow things are there? Nothing but the scene: every set GT is empty.
    g = gts(S, ("filter_color", (0,), "yellow"), ("count", (1,), None))
    assert g["unique"] == g["unique_first_nonempty"] == g["union"] == set()


def test_first_nonempty_takes_one_set_per_branch() -> None:
    # Are there as many red things as yellow things? Branch 1: {0, 2}; branch 2 is empty down to the scene.
    g = gts(S, ("filter_color", (0,), "red"), ("count", (1,), None), S, ("filter_color", (3,), "yellow"),
            ("count", (4,), None), ("equal_integer", (2, 5), None))
    assert g["unique_first_nonempty"] == {0, 2} and g["union"] == {0, 2} and g["unique"] == set()
    # How many green things are both left of the metal cube and behind the blue cube? (intersect = {1, 4})
    g = gts(*ANCHOR, ("relate_left", (3,), None), S, ("filter_color", (5,), "blue"), ("filter_shape", (6,), "cube"),
            ("unique", (7,), None), ("relate_behind", (8,), None), ("intersect", (4, 9), None),
            ("filter_color", (10,), "green"), ("count", (11,), None))
    assert g["unique"] == {0, 3} and g["unique_first_nonempty"] == {0, 3, 4}
    assert g["union"] == {0, 1, 2, 3, 4}  # behind the blue cube: 0, 1, 2, 4


def test_relations_agree_with_the_rendered_image() -> None:
    """An object placed to the left of (in front of) another appears left of (below) it in the image."""
    from salbench.render import get_renderer
    from salbench.render.scene import CAMERA as CAM, annotate_pixels

    camera = {"position": CAM.tolist(), "target": [0.0, 0.0, 0.0], "yfov": 0.62}
    d = ground_directions(camera)
    lights = [{"position": [-2.0, 6.0, 4.0], "intensity": 2.0}]
    a = np.zeros(3)
    objs = [obj("small", "red", "rubber", "cube", *a[[0, 2]]),
            obj("small", "blue", "rubber", "cube", *(a + 2 * d["left"])[[0, 2]]),
            obj("small", "green", "rubber", "cube", *(a + 2 * d["front"])[[0, 2]])]
    rec = {"camera": camera, "lights": lights, "objects": [{**o, "rotation": 0.0} for o in objs]}
    rec = annotate_pixels(rec, get_renderer(64).instance(rec))
    (c0, r0), (c1, r1), (c2, r2) = (o["pixel_centroid"] for o in rec["objects"])
    assert c1 < c0 - 5 and abs(r1 - r0) < 5  # left of: to the left in the image
    assert r2 > r0 + 5  # in front of: closer to the camera, lower in the image
    facts = SceneFacts.from_record(rec)
    assert objects(facts.relate["left"][0]) == {1} and objects(facts.relate["front"][0]) == {2}
