"""DEPICT maths against scikit-learn / scipy and hand-computed values."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr
from sklearn.metrics import roc_auc_score

from salbench.concepts import Plan, auroc, concept_mass, permutation_importance, rule_scores, spearman, task_metric
from salbench.concepts import true_importance
from salbench.concepts.metrics import average_ranks, mean_where
from salbench.render import build_task


def test_average_ranks_match_scipy_with_ties() -> None:
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])
    for row, ranks in zip(x, average_ranks(x)):
        np.testing.assert_allclose(ranks.numpy(), rankdata(row.numpy()))


def test_auroc_matches_sklearn_batched_and_with_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = (torch.rand(5, 40, generator=gen) * 4).round()  # few distinct values: many ties
    labels = torch.rand(5, 40, generator=gen) < 0.4
    got = auroc(scores, labels)
    for s, y, g in zip(scores, labels, got):
        assert g.item() == pytest.approx(roc_auc_score(y.numpy(), s.numpy()), abs=1e-12)


def test_auroc_hand_values_and_undefined_rows() -> None:
    labels = torch.tensor([False, False, True, True])
    assert auroc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auroc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert auroc(torch.tensor([0.1, 0.3, 0.3, 0.4]), labels) == 0.875  # one tied pair counts 1/2 of 4 pairs
    assert auroc(torch.ones(4), torch.ones(4, dtype=torch.bool)).isnan()  # one class only


def test_task_metric_is_auroc_of_the_margin_for_two_classes_else_accuracy() -> None:
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, -1.0], [0.0, 3.0]])
    y = torch.tensor([1, 0, 1, 1])
    margin = logits[:, 1] - logits[:, 0]
    assert task_metric(logits, y) == auroc(margin, y.bool())
    three = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    assert task_metric(three, torch.tensor([0, 1, 1, 2])).item() == 0.5


def test_spearman_matches_scipy_with_ties() -> None:
    gen = torch.Generator().manual_seed(1)
    a = (torch.rand(4, 12, generator=gen) * 3).round()
    b = a + torch.rand(4, 12, generator=gen)
    for x, y, g in zip(a, b, spearman(a, b)):
        assert g.item() == pytest.approx(spearmanr(x.numpy(), y.numpy()).statistic, abs=1e-12)
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])).item() == pytest.approx(-1.0)
    assert spearman(torch.ones(3), torch.tensor([1.0, 2.0, 3.0])).isnan()


def test_permutation_importance_mean_and_sample_std() -> None:
    mean, std = permutation_importance(torch.tensor(0.9), torch.tensor([[0.7, 0.5], [0.9, 0.9]]))
    torch.testing.assert_close(mean, torch.tensor([0.3, 0.0]))
    torch.testing.assert_close(std, torch.tensor([np.sqrt(0.02), 0.0], dtype=torch.float32))
    _, one = permutation_importance(torch.tensor(0.9), torch.tensor([[0.7]]))
    assert one.item() == 0.0  # a single permutation has no spread, not NaN


@pytest.mark.parametrize("rule", ["red_cube and not blue_sphere", "red_cube or (blue_sphere and not yellow_object)",
                                  "not green_cylinder"])
def test_rule_scores_evaluate_the_rule_on_every_presence_pattern(world, presence_params: dict, rule: str) -> None:
    task = build_task("presence", world, {**presence_params, "rule": rule, "spurious": None})
    rows = torch.tensor(list(itertools.product((False, True), repeat=4)))
    expected = [float(task.rule(dict(zip(task.names, r.tolist())))) for r in rows]
    assert rule_scores(task, rows).tolist() == expected
    assert rule_scores(task, rows.view(4, 4, 4)).view(-1).tolist() == expected  # batched leading dims


def test_concept_mass_hand_computed() -> None:
    maps = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # total 10
    instance = torch.tensor([[[0, 1], [2, 2]]])  # object 0 has 2, object 1 has 3 + 4
    carriers = torch.tensor([[[False, False], [True, False], [True, True]]])  # ground, object 0, object 1
    torch.testing.assert_close(concept_mass(maps, instance, carriers), torch.tensor([[0.9, 0.7]], dtype=torch.float64))
    values = torch.tensor([[1.0, 5.0], [3.0, 7.0]])
    assert mean_where(values, torch.tensor([[True, False], [True, False]])).tolist()[0] == 2.0
    assert mean_where(values, torch.tensor([[True, False], [True, False]]))[1].isnan()


def test_true_importance_of_the_rule_hand_computed(world) -> None:
    task = build_task("presence", world, {"concepts": {"a": {"color": "red"}, "b": {"color": "blue"}}, "rule": "a"})
    c = torch.tensor([[1, 0], [1, 1], [0, 0], [0, 1]], dtype=torch.bool)
    perms = torch.tensor([[[2, 3, 0, 1], [1, 0, 2, 3]], [[1, 0, 3, 2], [3, 2, 1, 0]]])
    plan = Plan(task.names, c, c[:, 0].long(), [0, 1], perms)
    imp = true_importance(task, plan)
    # a: the first permutation swaps positives and negatives (AUROC 0), the second keeps the column (AUROC 1).
    torch.testing.assert_close(imp.permuted, torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(imp.mean, torch.tensor([0.5, 0.0], dtype=torch.float64))
