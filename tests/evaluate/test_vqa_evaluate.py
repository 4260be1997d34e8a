"""salbench.evaluate.vqa on fabricated questions (no rendering): the question-bound model, accuracy per family,
example selection, GT-kind variants, question sensitivity and metrics that recompute maps with the questions."""
from __future__ import annotations

import math

import pytest
import torch
from attribution.test_additional_inputs import vqa_model

from salbench.attribution import attribute_many, build
from salbench.evaluate import Entry, Models, headlines, parse_config
from salbench.evaluate.vqa import (
    BoundQuestions,
    Questions,
    RowsMismatch,
    accuracy_rows,
    evaluate_questions,
    example_questions,
)

N, SIZE = 6, 32


def questions(model: torch.nn.Module) -> Questions:
    """6 questions on 3 images (2 each); objects: image 0 disjoint, image 1 overlapping, image 2 disjoint."""
    g = torch.Generator().manual_seed(0)
    image_index = torch.tensor([0, 0, 1, 1, 2, 2])
    images = torch.rand(3, 3, SIZE, SIZE, generator=g)[image_index]
    tokens = torch.tensor([[3, 4, 0], [5, 6, 7], [3, 8, 0], [9, 0, 0], [10, 11, 0], [4, 4, 4]])
    predictions = model(images, tokens).argmax(1)
    answers = predictions.clone()
    answers[[1, 4]] = (answers[[1, 4]] + 1) % 5  # questions 1 and 4 answered wrongly
    objects = torch.zeros(N, 3, dtype=torch.bool)
    objects[[0, 1, 2, 3, 4, 5], [0, 1, 0, 0, 2, 1]] = True
    masks = torch.zeros(N, SIZE, SIZE, dtype=torch.bool)
    for q, o in enumerate(objects.float().argmax(1).tolist()):
        masks[q, 4 + 8 * o: 12 + 8 * o, 4:12] = True
    return Questions(images, answers, predictions, tokens, image_index, torch.tensor([0, 1, 0, 1, 0, 0]),
                     ["query_color", "query_size"], {"single_object": objects, "all_objects": objects.clone() | True},
                     {"single_object": masks, "all_objects": masks | True})


def test_bound_model_answers_exactly_its_questions() -> None:
    model = vqa_model("relation-network")
    q = questions(model)
    bound = BoundQuestions(model, q.tokens)
    torch.testing.assert_close(bound(q.images), model(q.images, q.tokens))
    assert not bound.training
    with pytest.raises(RowsMismatch, match="bound to 6 questions got 2 images"):
        bound(q.images[:2])


def test_accuracy_per_family_and_examples() -> None:
    q = questions(vqa_model("film"))
    rows = {r["variant"]: r for r in accuracy_rows(q, 20, 0)}
    assert rows[""]["mean"] == pytest.approx(4 / 6) and rows[""]["n"] == 6
    assert rows["family=query_color"]["mean"] == pytest.approx(3 / 4)  # questions 0, 2, 4, 5: 4 is wrong
    assert rows["family=query_size"]["mean"] == pytest.approx(1 / 2) and rows["family=query_size"]["n"] == 2
    assert all(math.isnan(r["step"]) and r["method"] == "" for r in rows.values())
    assert headlines(accuracy_rows(q, 20, 0))["accuracy"] == pytest.approx(4 / 6)
    assert example_questions(q, 2, per_image=2).tolist() == [[0, 1], [2, 3]]
    assert example_questions(q, 5, per_image=3).tolist() == [[0, 1], [2, 3], [4, 5]]  # K: at most 2 here


def _entries(model: torch.nn.Module, q: Questions, names: dict) -> dict[str, Entry]:
    built = {n: build(n, spec, "cnn") for n, spec in names.items()}
    maps = attribute_many(model, q.images, q.predictions, list(built.values()),
                          additional_inputs={"tokens": q.tokens}, masks=q.gt["single_object"])
    return {n: Entry(n, b[0], b[1], lambda start=0, stop=None, m=m: (m[start:stop], q.predictions[start:stop]), "",
                     str(names[n].get("method", n)))
            for (n, b), m in zip(built.items(), maps)}


def test_evaluate_questions_rows(capsys: pytest.CaptureFixture) -> None:
    model = vqa_model("film")
    q = questions(model)
    entries = _entries(model, q, {"gradient": {}, "gt_mask": {}, "gradcam": {}})
    config = parse_config({"n_boot": 20, "examples": 2, "batch_size": 4, "metrics": {
        "mass_accuracy": {"sweep": {"pooling": ["l1", "sum_pos"]}}, "pointing_game": {"tolerance": 0},
        "aopc": {"steps": 3, "patch": 8}, "cascading_randomization": {"methods": ["gradcam"]},
        "cose": {"per_image": 2, "transforms": ["brightness"], "methods": ["gradcam"]}}})
    report = evaluate_questions(Models(model, None, {"random_init": vqa_model("film", seed=1)}), q, entries, config)
    rows = report.rows

    def get(method: str, metric: str, variant: str) -> dict:
        (row,) = [r for r in rows if (r["method"], r["metric"], r["variant"]) == (method, metric, variant)]
        return row

    # the GT mask scores 1 on its own kind, on the 4 correctly answered questions
    assert get("gt_mask", "mass_accuracy", "gt=single_object,pooling=l1")["mean"] == pytest.approx(1.0)
    assert get("gt_mask", "mass_accuracy", "gt=single_object,pooling=l1")["n"] == 4
    assert get("gradient", "pointing_game", "gt=all_objects,pooling=max_norm,tolerance=0")["mean"] == 1.0
    # pairs with disjoint objects: (0, 1) and (4, 5); image 1's questions share object 0
    assert get("gradient", "question_sensitivity", "")["n"] == 2
    assert get("gt_mask", "question_sensitivity", "")["mean"] < 0  # disjoint squares: anti-correlated ranks
    assert {r["metric"] for r in rows if r["method"] == "gradcam"} >= {"aopc", "cascading_randomization"}
    # COSE on the 4 correctly answered questions (per_image 2: the bound model sees them twice, in order)
    cose = [r for r in rows if (r["method"], r["metric"], r["variant"]) == ("gradcam", "cose", "split=all")]
    assert cose and all(r["n"] > 0 for r in cose)
    assert "does not run on question models" not in capsys.readouterr().err
    ex = report.examples
    assert ex["vqa/question_index"].tolist() == [[0, 1], [2, 3]]
    assert ex["vqa/map/gradient"].shape == ex["vqa/gt/single_object"].shape == (2, 2, SIZE, SIZE)
    torch.testing.assert_close(ex["vqa/images"], q.images[[0, 2]])
    assert ex["map/gt_mask"].shape == (2, SIZE, SIZE) and ex["labels"].tolist() == q.answers[:2].tolist()
