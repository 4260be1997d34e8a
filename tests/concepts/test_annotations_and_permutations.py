"""Concept annotations, captions and permutations (no generation)."""
from __future__ import annotations

import math

import pytest
import torch

from salbench.concepts import (ConceptParamsError, Plan, captions, concept_matrix, draw_permutations, n_orderings,
                               object_concepts, permute_column, phrase, task_from_manifest, vocabulary)
from salbench.concepts.diffusion import build_tokenizer


def test_concept_matrix_is_presence_of_each_concept(task, scenes) -> None:
    arrays, records = scenes["test"]
    c = concept_matrix(task, records)
    assert c.shape == (len(records), 4) and c.dtype == torch.bool
    assert c.tolist() == [[task.present(r)[n] for n in task.names] for r in records]
    assert [task.rule(dict(zip(task.names, row))) for row in c.tolist()] == arrays["label"].astype(bool).tolist()


def test_object_concepts_agree_with_the_matrix_and_the_instance_ids(task, scenes, world) -> None:
    _, records = scenes["test"]
    carriers = object_concepts(task, records, world.max_objects)
    assert carriers.shape == (len(records), world.max_objects + 1, 4)
    assert not carriers[:, 0].any()  # the ground carries nothing
    assert torch.equal(carriers.any(1), concept_matrix(task, records))
    with pytest.raises(ValueError, match="more than max_objects"):
        object_concepts(task, records, 1)


def test_captions_list_every_concept_in_a_fixed_order(task) -> None:
    c = torch.tensor([[True, False, True, False], [False, False, False, False]])
    assert captions(task, c) == [
        "a red cube, no blue sphere, a green cylinder, no yellow object",
        "no red cube, no blue sphere, no green cylinder, no yellow object",
    ]
    assert phrase({"shape": "cube", "color": "red", "size": "small"}) == "small red cube"
    assert phrase({"material": "metal"}) == "metal object"


def test_tokenizer_covers_every_caption_word(task) -> None:
    tok = build_tokenizer(vocabulary(task), 15)
    rows = torch.tensor([[int(b) for b in f"{k:04b}"] for k in range(16)], dtype=torch.bool)
    ids = tok(captions(task, rows), padding="max_length", max_length=15, return_tensors="pt").input_ids
    assert ids.shape == (16, 15)  # 4 phrases of 3 words and 3 commas, whatever the concepts
    assert not (ids == tok.unk_token_id).any() and not (ids == tok.pad_token_id).any()
    assert (tok(["a purple cube"]).input_ids[0][1] == tok.unk_token_id)  # words outside the vocabulary


@pytest.mark.parametrize("j", range(4))
def test_a_permutation_changes_only_its_column_and_keeps_the_count(task, scenes, j: int) -> None:
    c = concept_matrix(task, scenes["test"][1])
    perms = draw_permutations(c, [j], 3, seed=j)
    for perm in perms[0]:
        out = permute_column(c, j, perm)
        others = [k for k in range(4) if k != j]
        assert torch.equal(out[:, others], c[:, others])
        assert out[:, j].sum() == c[:, j].sum()
        assert sorted(perm.tolist()) == list(range(len(c)))
    # The caption changes exactly in concept j's phrase, and only where the value changed.
    changed = out[:, j] != c[:, j]
    for before, after, moved in zip(captions(task, c), captions(task, out), changed.tolist()):
        diff = [k for k, (a, b) in enumerate(zip(before.split(", "), after.split(", "))) if a != b]
        assert diff == ([j] if moved else [])
    # In token ids (what the text encoder sees): only concept j's article token ("a" <-> "no") changes;
    # every phrase is 3 words and a comma, so concept j's article is token 4j.
    tok = build_tokenizer(vocabulary(task), 15)
    ids_before = torch.tensor(tok(captions(task, c)).input_ids)
    ids_after = torch.tensor(tok(captions(task, out)).input_ids)
    moved_rows, moved_tokens = (ids_before != ids_after).nonzero(as_tuple=True)
    assert moved_rows.tolist() == changed.nonzero().flatten().tolist() and (moved_tokens == 4 * j).all()
    assert {tok.convert_ids_to_tokens(int(i)) for i in ids_after[moved_rows, 4 * j]} <= {"a", "no"}


def test_permutations_are_distinct_seeded_and_can_exhaust_every_ordering() -> None:
    c = torch.tensor([[True], [True], [False], [False]])
    assert n_orderings(c[:, 0]) == math.comb(4, 2) == 6
    perms = draw_permutations(c, [0], 6, seed=0)
    columns = {tuple(c[p, 0].tolist()) for p in perms[0]}
    assert len(columns) == 6  # all C(4, 2) orderings, each once
    assert torch.equal(perms, draw_permutations(c, [0], 6, seed=0))
    assert not torch.equal(draw_permutations(c, [0], 3, seed=1), draw_permutations(c, [0], 3, seed=2))


def test_more_permutations_than_distinct_orderings_is_an_error() -> None:
    c = torch.tensor([[True, True], [True, False], [False, False], [False, False]])
    with pytest.raises(ConceptParamsError, match=r"'b' is present in 1 of 4 images, which has only 4 distinct "):
        draw_permutations(c, [0, 1], 5, seed=0, names=["a", "b"])
    with pytest.raises(ConceptParamsError, match="lower concepts.permutations"):
        draw_permutations(c, [0], 7, seed=0)
    with pytest.raises(ConceptParamsError, match=">= 1"):
        draw_permutations(c, [0], 0, seed=0)


def test_unknown_or_repeated_concepts_are_errors_that_list_the_known_ones(task, scenes) -> None:
    c = concept_matrix(task, scenes["test"][1])
    y = torch.zeros(len(c), dtype=torch.long)
    with pytest.raises(ConceptParamsError, match=r"unknown concept 'red_cub'.*did you mean 'red_cube'.*blue_sphere"):
        Plan.draw(task.names, c, y, ["red_cub"], 2, 0)
    with pytest.raises(ConceptParamsError, match="twice"):
        Plan.draw(task.names, c, y, ["red_cube", "red_cube"], 2, 0)


def test_plan_targets_permute_one_column_each(task, scenes) -> None:
    c = concept_matrix(task, scenes["test"][1])
    plan = Plan.draw(task.names, c, torch.zeros(len(c), dtype=torch.long), ["yellow_object", "red_cube"], 2, 0)
    assert plan.columns == [3, 0] and plan.permuted_names == ["yellow_object", "red_cube"]
    targets = plan.all_targets()
    assert targets.shape == (2, 2, len(c), 4)
    for a, j in enumerate(plan.columns):
        for p in range(2):
            assert torch.equal(targets[a, p], permute_column(c, j, plan.perms[a, p]))


def test_task_from_manifest_needs_the_presence_task() -> None:
    with pytest.raises(ValueError, match="concepts.task: presence"):
        task_from_manifest({"task": "unique-query"})
