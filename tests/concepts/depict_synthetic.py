"""A perfect synthetic generator and exact readers for DEPICT tests: concept bits drawn into the pixels."""
from __future__ import annotations

import torch
from torch import nn


def bits_images(concepts: torch.Tensor) -> torch.Tensor:
    """Uint8 N×8×8×3 images whose red channel shows the concept bits in columns 0..K-1: a perfect generator."""
    img = torch.zeros(len(concepts), 8, 8, 3, dtype=torch.uint8)
    img[:, :, : concepts.shape[1], 0] = concepts[:, None, :].to(torch.uint8) * 255
    return img


class BitsReader(nn.Module):
    """Reads the concept bits back from :func:`bits_images`; ``rule`` turns them into binary logits (else K logits)."""

    def __init__(self, k: int, rule: torch.Tensor | None = None) -> None:
        super().__init__()
        self.k, self.rule = k, rule
        self.unused = nn.Parameter(torch.zeros(()))  # a device to read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = x[:, 0, 0, : self.k] > 0.5
        if self.rule is None:
            return bits.float() * 2 - 1
        score = self.rule[(bits.long() * 2 ** torch.arange(self.k)).sum(1)].float()
        return torch.stack([torch.zeros_like(score), score], 1)
