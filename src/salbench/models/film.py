"""FiLM (Perez et al. 2018): a CNN whose residual blocks are modulated by the question (see .question).

``model(images, tokens)`` -> answer logits N×A. The question (embedding -> GRU, its last state q) gives
per block and channel a scale and shift: γ = 1 + Δγ(q), β = β(q), one linear map for all blocks. The
image goes through a stem of stride-2 conv-BN-ReLU layers to an h×w feature grid; each FiLM block is
x ← x + ReLU(γ·BN(conv3×3(r)) + β) with r = ReLU(conv1×1([x, coords])) and x ← r first (the paper's
residual block; BN without its own affine). A 1×1 conv on [x, coords], a global max-pool and an MLP give
the logits. Δγ starts at 0, so the untrained blocks are plain residual blocks.
"""
from __future__ import annotations

import torch
from torch import nn

from .question import QUESTION_MODELS, QuestionModel, encode_question, question_encoder
from .relation_network import coordinates


class FiLMBlock(nn.Module):
    """One question-modulated residual block on C×h×w features (coordinates appended inside)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels + 2, channels, 1)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels, affine=False)

    def forward(self, x: torch.Tensor, coords: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """x N×C×h×w, coords N×2×h×w, gamma and beta N×C -> N×C×h×w."""
        r = torch.relu(self.proj(torch.cat([x, coords], dim=1)))
        y = self.norm(self.conv(r)) * gamma[:, :, None, None] + beta[:, :, None, None]
        return r + torch.relu(y)


@QUESTION_MODELS.register("film")
class FiLM(QuestionModel):
    """FiLM-CNN: N×3×H×W images and N×L tokens -> N×``num_answers`` logits.

    ``stem``: one stride-2 3×3 conv per entry (its channels); ``blocks``: FiLM blocks at the last stem
    width; ``head``: channels of the final 1×1 conv, then hidden widths of the MLP ``f``; ``pool``: average-pool
    the input by this factor first (a cheaper CPU model, see :meth:`QuestionModel.normalise`); ``encoder``:
    ``recurrent`` (the GRU, attribute ``gru``) or ``bow`` (bag of words, attribute ``bow``; see
    :func:`~salbench.models.question.question_encoder`).
    """

    family = "film"

    def __init__(self, num_answers: int, vocab_size: int, stem: tuple[int, ...] = (32, 64, 64), blocks: int = 4,
                 embed_dim: int = 64, question_dim: int = 128, head: int = 128, f: tuple[int, ...] = (128,),
                 dropout: float = 0.0, pool: int = 1, encoder: str = "recurrent") -> None:
        super().__init__(num_answers, vocab_size, pool)
        layers: list[nn.Module] = []
        c = 3
        for w in stem:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.cnn = nn.Sequential(*layers)
        self.channels = c
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.encoder_name = "gru" if encoder == "recurrent" else encoder
        setattr(self, self.encoder_name, question_encoder(encoder, nn.GRU, embed_dim, question_dim))
        self.film = nn.Linear(question_dim, 2 * blocks * c)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.blocks = nn.ModuleList(FiLMBlock(c) for _ in range(blocks))
        self.head = nn.Sequential(nn.Conv2d(c + 2, head, 1), nn.BatchNorm2d(head), nn.ReLU())
        mlp: list[nn.Module] = []
        d = head
        for w in f:
            mlp += [nn.Linear(d, w), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            d = w
        self.f = nn.Sequential(*mlp, nn.Linear(d, num_answers))

    def question(self, tokens: torch.Tensor) -> torch.Tensor:
        """N×question_dim: the GRU state after the last non-padding token, or the bag of words."""
        return encode_question(self.embed, getattr(self, self.encoder_name), tokens)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The stem's N×C×h×w feature grid (before any FiLM block)."""
        return self.cnn(self.normalise(images))

    def answer(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Stem features ``x`` N×C×h×w and int64 N×L ``tokens`` -> logits N×A."""
        n, _, h, w = x.shape
        coords = coordinates(h, w, x.device).expand(n, -1, -1, -1)
        params = self.film(self.question(tokens)).view(n, len(self.blocks), 2, self.channels)
        for k, block in enumerate(self.blocks):
            x = block(x, coords, 1 + params[:, k, 0], params[:, k, 1])
        x = self.head(torch.cat([x, coords], dim=1))
        return self.f(x.amax(dim=(2, 3)))
