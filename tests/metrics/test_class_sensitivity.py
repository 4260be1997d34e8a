"""Class sensitivity: scipy's spearmanr on the same maps, and maps with a known relation."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

from salbench.metrics import class_sensitivity

from metrics.metric_helpers import gradient, image_map, tiny_resnet


def test_matches_scipy_on_gradient_maps(rng: torch.Generator) -> None:
    model = tiny_resnet()
    x = torch.rand(4, 3, 32, 32, generator=rng)
    out = model(x)
    highest = gradient(model, x, out.argmax(1)).sum(1).numpy()
    lowest = gradient(model, x, out.argmin(1)).sum(1).numpy()
    expected = [stats.spearmanr(a.ravel(), b.ravel()).statistic for a, b in zip(highest, lowest)]
    np.testing.assert_allclose(class_sensitivity(model, gradient, x, batch_size=3).numpy(), expected, rtol=1e-5)


def test_known_relations(rng: torch.Generator) -> None:
    model = tiny_resnet()
    x = torch.rand(3, 3, 32, 32, generator=rng)
    torch.testing.assert_close(class_sensitivity(model, image_map, x), torch.ones(3))

    def flips_with_the_class(model, images, targets):
        top = model(images).argmax(1)
        return torch.where((targets == top)[:, None, None, None], images, -images)

    torch.testing.assert_close(class_sensitivity(model, flips_with_the_class, x), -torch.ones(3))
