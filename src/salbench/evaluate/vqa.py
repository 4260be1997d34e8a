"""Evaluation of question-conditioned models (VQA tasks, SPEC.md §6): the `evaluate` stage's route for them.

A sample is one question (its scene image, tokens, answer). The maps the attribute stage cached explain the
predicted answer w.r.t. the image, the question held fixed. Rows of the results table (schema:
:mod:`salbench.results`; the VQA figures and findings read them):

- ``accuracy`` (method ''), variant '' and ``family=<family>`` per question family;
- every metric of `evaluate.metrics` that needs GT masks (mass and rank accuracy, pointing game) once per GT kind
  of the task, variant ``gt=<kind>`` joined to the metric's own (``pooling``; the pointing game also carries its
  ``pooling`` and ``tolerance``), scored on correctly answered questions;
- ``question_sensitivity`` (:mod:`salbench.metrics.question_sensitivity`): Spearman of the maps of two questions
  on one image with disjoint GT objects (the task's first GT kind), n = pairs, lower is better;
- the other metrics (pixel perturbation, randomisation checks, class sensitivity, ...) as for classifiers, on a
  model bound to the questions (:class:`BoundQuestions`: ``model(images)`` answers exactly the bound questions,
  and every map is recomputed with the questions as ``additional_inputs``); a metric that scores the correctly
  answered questions and recomputes maps (COSE) gets only those, and every metric gets a batch size of all its
  questions, so that each model call sees the bound rows in order. A metric that calls the model on other rows
  cannot be bound: it is skipped with a note (none of the registered ones does).

Examples for the figures: the classifier keys (``images``, ``masks`` of the first GT kind, ``labels`` = answers,
``predictions``, ``map/<entry>``) for the first questions, and ``vqa/images`` E×3×H×W, ``vqa/question_index``,
``vqa/predictions``, ``vqa/answers`` E×K, ``vqa/map/<entry>`` E×K×H×W (l1-pooled) and ``vqa/gt/<kind>``
E×K×H×W, for the first E images that have K evaluated questions.
"""
from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attribution import call_targets, select_targets
from ..attribution.cache import method_inputs, tensor_sha256
from ..attribution.model import inspect_model
from ..attribution.spec import applicable
from ..errors import SalbenchError
from ..metrics import METRICS, MetricInputs, pool_channels, summary
from ..metrics.base import Explain
from ..metrics.question_sensitivity import disjoint_pairs, question_sensitivity
from ..models import preprocess
from ..results import variant
from ..vqa.samples import QuestionReader
from .artifacts import cached_entry, model_hash
from .config import EvalConfig, MetricSpec
from .suite import MAPS_ONLY, Entry, Models, Report, compared_entries, run_metric

GT_NEEDS = "masks"


class RowsMismatch(SalbenchError):
    """A metric called a question-bound model on other rows than the bound questions."""


class BoundQuestions(nn.Module):
    """``model(images)`` = ``question_model(images, tokens)`` for exactly the bound questions (N rows, in order)."""

    def __init__(self, model: nn.Module, tokens: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("tokens", tokens)
        self.input_size, self.num_classes = getattr(model, "input_size", 0), getattr(model, "num_classes", 0)
        self.training = model.training  # the mode of the model it binds (eval for metrics)

    def forward(self, images: Tensor) -> Tensor:
        if len(images) != len(self.tokens):
            raise RowsMismatch(f"a model bound to {len(self.tokens)} questions got {len(images)} images")
        return self.model(images, self.tokens.to(images.device))


@dataclass(frozen=True)
class Questions:
    """The evaluated questions: images N×3×H×W in [0, 1], answers N, predictions N, tokens N×L, image_index N,
    family N (index into ``families``), objects {kind: N×O bool}, gt {kind: N×H×W bool}."""

    images: Tensor
    answers: Tensor
    predictions: Tensor
    tokens: Tensor
    image_index: Tensor
    family: Tensor
    families: list[str]
    objects: dict[str, Tensor]
    gt: dict[str, Tensor]

    @property
    def kinds(self) -> list[str]:
        return list(self.gt)


def load_questions(reader: QuestionReader, model: nn.Module, device: torch.device, batch_size: int) -> Questions:
    """The reader's questions with the model's predicted answers."""
    n = len(reader)
    images = preprocess(reader.read("images", 0, n), {"input_size": model.input_size}).to(device)
    answers = torch.from_numpy(reader.read("label", 0, n)).long().to(device)
    tokens = torch.from_numpy(reader.read("tokens", 0, n)).long().to(device)
    predictions = select_targets(model, images, answers, "predicted", batch_size, {"tokens": tokens})
    q = reader.questions
    return Questions(images, answers, predictions, tokens, torch.from_numpy(q["image_index"]).long(),
                     torch.from_numpy(q["family"]).long(), list(reader.vocabulary["families"]),
                     {k: torch.from_numpy(q[f"gt_{k}"]).bool() for k in reader.gt_kinds},
                     {k: torch.from_numpy(reader.gt(k)).bool().to(device) for k in reader.gt_kinds})


def load_question_entries(methods: Mapping[str, Any], maps_dir: Path, model: nn.Module, model_hash: str,
                          questions: Questions, targets: Tensor, seed: int, stage: str,
                          batch_size: int) -> dict[str, Entry]:
    """As :func:`salbench.evaluate.artifacts.load_entries`, with the questions' tokens in the keys and calls;
    ``targets``: the answers the attribute stage explains (`attribute.explain`)."""
    extra = {"tokens": questions.tokens}
    entries = {}
    built, _ = applicable(methods, inspect_model(model).family, model)
    masks = {"masks": questions.gt[questions.kinds[0]].cpu()}
    for name, (method, params, layer) in built.items():
        explained = call_targets(method, model, questions.images, questions.answers, targets, batch_size, extra)[1]
        inputs = {**method_inputs(method.needs, masks), "tokens": tensor_sha256(questions.tokens.cpu())}
        entries[name] = cached_entry(maps_dir, name, methods[name], method, params, layer, model, model_hash,
                                     explained, seed, stage, inputs)
    return entries


def _bound_explain(entry: Entry, batch_size: int) -> Explain:
    """``explain(bound_model, images, targets)``: the entry's method on the question model inside, the bound
    questions as additional inputs (the images must be those questions' rows)."""
    def explain(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        if not isinstance(model, BoundQuestions) or len(images) != len(model.tokens):
            raise RowsMismatch(f"explain on {len(images)} images with a model bound to other questions")
        return entry.method(model.model, images, targets, batch_size=batch_size,
                            additional_inputs={"tokens": model.tokens}, **entry.params)

    return explain


def accuracy_rows(q: Questions, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Answer accuracy: variant '' over all questions and ``family=<name>`` per family that has questions."""
    correct = (q.predictions == q.answers).double().cpu()
    base = {"method": "", "role": "", "metric": "accuracy", "statistic": "value", "step": math.nan, "step_label": ""}
    rows = [{**base, "variant": "", **summary(correct, n_boot=n_boot, seed=seed)}]
    for k, fam in enumerate(q.families):
        chosen = q.family == k
        if chosen.any():
            rows.append({**base, "variant": variant({"family": fam}),
                         **summary(correct, chosen, n_boot=n_boot, seed=seed)})
    return rows


def _settings(spec: MetricSpec, kind: str) -> dict[str, Any]:
    """The variant settings a GT metric's rows carry besides the run's own: ``gt`` and, for metrics without
    declared variant params (the pointing game), their pooling and tolerance."""
    metric = METRICS.get(spec.name)
    out: dict[str, Any] = {"gt": kind}
    if not metric.variant_params:
        defaults = {k: p.default for k, p in inspect.signature(metric.fn).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        out.update({k: spec.params.get(k, defaults[k]) for k in ("pooling", "tolerance") if k in defaults})
    return out


def _subset(q: Questions, index: slice | Tensor) -> Questions:
    """The questions ``index`` (a slice or index tensor) selects."""
    cpu = index.cpu() if isinstance(index, Tensor) else index
    return replace(q, images=q.images[index], answers=q.answers[index], predictions=q.predictions[index],
                   tokens=q.tokens[index], image_index=q.image_index[cpu], family=q.family[cpu],
                   objects={k: v[cpu] for k, v in q.objects.items()}, gt={k: v[index] for k, v in q.gt.items()})


def _bound_models(models: Models, tokens: Tensor) -> Models:
    return Models(BoundQuestions(models.model, tokens),
                  None if models.random_labels is None else BoundQuestions(models.random_labels, tokens),
                  {k: BoundQuestions(m, tokens) for k, m in models.changes.items()})


def _metric_rows(spec: MetricSpec, entry: Entry, models: Models, q: Questions, maps: Tensor, targets: Tensor,
                 config: EvalConfig, skipped: dict[str, str]) -> list[dict[str, Any]]:
    """Rows of one metric spec for one entry (``maps``, ``targets``: its cached maps of all questions); a metric
    the bound model cannot follow is recorded in ``skipped`` instead."""
    part = _subset(q, slice(spec.samples))
    maps, targets = maps[:len(part.answers)], targets[:len(part.answers)]
    metric = METRICS.get(spec.name)
    needs = metric.needs
    if metric.scores == "correct" and "explain" in needs:
        # the metric scores (and COSE keeps) only the correctly answered questions: bind exactly those
        keep = (part.predictions == part.answers).nonzero()[:, 0]
        part, maps, targets = _subset(part, keep), maps[keep], targets[keep]
    n = len(part.answers)
    bound = _bound_models(models, part.tokens)

    def inputs(masks: Tensor) -> MetricInputs:
        return MetricInputs(bound.model, part.images, part.answers, part.predictions, maps, masks,
                            _bound_explain(entry, config.batch_size), bound.random_labels, bound.changes,
                            max(n, 1), targets)

    if GT_NEEDS in needs:
        return [r for kind in part.kinds
                for r in run_metric(spec, inputs(part.gt[kind]), config.n_boot, config.seed, _settings(spec, kind))]
    try:
        return run_metric(spec, inputs(part.gt[part.kinds[0]]), config.n_boot, config.seed)
    except RowsMismatch as e:
        skipped[spec.name] = str(e)
        return []


def sensitivity_row(maps: Tensor, q: Questions, n_boot: int, seed: int) -> dict[str, Any]:
    """The question-sensitivity row of one entry's maps (pairs by the task's first GT kind)."""
    pairs = disjoint_pairs(q.image_index, q.objects[q.kinds[0]])
    values = question_sensitivity(maps[:len(q.answers)].cpu(), pairs)
    return {"metric": "question_sensitivity", "variant": "", "statistic": "value", "step": math.nan,
            "step_label": "", **summary(values.double(), n_boot=n_boot, seed=seed)}


def example_questions(q: Questions, images: int, per_image: int = 3) -> Tensor:
    """E×K question indices: the first ``images`` images with at least K evaluated questions (their first K),
    K = ``per_image`` or fewer if no image has that many; E may be smaller than ``images``."""
    counts = torch.unique_consecutive(q.image_index, return_counts=True)[1]
    k = min(per_image, int(counts.max())) if len(counts) else per_image
    starts = torch.cumsum(counts, 0) - counts
    chosen = starts[counts >= k][:images]
    return chosen[:, None] + torch.arange(k)[None]


def evaluate_questions(models: Models, q: Questions, entries: Mapping[str, Entry], config: EvalConfig) -> Report:
    """Every metric of ``config`` (layer studies and meta-saliency left out) for the question model; see the
    module docstring."""
    report = Report(rows=accuracy_rows(q, config.n_boot, config.seed))
    compared = compared_entries(config, entries)
    k = min(config.examples, len(q.answers))
    if k:  # the classifier keys, one question per example (masks: the first GT kind)
        report.examples = {"images": q.images[:k], "masks": q.gt[q.kinds[0]][:k], "labels": q.answers[:k],
                           "predictions": q.predictions[:k]}
    index = example_questions(q, config.examples)
    if len(index):
        flat = index.flatten()
        report.examples |= {"vqa/images": q.images[index[:, 0]], "vqa/question_index": index,
                           "vqa/predictions": q.predictions.cpu()[flat].view_as(index),
                           "vqa/answers": q.answers.cpu()[flat].view_as(index),
                           **{f"vqa/gt/{k}": g.cpu()[flat].view(*index.shape, *g.shape[1:]) for k, g in q.gt.items()}}
    skipped: dict[str, str] = {}
    specs = [s for s in config.specs if s.layer_study is None and s.meta_lr is None]
    for name in compared:
        entry = entries[name]
        maps, targets = entry.read(0, None)  # the VQA samples are capped (attribute.vqa_questions)
        maps, targets = maps.to(q.images.device), targets.to(q.images.device)
        rows = []
        for spec in specs:
            if entry.registry in MAPS_ONLY and "explain" in METRICS.get(spec.name).needs:
                continue
            if spec.methods is not None and name not in spec.methods:
                continue
            rows += _metric_rows(spec, entry, models, q, maps, targets, config, skipped)
        rows.append(sensitivity_row(maps, q, config.n_boot, config.seed))
        report.rows += [{**r, "method": name, "role": entry.role} for r in rows]
        if k:
            report.examples[f"map/{name}"] = pool_channels(maps[:k], "l1")
        if len(index):
            pooled = pool_channels(maps.cpu()[index.flatten()], "l1")
            report.examples[f"vqa/map/{name}"] = pooled.view(*index.shape, *pooled.shape[1:]).float()
        del maps, targets
    for metric, why in skipped.items():
        print(f"note: {metric} does not run on question models yet ({why}): it scores a subset or reorders the "
              "questions, which a question-bound model cannot follow", file=sys.stderr)
    return report


def evaluate_task(models: Models, model_dir: Path, data_dir: Path, attribute: Mapping[str, Any], config: EvalConfig,
                  maps_dir: Path, stage: str, device: torch.device) -> tuple[Report, str]:
    """The evaluate stage on a VQA task: (the report, the model's family for the table: "cnn")."""
    reader = QuestionReader(data_dir, str(attribute.get("split", "test")), attribute.get("vqa_questions", 128))
    q = load_questions(reader, models.model, device, config.batch_size)
    explain = str(attribute.get("explain", "predicted"))
    targets = q.predictions if explain == "predicted" else select_targets(
        models.model, q.images, q.answers, explain, config.batch_size, {"tokens": q.tokens})
    entries = load_question_entries(attribute.get("methods") or {}, maps_dir, models.model, model_hash(model_dir), q,
                                    targets, int(attribute.get("seed", 0)), stage, config.batch_size)
    return evaluate_questions(models, q, entries, config), inspect_model(models.model).family
