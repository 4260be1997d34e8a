"""Model and data randomisation: Quantus's MPRT on identical inputs, block names of timm models,
re-initialisation invariants, and maps that ignore the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from salbench.metrics import (
    SIMILARITIES,
    cascading_randomization,
    data_randomization,
    independent_randomization,
    model_blocks,
    randomized_copy,
)

from metrics.metric_helpers import gradient, image_map, tiny_cnn, tiny_resnet, tiny_vit, visualize_grayscale


def quantus_spearman_abs(a: np.ndarray, b: np.ndarray, batched: bool = True, size: int = 8) -> np.ndarray:
    """The Sanity Checks |map| Spearman, in numpy and scipy, as a Quantus similarity function."""
    a, b = (x.reshape(len(x), 3, size, size) for x in (a, b))
    return np.array(
        [
            stats.spearmanr(visualize_grayscale(p).ravel(), visualize_grayscale(q).ravel()).statistic
            for p, q in zip(a, b)
        ]
    )


@pytest.mark.parametrize("order", ["top_down", "independent"])
def test_matches_quantus_mprt(quantus, order: str, rng: torch.Generator) -> None:
    # One output class, so the randomised model's prediction is the class Quantus explains.
    model = tiny_cnn(num_classes=1, size=8)
    x = torch.rand(5, 3, 8, 8, generator=rng)
    seed = 7

    def explain_func(model: nn.Module, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
        return gradient(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()

    reference = quantus.MPRT(
        similarity_func=quantus_spearman_abs,
        layer_order=order,
        seed=seed,
        abs=False,
        normalise=False,
        disable_warnings=True,
    )(
        model=model,
        x_batch=x.numpy(),
        y_batch=np.zeros(5, dtype=int),
        a_batch=None,
        explain_func=explain_func,
        device="cpu",
        batch_size=5,
    )
    test = cascading_randomization if order == "top_down" else independent_randomization
    # Quantus seeds each layer with seed + 1.
    ours = test(model, gradient, x, blocks=["5", "2", "0"], similarities=["spearman_abs"], seed=seed + 1, batch_size=2)
    assert ours.blocks == ["5", "2", "0"]
    expected = np.stack([reference[block] for block in ours.blocks])
    np.testing.assert_allclose(ours.similarity["spearman_abs"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert (ours.similarity["spearman_abs"] < 0.99).all()


def test_model_blocks_of_timm_models() -> None:
    assert model_blocks(tiny_resnet()) == ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
    assert model_blocks(tiny_vit()) == ["head", "blocks.2", "blocks.1", "blocks.0", "patch_embed"]
    wrapped = nn.Sequential(nn.Identity(), tiny_resnet())
    assert model_blocks(wrapped)[:2] == ["1.fc", "1.layer4"]
    with pytest.raises(ValueError, match="pass blocks="):
        model_blocks(tiny_cnn())


@pytest.mark.parametrize("make", [tiny_resnet, tiny_vit])
def test_randomized_copy_resets_only_its_blocks_and_keeps_running_stats(make) -> None:
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    block = model_blocks(model)[1]
    randomized = randomized_copy(model, [block], seed=3)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()), "the caller's model changed"
    after = randomized.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(block + ".") for k in changed)
    assert not any("running" in k for k in changed)
    weights = [k for k in changed if k.endswith("weight")]
    again = randomized_copy(model, [block], seed=3).state_dict()
    other = randomized_copy(model, [block], seed=4).state_dict()
    assert all(torch.equal(after[k], again[k]) for k in weights)
    assert not all(torch.equal(after[k], other[k]) for k in weights)


def test_global_rng_is_untouched() -> None:
    model = tiny_resnet()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    randomized_copy(model, ["fc", "layer4"], seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_cascading_and_independent_share_the_first_step(rng: torch.Generator) -> None:
    model = tiny_resnet()
    x = torch.rand(4, 3, 32, 32, generator=rng)
    kwargs = dict(similarities=["spearman_abs", "ssim"], seed=1, batch_size=3)
    cascading = cascading_randomization(model, gradient, x, **kwargs)
    independent = independent_randomization(model, gradient, x, **kwargs)
    assert cascading.blocks == independent.blocks == model_blocks(model)
    for name in ("spearman_abs", "ssim"):
        assert cascading.similarity[name].shape == (6, 4)
        torch.testing.assert_close(cascading.similarity[name][0], independent.similarity[name][0])
    assert cascading.similarity["spearman_abs"][-1].mean() < 0.9


def test_maps_that_ignore_the_model_pass_as_identical(rng: torch.Generator) -> None:
    model = tiny_resnet()
    x = torch.rand(3, 3, 32, 32, generator=rng)
    result = cascading_randomization(model, image_map, x, similarities=SIMILARITIES.names())
    for values in result.similarity.values():
        torch.testing.assert_close(values, torch.ones_like(values))
    same = data_randomization(model, tiny_resnet(seed=5), image_map, x)
    assert all(torch.allclose(v, torch.ones_like(v)) for v in same.values())


def test_data_randomization_compares_two_models_maps(rng: torch.Generator) -> None:
    x = torch.rand(3, 3, 32, 32, generator=rng)
    same = data_randomization(tiny_resnet(), tiny_resnet(), gradient, x, similarities=["spearman"])
    other = data_randomization(tiny_resnet(), tiny_resnet(seed=9), gradient, x, similarities=["spearman"])
    torch.testing.assert_close(same["spearman"], torch.ones(3))
    assert (other["spearman"] < 0.9).all()


def test_blocks_must_be_resettable_modules() -> None:
    model = tiny_cnn()
    model.scale = nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match=r"\['scale'\] belong to no module with reset_parameters"):
        randomized_copy(model, [""], seed=0)
    with pytest.raises(ValueError, match="no module 'head'; its top-level modules are: 0, 1"):
        randomized_copy(model, ["head"], seed=0)
