"""Seeded, deterministic training and evaluation of question-conditioned models (see .question).

A VQA split is the rendered images (uint8 N×H×W×3, kept on the model's device) and its questions: int64
``image_index`` Q (which image), ``tokens`` Q×L and ``answer`` Q (salbench.vqa.dataset). Batches sample
questions; each batch gathers its images, converts them to [0, 1] and augments them (random translations
only: a horizontal flip would swap left and right in the relation questions). Randomness comes from one
CPU ``torch.Generator`` seeded by the caller, as in :func:`salbench.models.training.fit`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .question import QuestionModel
from .training import EpochHook, TrainConfig, augment, fit_steps
from .zoo import to_unit

QuestionHook = EpochHook  # on_epoch(epoch, stats, model)


@dataclass(frozen=True)
class Questions:
    """The questions of one split: ``image_index`` Q, ``tokens`` Q×L, ``answer`` Q, ``family`` Q (int64)."""

    image_index: torch.Tensor
    tokens: torch.Tensor
    answer: torch.Tensor
    family: torch.Tensor

    def __len__(self) -> int:
        return len(self.answer)

    def subset(self, idx: torch.Tensor, answer: torch.Tensor | None = None) -> Questions:
        """The questions at ``idx``, with ``answer`` in place of theirs when given."""
        return Questions(self.image_index[idx], self.tokens[idx], self.answer[idx] if answer is None else answer,
                         self.family[idx])


@torch.no_grad()
def predict_answers(model: QuestionModel, images: torch.Tensor, questions: Questions,
                    batch_size: int = 250) -> torch.Tensor:
    """Answer logits Q×A of the questions about uint8 N×H×W×3 ``images``, in eval mode, on the CPU."""
    device = model.mean.device
    was_training = model.training
    model.eval()
    out = torch.cat([
        model(to_unit(images[questions.image_index[i:i + batch_size]].to(device)),
              questions.tokens[i:i + batch_size].to(device)).cpu()
        for i in range(0, len(questions), batch_size)
    ]) if len(questions) else torch.zeros(0, model.num_answers)
    model.train(was_training)
    return out


def answer_accuracy(model: QuestionModel, images: torch.Tensor, questions: Questions, families: list[str],
                    batch_size: int = 250) -> dict[str, float]:
    """Answer accuracy overall (key ``all``) and per question family (families with no question left out)."""
    hits = (predict_answers(model, images, questions, batch_size).argmax(1) == questions.answer.cpu()).float()
    fam = questions.family.cpu()
    out = {"all": hits.mean().item() if len(hits) else 0.0}
    for k, name in enumerate(families):
        sel = fam == k
        if sel.any():
            out[name] = hits[sel].mean().item()
    return out


def grouped_order(image_index: torch.Tensor, group: int, gen: torch.Generator) -> torch.Tensor:
    """A random order of the Q questions (int64 Q ``image_index``) in which each image's questions come in runs
    of ``group`` (its last run shorter), the runs in random order: a permutation of 0..Q-1.

    >>> image_index = torch.tensor([0, 0, 0, 1, 1, 2])
    >>> order = grouped_order(image_index, 2, torch.Generator().manual_seed(1))
    >>> order.tolist(), image_index[order].tolist()  # runs: image 1 (2), image 0 (2), image 2 (1), image 0 (1)
    ([3, 4, 1, 2, 5, 0], [1, 1, 0, 0, 2, 0])
    """
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    image_index = image_index.cpu()
    by_image = torch.randperm(len(image_index), generator=gen)
    by_image = by_image[torch.sort(image_index[by_image], stable=True).indices]  # grouped by image, random within
    img = image_index[by_image]
    new_image = torch.ones_like(img, dtype=torch.bool)
    new_image[1:] = img[1:] != img[:-1]
    first = torch.nonzero(new_image).squeeze(1)
    rank = torch.arange(len(img)) - first[torch.cumsum(new_image, 0) - 1]  # position within the image's questions
    run = torch.cumsum(new_image | (rank % group == 0), 0) - 1
    keys = torch.randperm(int(run[-1]) + 1 if len(run) else 0, generator=gen)[run]
    return by_image[torch.sort(keys, stable=True).indices]


def fit_questions(model: QuestionModel, images: torch.Tensor, questions: Questions, cfg: TrainConfig, seed: int,
                  on_epoch: QuestionHook | None = None, group: int = 1) -> list[dict[str, float]]:
    """Train ``model`` in place on the questions about uint8 N×H×W×3 ``images``; return per-epoch stats.

    Softmax cross-entropy on the answers (label smoothing as ``cfg`` says), through the shared epoch loop
    :func:`salbench.models.training.fit_steps` (its stats; ``fit_accuracy`` is the un-augmented answer
    accuracy on these questions). ``cfg.flip`` must be off (flips swap left and right). ``group`` > 1: batches
    take each image's questions in runs of that many (:func:`grouped_order`) and the model's question-independent
    :meth:`~salbench.models.question.QuestionModel.features` run once per distinct image of a batch (one random
    translation per image), through :meth:`~salbench.models.question.QuestionModel.forward_grouped`.
    """
    if cfg.flip:
        raise ValueError("horizontal flips swap left and right in the relation questions; train with flip: false")
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    device = model.mean.device
    images = images.to(device)

    def step(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        target = questions.answer[idx].to(device)
        tokens = questions.tokens[idx].to(device)
        if group == 1:
            x = augment(to_unit(images[questions.image_index[idx].to(device)]), gen, False, cfg.shift)
            logits = model(x, tokens)
        else:
            distinct, inverse = torch.unique(questions.image_index[idx], return_inverse=True)
            x = augment(to_unit(images[distinct.to(device)]), gen, False, cfg.shift)
            logits = model.forward_grouped(x, tokens, inverse.to(device))
        loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
        return loss, (logits.detach().argmax(1) == target).float()

    shuffle = None if group == 1 else lambda gen: grouped_order(questions.image_index, group, gen)
    return fit_steps(model, model, len(questions), step,
                     lambda: answer_accuracy(model, images, questions, [], cfg.eval_batch_size)["all"],
                     cfg, seed, on_epoch, shuffle)


def below_gates(acc: Mapping[str, float], gates: float | Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """The accuracies below their gate: ``{key: (accuracy, gate)}``. ``gates``: a number (for ``all``, the
    overall accuracy) or ``{all | <family>: number}``; a family without questions in ``acc`` fails its gate."""
    gates = {"all": gates} if isinstance(gates, (int, float)) else gates
    return {k: (acc.get(k, 0.0), float(g)) for k, g in gates.items() if acc.get(k, 0.0) < g}
