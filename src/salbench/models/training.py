"""Seeded, deterministic training and evaluation of a :class:`~salbench.models.zoo.Classifier`.

Images stay uint8 N×H×W×3 on the model's device; each batch is converted to [0, 1] and augmented
there. All randomness (shuffling, augmentation) comes from one CPU ``torch.Generator`` seeded by the
caller, so CPU and CUDA runs draw the same batches.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from torch import nn

from ..params import ParamsError, check_keys
from .zoo import Classifier, to_unit

EpochHook = Callable[[int, dict[str, float], nn.Module], None]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and augmentation settings (the per-model section of params.yaml ``train``)."""

    epochs: int = 10  # the maximum when stop_at_train_accuracy is set
    batch_size: int = 64
    lr: float = 2e-3  # AdamW peak, linear warm-up then cosine decay to 0 per step
    weight_decay: float = 0.05  # not applied to biases, norms and position/class tokens
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    flip: bool = True  # random horizontal flips (label-preserving for attribute tasks)
    shift: int = 0  # random translations of up to this many px (edge pixels replicated)
    stop_at_train_accuracy: float = 0.0  # stop once un-augmented training accuracy reaches it; 0 = off
    checkpoint_epochs: tuple[int, ...] = ()  # epochs after which the hook is told to save a checkpoint
    eval_batch_size: int = 250

    @classmethod
    def from_params(cls, p: Mapping[str, Any], where: str) -> TrainConfig:
        check_keys(p, [f.name for f in fields(cls)], where)
        cfg = cls(**{k: tuple(v) if k == "checkpoint_epochs" else v for k, v in p.items()})
        if cfg.epochs < 0 or cfg.batch_size < 1 or cfg.lr <= 0:
            raise ParamsError(f"{where}: need epochs >= 0, batch_size >= 1, lr > 0; got {cfg}")
        late = [e for e in cfg.checkpoint_epochs if not 1 <= e <= cfg.epochs]
        if late:
            raise ParamsError(f"{where}.checkpoint_epochs {late} lie outside 1..epochs={cfg.epochs}")
        return cfg


def set_deterministic(seed: int, device: str | torch.device = "cpu") -> None:
    """Seed torch and require deterministic kernels (CUDA only warns for ops that have none)."""
    device = torch.device(device)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")


def random_labels(labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Data randomisation (Adebayo et al.): a seeded subset of ``n`` indices (all if 0) and their labels
    in a seeded random order (the same label counts, detached from the images). Returns (index n, labels n)."""
    gen = torch.Generator().manual_seed(seed)
    n = n if 0 < n < len(labels) else len(labels)
    idx = torch.randperm(len(labels), generator=gen)[:n].sort().values
    sub = labels[idx]
    return idx, sub[torch.randperm(len(sub), generator=gen).to(sub.device)]


def optimiser_step(loss: torch.Tensor, params: Iterable[torch.nn.Parameter], opt: torch.optim.Optimizer,
                   sched: Any, grad_clip: float) -> None:
    """One update: zero the gradients, backpropagate ``loss``, clip the gradient norm of ``params`` to
    ``grad_clip`` (0: no clipping), step the optimiser and the learning-rate schedule."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool, shift: int) -> torch.Tensor:
    """Random horizontal flips and integer translations (≤ ``shift`` px) of float N×C×H×W, per image."""
    n, _, h, w = x.shape
    if flip:
        x = torch.where((torch.rand(n, generator=gen) < 0.5).to(x.device)[:, None, None, None], x.flip(3), x)
    if shift:
        d = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen).to(x.device)
        pad = F.pad(x, (shift,) * 4, mode="replicate")
        rows = torch.arange(h, device=x.device) + d[:, :1]  # N×H
        cols = torch.arange(w, device=x.device) + d[:, 1:]  # N×W
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = pad[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # indexing puts C last
    return x


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Logits N×K of uint8 N×H×W×3 images, in eval mode, ``batch_size`` images at a time."""
    device = model.mean.device
    was_training = model.training
    model.eval()
    out = torch.cat([model(to_unit(images[i:i + batch_size].to(device))) for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def _hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample hits: top-1 match for int64 N labels; share of labels right (logit > 0 = present) for N×K."""
    if labels.ndim == 2:
        return ((logits > 0) == labels.bool()).float().mean(1)
    return (logits.argmax(1) == labels).float()


def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250) -> float:
    """Accuracy of ``model`` on uint8 N×H×W×3 images: top-1 for int64 N labels, per-label for 0/1 N×K labels."""
    return _hits(predict(model, images, batch_size).cpu(), labels.cpu()).mean().item()


def _schedule(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    warm = max(1, round(cfg.warmup_epochs * steps_per_epoch))
    total = max(warm + 1, cfg.epochs * steps_per_epoch)
    return lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))


BatchStep = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``step(idx, gen)``: the forward pass on the (augmented) samples at CPU int64 indices ``idx`` (B), drawing
augmentation from ``gen``; returns the mean loss (scalar, with grad) and the per-sample hits (B, detached)."""


def fit_steps(model: nn.Module, trained: nn.Module, n: int, step: BatchStep, fit_accuracy: Callable[[], float],
              cfg: TrainConfig, seed: int, on_epoch: EpochHook | None = None,
              shuffle: Callable[[torch.Generator], torch.Tensor] | None = None) -> list[dict[str, float]]:
    """The epoch loop shared by every trainer: train ``model`` in place on ``n`` samples through ``step``.

    AdamW on ``trained``'s parameters (``model`` or the module holding them, for timm's no-weight-decay names),
    warm-up then cosine per step (``cfg``), gradient clipping; shuffling and augmentation from one CPU generator
    seeded with ``seed`` (``shuffle(generator)``: each epoch's order of the ``n`` samples, default a uniform
    random permutation); the ragged last batch is dropped (BatchNorm needs more than one sample). Stats per
    epoch: ``epoch``, ``loss`` and ``train_accuracy`` (running, on augmented batches), and ``fit_accuracy``
    (``fit_accuracy()``, un-augmented) when ``cfg.stop_at_train_accuracy`` is set, stopping once it is reached;
    ``on_epoch(epoch, stats, model)`` may add entries to ``stats`` (e.g. validation accuracy).
    """
    device = model.mean.device
    gen = torch.Generator().manual_seed(seed)
    bs = min(cfg.batch_size, n)
    steps = n // bs
    opt = create_optimizer_v2(trained, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, steps))
    history = []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = (torch.randperm(n, generator=gen) if shuffle is None else shuffle(gen))[: steps * bs].view(steps, bs)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for idx in order:
            loss, hits = step(idx, gen)
            optimiser_step(loss, model.parameters(), opt, sched, cfg.grad_clip)
            loss_sum += loss.detach() * bs
            correct += hits.sum()
        seen = steps * bs
        stats = {"epoch": epoch, "loss": loss_sum.item() / seen, "train_accuracy": correct.item() / seen}
        if cfg.stop_at_train_accuracy:
            stats["fit_accuracy"] = fit_accuracy()
        if on_epoch is not None:
            on_epoch(epoch, stats, model)
        history.append(stats)
        if cfg.stop_at_train_accuracy and stats["fit_accuracy"] >= cfg.stop_at_train_accuracy:
            break
    model.eval()
    return history


def fit(model: Classifier, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, seed: int,
        on_epoch: EpochHook | None = None) -> list[dict[str, float]]:
    """Train ``model`` in place on uint8 N×H×W×3 ``images`` and ``labels``; return per-epoch stats (:func:`fit_steps`).

    Labels are int64 N (softmax cross-entropy, label smoothing as ``cfg`` says) or 0/1 N×K (multi-label:
    sigmoid binary cross-entropy per label; accuracies are then per-label). ``fit_accuracy`` is the
    un-augmented training accuracy.
    """
    if images.shape[1:3] != (model.input_size, model.input_size):
        raise ValueError(f"images are {tuple(images.shape[1:3])} px but the model takes {model.input_size} px")
    device = model.mean.device
    multilabel = labels.ndim == 2
    images, labels = images.to(device), labels.to(device).float() if multilabel else labels.to(device)

    def step(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(device)
        logits = model(augment(to_unit(images[idx]), gen, cfg.flip, cfg.shift))
        if multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, labels[idx])
        else:
            loss = F.cross_entropy(logits, labels[idx], label_smoothing=cfg.label_smoothing)
        return loss, _hits(logits.detach(), labels[idx])

    return fit_steps(model, model.net, len(labels), step,
                     lambda: accuracy(model, images, labels, cfg.eval_batch_size), cfg, seed, on_epoch)
