"""Question-conditioned models for VQA: the shared base, the registry and the builder.

Every model takes images float32 N×3×H×W in [0, 1] (normalised inside, as every salbench model) and
tokens int64 N×L (0 = padding at the end; see salbench.vqa) and returns answer logits N×A. Like a
:class:`~salbench.models.zoo.Classifier` it exposes ``arch``, ``kwargs``, ``family``, ``num_classes``
(= answers), ``input_size``, ``mean`` and ``std``, so checkpoints store and rebuild it the same way.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from ..params import ParamsError
from ..registry import Registry

QUESTION_MODELS: Registry[Callable[..., "QuestionModel"]] = Registry("question model")


class QuestionModel(nn.Module):
    """Base of the question-conditioned models: normalisation buffers and the checkpoint attributes; a model
    defines :meth:`features` (what does not depend on the question) and :meth:`answer` (the rest)."""

    family = "question"

    def __init__(self, num_answers: int, vocab_size: int, pool: int = 1) -> None:
        super().__init__()
        self.num_answers = self.num_classes = num_answers
        self.vocab_size, self.pool = vocab_size, pool
        self.arch, self.kwargs, self.input_size = "", {}, 0  # set by build_question_model
        self.register_buffer("mean", torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(1, 3, 1, 1))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """N×3×H×W in [0, 1] -> normalised N×3×(H/pool)×(W/pool) (``pool``×``pool`` average pooling: a cheaper
        CPU model sees the image at a lower resolution; gradients still reach every pixel)."""
        x = (images - self.mean) / self.std
        return torch.nn.functional.avg_pool2d(x, self.pool) if self.pool > 1 else x

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The question-independent part of the model: N×3×H×W images in [0, 1] -> N×... features."""
        raise NotImplementedError

    def answer(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The rest: :meth:`features` N×... and int64 N×L ``tokens`` -> answer logits N×A."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.answer(self.features(images), tokens)

    def forward_grouped(self, images: torch.Tensor, tokens: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        """Logits N×A of N questions about M ≤ N images: ``image_index`` N says which image each asks about.

        Equals ``forward(images[image_index], tokens)`` (in eval mode; in training mode batch norms see the M
        images once each) but runs :meth:`features` once per image: training on several questions per image
        at a time costs about half as much (salbench.models.vqa_training, ``group_questions``).
        """
        return self.answer(self.features(images)[image_index], tokens)


def check_tokens(tokens: torch.Tensor) -> None:
    if tokens.ndim != 2 or tokens.dtype != torch.int64:
        raise ValueError(f"tokens must be int64 N×L, got {tokens.dtype} of shape {tuple(tokens.shape)}")


def last_state(out: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """N×D: the recurrent output N×L×D after the last non-padding token of each question."""
    last = (tokens > 0).sum(1).clamp(min=1) - 1
    return out[torch.arange(len(tokens), device=tokens.device), last]


ENCODERS = ("recurrent", "bow")


def question_encoder(encoder: str, recurrent: type[nn.GRU | nn.LSTM], embed_dim: int,
                     question_dim: int) -> nn.Module:
    """The question encoder after the token embedding: ``recurrent`` (the model's GRU or LSTM, its state
    after the last token) or ``bow`` (bag of words: a Linear + ReLU on the mean of the token embeddings)."""
    if encoder not in ENCODERS:
        raise ParamsError(f"question encoder {encoder!r} is not one of {list(ENCODERS)}; set the model's "
                          "kwargs.encoder to one of them")
    if encoder == "bow":
        return nn.Sequential(nn.Linear(embed_dim, question_dim), nn.ReLU())
    return recurrent(embed_dim, question_dim, batch_first=True)


def encode_question(embed: nn.Embedding, encoder: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """N×question_dim from int64 N×L ``tokens`` (0 = padding) through ``embed`` and a :func:`question_encoder`."""
    check_tokens(tokens)
    e = embed(tokens)
    if isinstance(encoder, nn.RNNBase):
        return last_state(encoder(e)[0], tokens)
    words = (tokens > 0).sum(1, keepdim=True).clamp(min=1)
    return encoder(e.sum(1) / words)  # padding embeddings are 0 (padding_idx)


def build_question_model(arch: str, num_answers: int, vocab_size: int, input_size: int = 0,
                         **kwargs: Any) -> QuestionModel:
    """A question-conditioned model registered as ``arch`` (see QUESTION_MODELS); ``input_size`` (px, the
    task's resolution) is recorded for checkpoints, the models themselves take any size."""
    model = QUESTION_MODELS.get(arch)(num_answers, vocab_size, **kwargs)
    model.arch, model.kwargs, model.input_size = arch, dict(kwargs), input_size
    return model


SPEC_KEYS = ("arch", "kwargs")


def as_question_spec(spec: str | Mapping[str, Any], where: str) -> dict[str, Any]:
    """A validated ``{arch, kwargs}`` of a question-conditioned model (arch: a QUESTION_MODELS name)."""
    spec = {"arch": spec} if isinstance(spec, str) else dict(spec)
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ParamsError(f"{where}: unknown keys {unknown} for a question model (known: {list(SPEC_KEYS)}; "
                          "pretrained weights and checkpoints are not supported for them)")
    if not spec.get("arch"):
        raise ParamsError(f"{where} names no arch; give arch: <one of {QUESTION_MODELS.names()}>")
    QUESTION_MODELS.get(spec["arch"])  # unknown names list the close ones
    return {"arch": spec["arch"], "kwargs": dict(spec.get("kwargs") or {})}
