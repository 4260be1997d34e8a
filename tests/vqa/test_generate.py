"""Question generation over many random scenes: well-posed, correct, balanced, deterministic, encoded."""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from salbench.params import ParamsError
from salbench.render.tasks import random_records
from salbench.render.world import ATTRIBUTES, World
from salbench.vqa import FAMILIES, NODE_KINDS, QuestionGenerator, SceneFacts, execute, ground_truths, tokenize
from salbench.vqa.generate import answer_text, reject
from salbench.vqa.program import from_json

WORLD = World(max_objects=8)


RECORDS = random_records(WORLD, 300)


def _generate(kind: str) -> tuple[QuestionGenerator, object]:
    gen = QuestionGenerator(WORLD, kind, {"questions_per_image": 6, "reset_every": 1000})
    return gen, gen.generate(RECORDS, "train")


@pytest.fixture(scope="module")
def simple() -> tuple[QuestionGenerator, object]:
    return _generate("simple")


@pytest.fixture(scope="module")
def complex_() -> tuple[QuestionGenerator, object]:
    return _generate("complex")


@pytest.fixture(params=["simple", "complex_"])
def generated(request) -> tuple[QuestionGenerator, object]:
    return request.getfixturevalue(request.param)


def test_every_question_is_well_posed_and_its_answer_and_gts_are_right(generated) -> None:
    gen, qs = generated
    a = qs.arrays
    assert len(qs.texts) > 4 * len(RECORDS)  # most scenes get most of their 6 questions
    for q, (i, prog) in enumerate(zip(a["image_index"], qs.programs)):
        facts = SceneFacts.from_record(RECORDS[i], gen.margin, gen.separation)
        program = from_json(prog)
        out = execute(program, facts)  # raises IllPosed for a non-unique object or an empty relation
        assert gen.answers[a["answer"][q]] == answer_text(out[-1])
        bits = (1 << np.arange(WORLD.max_objects))
        for kind, mask in ground_truths(program, out, facts.full).items():
            if kind in gen.gt_kinds:
                assert int((a[f"gt_{kind}"][q] * bits).sum()) == mask
        words = [gen.vocabulary()["tokens"][t] for t in a["tokens"][q] if t]
        assert words == tokenize(qs.texts[q])
    pairs = list(zip(a["image_index"].tolist(), map(str, qs.programs)))
    assert len(set(pairs)) == len(pairs)  # no question twice on one image


def test_simple_questions_name_as_few_attributes_as_make_the_object_unique(simple) -> None:
    gen, qs = simple
    for i, prog in zip(qs.arrays["image_index"], qs.programs):
        objs = RECORDS[i]["objects"]
        queried = prog[-1]["kind"][len("query_"):]
        named = {n["kind"][len("filter_"):]: n["value"] for n in prog if n["kind"].startswith("filter_")}
        assert queried not in named and [n["kind"] for n in prog][-2:] == ["unique", prog[-1]["kind"]]
        target = [k for k, o in enumerate(objs) if all(o[a] == v for a, v in named.items())]
        assert len(target) == 1
        others = [a for a in ATTRIBUTES if a != queried]
        for size in range(len(named)):  # no smaller set of the other attributes singles it out
            for sub in itertools.combinations(others, size):
                t = objs[target[0]]
                assert sum(all(o[a] == t[a] for a in sub) for o in objs) > 1


def test_complex_programs_use_every_node_kind(complex_) -> None:
    gen, qs = complex_
    used = {n["kind"] for p in qs.programs for n in p}
    assert used == set(NODE_KINDS)
    assert set(np.unique(qs.arrays["family"])) == set(range(len(gen.families)))


def test_answers_are_balanced_per_template(generated) -> None:
    """CLEVR's rule bounds every template's top answer: max <= 1.1 * second + 1 (one window of counts)."""
    gen, qs = generated
    per: dict[str, Counter] = {}
    for f, prog, ans in zip(qs.arrays["family"], qs.programs, qs.arrays["answer"]):
        per.setdefault(f"{f}/{prog[-1]['kind']}", Counter())[gen.answers[ans]] += 1
    for key, c in per.items():
        top = c.most_common(2)
        second = top[1][1] if len(top) > 1 else 0
        assert top[0][1] <= 1.1 * second + 1, (key, c)
    yes_no = [c for c in per.values() if set(c) <= {"yes", "no"}]
    assert bool(yes_no) == (gen.kind == "complex")
    assert all(abs(c["yes"] - c["no"]) <= 0.1 * max(c.values()) + 1 for c in yes_no)


def test_reject_is_clevrs_rule() -> None:
    assert not reject({"a": 0, "b": 0}, "a")
    assert reject({"a": 1, "b": 0}, "a") and not reject({"a": 1, "b": 0}, "b")
    assert not reject({"a": 11, "b": 10}, "a") and reject({"a": 12, "b": 10}, "a")
    many = dict.fromkeys("abcdefghi", 0) | {"a": 25, "b": 25}  # median 0 -> 5: cap at 25
    assert reject({**many, "a": 26}, "a") and not reject(many, "a")


def test_generation_is_deterministic_and_seeded() -> None:
    recs = RECORDS[:40]
    one = QuestionGenerator(WORLD, "complex", {}).generate(recs, "train")
    two = QuestionGenerator(WORLD, "complex", {}).generate(recs, "train")
    other = QuestionGenerator(WORLD, "complex", {"seed": 1}).generate(recs, "train")
    val = QuestionGenerator(WORLD, "complex", {}).generate(recs, "val")
    for k in one.arrays:
        np.testing.assert_array_equal(one.arrays[k], two.arrays[k])
    assert one.texts == two.texts and one.texts != other.texts and one.texts != val.texts


def test_family_selection_and_bad_params() -> None:
    gen = QuestionGenerator(WORLD, "complex", {"families": ["count", "one_hop"]})
    qs = gen.generate(RECORDS[:20], "train")
    assert {p[-1]["kind"] for p in qs.programs} <= {"count"} | {f"query_{a}" for a in ATTRIBUTES}
    assert set(FAMILIES) >= set(gen.families)
    with pytest.raises(ParamsError, match="tasks.families: unknown .*'one_hopp'.*complex families"):
        QuestionGenerator(WORLD, "complex", {"families": ["one_hopp"]})
    with pytest.raises(ParamsError, match="unknown key tasks.question_per_image"):
        QuestionGenerator(WORLD, "simple", {"question_per_image": 3})
    with pytest.raises(ParamsError, match="margin=-1.0 must be >= 0"):
        QuestionGenerator(WORLD, "simple", {"margin": -1})
