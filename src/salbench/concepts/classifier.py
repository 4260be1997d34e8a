"""The concept classifier h: a multi-label salbench Classifier trained on rendered images."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

from ..models import Classifier, TrainConfig, augment, build_model
from ..models.zoo import to_unit
from .images import resize


SPEC_KEYS = ("arch", "kwargs", "resolution")


def classifier_params(p: Mapping[str, Any], where: str = "concepts.h"
                      ) -> tuple[dict[str, Any], int | None, TrainConfig]:
    """(model spec, input size or None, training settings) from the ``concepts.h`` params section."""
    rest = dict(p)
    spec = {k: rest.pop(k) for k in SPEC_KEYS if k in rest}
    size = spec.pop("resolution", None)
    return {"arch": "resnet-small", **spec}, size, TrainConfig.from_params(rest, where)


def train_concept_classifier(images: torch.Tensor, concepts: torch.Tensor, spec: str | Mapping[str, Any],
                             cfg: TrainConfig, seed: int, device: str | torch.device = "cpu",
                             size: int | None = None) -> Classifier:
    """h: K logits (one per concept, sigmoid = presence) for uint8 N×H×W×3 ``images`` and bool N×K ``concepts``,
    at input ``size`` (default H; images are resized once).

    Binary cross-entropy with AdamW, linear warm-up and cosine decay per step, flips/shifts as ``cfg`` says;
    all randomness (init, batches, augmentation) from ``seed``. Returned in eval mode on ``device``.
    """
    n, size = len(images), size or images.shape[1]
    if size != images.shape[1]:
        images = torch.cat([(resize(images[a:a + 256], size) * 255).round().byte().permute(0, 2, 3, 1)
                            for a in range(0, n, 256)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec, concepts.shape[1], size).to(device)
    gen = torch.Generator().manual_seed(seed)
    images, targets = images.to(device), concepts.to(device).float()
    bs = min(cfg.batch_size, n)
    steps = n // bs  # drop the ragged batch: BatchNorm needs more than one sample
    opt = create_optimizer_v2(model.net, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, round(cfg.warmup_epochs * steps))
    total = max(warm + 1, cfg.epochs * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n, generator=gen)[: steps * bs].view(steps, bs).to(device):
            x = augment(to_unit(images[idx]), gen, cfg.flip, cfg.shift)
            loss = F.binary_cross_entropy_with_logits(model(x), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
    return model.eval()
