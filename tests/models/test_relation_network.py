"""The Relation Network: shapes, padding, dependence on the question, the split first layer of g."""
from __future__ import annotations

import pytest
import torch

from salbench.models.relation_network import RelationNetwork, build_question_model, coordinates
from salbench.registry import UnknownNameError

SMALL = dict(conv_channels=(8, 8, 8), embed_dim=8, question_dim=16, g=(32, 32), f=(32,))


def model() -> RelationNetwork:
    torch.manual_seed(0)
    return build_question_model("relation-network", 7, 20, **SMALL).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 32, 32, generator=g)
    tokens = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2], [5, 0, 0, 0, 0]])
    return images, tokens


def test_shapes_and_coordinates() -> None:
    m = model()
    images, tokens = inputs()
    assert m(images, tokens).shape == (3, 7)
    assert m.features(images).shape == (3, 16, 10)  # 32 px / 2^3 = 4×4 cells, 8 channels + x, y
    c = coordinates(2, 3)
    assert torch.equal(c[0], torch.tensor([[-1.0, 0.0, 1.0]] * 2))
    assert torch.equal(c[1, :, 0], torch.tensor([-1.0, 1.0]))
    with pytest.raises(UnknownNameError, match="relation-network"):
        build_question_model("relation-net", 7, 20)


def test_split_first_layer_equals_g_on_concatenated_pairs() -> None:
    m = model()
    images, tokens = inputs()
    o, q = m.features(images), m.question(tokens)
    n, p, c = o.shape
    pairs = torch.cat([o[:, :, None].expand(n, p, p, c), o[:, None, :].expand(n, p, p, c),
                       q[:, None, None].expand(n, p, p, q.shape[1])], dim=-1)
    weight = torch.cat([m.g_i.weight, m.g_j.weight, m.g_q.weight], dim=1)  # one Linear on the concatenation
    expected = m.f(m.g(pairs @ weight.T + m.g_i.bias).sum(dim=(1, 2)))
    torch.testing.assert_close(m(images, tokens), expected, rtol=1e-4, atol=1e-5)


def test_gradients_reach_the_image() -> None:
    m = model()
    images, tokens = inputs()
    images.requires_grad_(True)
    m(images, tokens).gather(1, torch.tensor([[0], [1], [2]])).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
