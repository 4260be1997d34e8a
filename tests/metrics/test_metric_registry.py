"""Every registered metric runs through the uniform signature, scores the samples its paper scores,
and names a missing input."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from salbench.metrics import METRICS, MetricInputs, explain_batched, predict
from salbench.registry import UnknownNameError

from metrics.metric_helpers import gradient, tiny_resnet

N, CORRECT = 6, 4
# The input each metric cannot do without; every registered metric needs an entry.
NEEDS = {
    "mass_accuracy": "masks",
    "rank_accuracy": "masks",
    "pointing_game": "masks",
    "aopc_morf": None,
    "aopc_lerf": None,
    "cascading_randomization": "explain",
    "independent_randomization": "explain",
    "data_randomization": "random_label_model",
    "cose": "explain",
    "class_sensitivity": "explain",
    "smooth_mprt": "explain",
    "efficient_mprt": "explain",
}
CORRECT_ONLY = {"mass_accuracy", "rank_accuracy", "pointing_game", "aopc_morf", "aopc_lerf"}
FAST = {
    "aopc_morf": {"steps": 5},
    "aopc_lerf": {"steps": 5},
    "cose": {"transforms": ["rotate", "hflip", "contrast"], "per_image": 1},
    "smooth_mprt": {"noise_samples": 3},
}


@pytest.fixture(scope="module")
def inputs() -> MetricInputs:
    model = tiny_resnet()
    images = torch.rand(N, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    predictions = predict(model, images)
    labels = predictions.clone()
    labels[CORRECT:] = (labels[CORRECT:] + 1) % 4
    masks = torch.zeros(N, 32, 32, dtype=torch.bool)
    masks[:, 2:12, 4:14] = True
    return MetricInputs(
        model=model,
        images=images,
        labels=labels,
        predictions=predictions,
        maps=explain_batched(gradient, model, images, predictions),
        masks=masks,
        explain=gradient,
        random_label_model=tiny_resnet(seed=1),
        model_changes={"init": tiny_resnet(seed=2)},
        batch_size=4,
    )


def test_every_metric_has_its_needs_listed() -> None:
    assert set(METRICS.names()) == set(NEEDS)


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_returns_summaries_with_counts(name: str, inputs: MetricInputs) -> None:
    out = METRICS.get(name)(inputs, n_boot=50, seed=0, **FAST.get(name, {}))
    assert out and all(set(s) == {"mean", "ci_low", "ci_high", "n", "n_undefined"} for s in out.values())
    defined = [s for s in out.values() if s["n"] > 0]
    assert defined and all(s["ci_low"] <= s["mean"] <= s["ci_high"] for s in defined)
    if name in CORRECT_ONLY:
        assert [s["n"] + s["n_undefined"] for s in out.values()] == [CORRECT]
    elif name != "cose":
        assert all(s["n"] + s["n_undefined"] == N for s in out.values())


@pytest.mark.parametrize("name", sorted(name for name, need in NEEDS.items() if need))
def test_missing_input_is_named(name: str, inputs: MetricInputs) -> None:
    bare = MetricInputs(**{**inputs.__dict__, NEEDS[name]: None})
    with pytest.raises(ValueError, match=f"needs MetricInputs.{NEEDS[name]}"):
        METRICS.get(name)(bare, n_boot=10, **FAST.get(name, {}))


def test_unknown_metric_lists_close_and_known_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'mass_accuracy'.*Known metrics: aopc_lerf"):
        METRICS.get("mass_acc")


@pytest.mark.parametrize("name", METRICS.names())
def test_no_correctly_classified_sample_scores_nothing_without_crashing(inputs: MetricInputs, name: str) -> None:
    """An untrained model may get every sample wrong: metrics that score correct samples report n = 0."""
    wrong = replace(inputs, labels=(inputs.predictions + 1) % 4)
    results = METRICS.get(name)(wrong, n_boot=10, seed=0, **FAST.get(name, {}))
    if name in CORRECT_ONLY or name == "cose":
        assert all(s["n"] == 0 for s in results.values()), results
