"""Every registered metric runs through the uniform signature, declares what it needs and which samples it
scores, returns per-sample values that the runner summarises with counts, and names a missing input."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from salbench.evaluate import summarise
from salbench.metrics import METRICS, Combined, MetricInputs, Values, explain_batched, predict
from salbench.metrics.base import NEEDS, SCORES
from salbench.registry import UnknownNameError

from metrics.metric_helpers import gradient, tiny_resnet

N, CORRECT = 6, 4
# What each metric must declare: (the inputs it cannot do without, the samples it scores).
DECLARED = {
    "mass_accuracy": ({"maps", "masks"}, "correct"),
    "rank_accuracy": ({"maps", "masks"}, "correct"),
    "pointing_game": ({"maps", "masks"}, "correct"),
    "aopc": ({"maps"}, "correct"),
    "cascading_randomization": ({"explain"}, "all"),
    "independent_randomization": ({"explain"}, "all"),
    "data_randomization": ({"explain", "random_label_model"}, "all"),
    "cose": ({"explain", "model_changes"}, "correct"),
    "class_sensitivity": ({"explain"}, "all"),
    "smooth_mprt": ({"explain"}, "all"),
    "efficient_mprt": ({"explain"}, "all"),
}
FAST = {
    "aopc": {"steps": 5},
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


def test_every_metric_declares_needs_and_scored_samples() -> None:
    assert set(METRICS.names()) == set(DECLARED)
    for name, (needs, scores) in DECLARED.items():
        metric = METRICS.get(name)
        assert (set(metric.needs), metric.scores) == (needs, scores), name
        assert set(metric.needs) <= set(NEEDS) and metric.scores in SCORES


def _summaries(name: str, inputs: MetricInputs, **params) -> list[dict]:
    metric = METRICS.get(name)
    return [summarise(out, metric.scored(inputs), n_boot=50, seed=0) for out in metric(inputs, **params)]


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_returns_per_sample_values_with_counts(name: str, inputs: MetricInputs) -> None:
    outputs = METRICS.get(name)(inputs, **FAST.get(name, {}))
    assert outputs and all(isinstance(o, (Values, Combined)) for o in outputs)
    for o in (o for o in outputs if isinstance(o, Values) and o.sample is None):
        assert o.values.shape == (N,)  # one value per sample
    summaries = _summaries(name, inputs, **FAST.get(name, {}))
    defined = [s for s in summaries if s["n"] > 0]
    assert defined and all(s["ci_low"] <= s["mean"] <= s["ci_high"] for s in defined)
    if DECLARED[name][1] == "correct" and name != "cose":
        assert {s["n"] + s["n_undefined"] for s in summaries} == {CORRECT}
    elif name != "cose":
        assert all(s["n"] + s["n_undefined"] == N for s in summaries)


@pytest.mark.parametrize("name, field", sorted((n, f) for n, (needs, _) in DECLARED.items() for f in needs
                                                if f in ("masks", "explain", "random_label_model")))
def test_missing_input_is_named(name: str, field: str, inputs: MetricInputs) -> None:
    bare = MetricInputs(**{**inputs.__dict__, field: None})
    with pytest.raises(ValueError, match=f"needs MetricInputs.{field}"):
        METRICS.get(name)(bare, **FAST.get(name, {}))


def test_unknown_metric_lists_close_and_known_names() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'mass_accuracy'.*Known metrics: aopc"):
        METRICS.get("mass_acc")


@pytest.mark.parametrize("name", METRICS.names())
def test_no_correctly_classified_sample_scores_nothing_without_crashing(inputs: MetricInputs, name: str) -> None:
    """An untrained model may get every sample wrong: metrics that score correct samples report n = 0."""
    wrong = replace(inputs, labels=(inputs.predictions + 1) % 4)
    results = _summaries(name, wrong, **FAST.get(name, {}))
    if DECLARED[name][1] == "correct":
        assert all(s["n"] == 0 for s in results), results
