"""The concept classifier h: a multi-label salbench Classifier trained on rendered images."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..models import Classifier, TrainConfig, build_model, fit
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

    :func:`salbench.models.fit` with per-concept binary cross-entropy (AdamW, linear warm-up and cosine decay per
    step, flips/shifts as ``cfg`` says); all randomness (init, batches, augmentation) from ``seed``. Returned in
    eval mode on ``device``.
    """
    n, size = len(images), size or images.shape[1]
    if size != images.shape[1]:
        images = torch.cat([(resize(images[a:a + 256], size) * 255).round().byte().permute(0, 2, 3, 1)
                            for a in range(0, n, 256)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec, concepts.shape[1], size).to(device)
    fit(model, images, concepts, cfg, seed)
    return model.eval()
