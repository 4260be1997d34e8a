"""Question sensitivity: pairs of questions on one image with disjoint GT objects, Spearman of their maps."""
from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from salbench.metrics.question_sensitivity import disjoint_pairs, question_sensitivity


def _sets(*objects: tuple[int, ...], n: int = 4) -> torch.Tensor:
    out = torch.zeros(len(objects), n, dtype=torch.bool)
    for i, obj in enumerate(objects):
        out[i, list(obj)] = True
    return out


def test_pairs_by_hand() -> None:
    # image 0: q0 {0}, q1 {1}, q2 {0, 1}; image 1: q3 {2}, q4 {} (e.g. a count of nothing); image 2: q5 alone
    pairs = disjoint_pairs(torch.tensor([0, 0, 0, 1, 1, 2]), _sets((0,), (1,), (0, 1), (2,), (), (0,)))
    assert pairs.tolist() == [[0, 1]]
    # questions not grouped by image; one image with three mutually disjoint questions
    pairs = disjoint_pairs(torch.tensor([1, 0, 1, 0, 1]), _sets((0,), (0,), (1,), (1,), (2,)))
    assert pairs.tolist() == [[0, 2], [0, 4], [1, 3], [2, 4]]
    assert disjoint_pairs(torch.tensor([3]), _sets((0,))).shape == (0, 2)


def test_spearman_of_the_two_maps() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 3, 8, 8, generator=g)
    maps[1] = maps[0] * 2  # same ranking: 1
    maps[2, 0] = -maps[0].sum(0)  # reversed ranking of the channel sums: -1
    maps[2, 1:] = 0
    pairs = torch.tensor([[0, 1], [0, 2], [0, 3]])
    got = question_sensitivity(maps, pairs)
    expected = spearmanr(maps[0].sum(0).flatten(), maps[3].sum(0).flatten()).statistic
    torch.testing.assert_close(got, torch.tensor([1.0, -1.0, expected], dtype=got.dtype), atol=1e-5, rtol=0)
    assert question_sensitivity(maps, torch.zeros((0, 2), dtype=torch.long)).shape == (0,)
    constant = torch.ones(2, 1, 8, 8)
    assert question_sensitivity(constant, torch.tensor([[0, 1]])).isnan().all()


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="disagree"):
        disjoint_pairs(torch.tensor([0, 0]), _sets((0,)))
