"""The Relation Network of CLEVR-XAI (Santoro et al. 2017), a question-conditioned model (see .question).

``model(images, tokens)`` -> answer logits N×A, with images float32 N×3×H×W in [0, 1] (normalised
inside, as every salbench model) and tokens int64 N×L (0 = padding at the end; see salbench.vqa).

CNN (stride-2 conv-BN-ReLU layers) -> a d×d grid of cells, each with its x, y coordinates in [-1, 1]
appended; question -> embedding -> LSTM, its last state q. For every ordered pair of cells (i, j),
g(o_i, o_j, q) is an MLP on the concatenation; the pair outputs are summed, then the MLP f gives
the answer logits. g's first layer on the concatenation is computed as W_i o_i + W_j o_j + W_q q + b
(the same linear map, split by input block) so the d⁴ pairs never materialise their inputs.
"""
from __future__ import annotations

import torch
from torch import nn

from .question import QUESTION_MODELS, QuestionModel, build_question_model, encode_question, question_encoder

__all__ = ["RelationNetwork", "build_question_model", "coordinates"]


def coordinates(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """2×h×w: x (column) and y (row) of each cell, in [-1, 1]."""
    ys = torch.linspace(-1.0, 1.0, h, device=device)
    xs = torch.linspace(-1.0, 1.0, w, device=device)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"))


@QUESTION_MODELS.register("relation-network")
class RelationNetwork(QuestionModel):
    """Relation Network: N×3×H×W images and N×L tokens -> N×``num_answers`` logits.

    ``conv_channels``: one stride-2 3×3 conv per entry (CLEVR-XAI: four of 24 channels); ``g``/``f``:
    hidden widths of the two MLPs (f's last hidden layer has dropout, as the paper's); ``pool``: average-pool
    the input by this factor first (fewer cells for the same convs: the CPU profile's 4×4 grid from 64 px);
    ``encoder``: ``recurrent`` (the LSTM, attribute ``lstm``) or ``bow`` (bag of words, attribute ``bow``).
    """

    family = "relation-network"

    def __init__(self, num_answers: int, vocab_size: int, conv_channels: tuple[int, ...] = (24, 24, 24, 24),
                 embed_dim: int = 32, question_dim: int = 128, g: tuple[int, ...] = (256, 256, 256, 256),
                 f: tuple[int, ...] = (256, 256), dropout: float = 0.5, pool: int = 1,
                 encoder: str = "recurrent") -> None:
        super().__init__(num_answers, vocab_size, pool)
        layers: list[nn.Module] = []
        c = 3
        for w in conv_channels:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.cnn = nn.Sequential(*layers)
        self.cell_dim = c + 2
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.encoder_name = "lstm" if encoder == "recurrent" else encoder
        setattr(self, self.encoder_name, question_encoder(encoder, nn.LSTM, embed_dim, question_dim))
        self.g_i = nn.Linear(self.cell_dim, g[0])
        self.g_j = nn.Linear(self.cell_dim, g[0], bias=False)
        self.g_q = nn.Linear(question_dim, g[0], bias=False)
        rest: list[nn.Module] = [nn.ReLU()]
        for a, b in zip(g[:-1], g[1:]):
            rest += [nn.Linear(a, b), nn.ReLU()]
        self.g = nn.Sequential(*rest)
        head: list[nn.Module] = []
        d = g[-1]
        for k, w in enumerate(f):
            head += [nn.Linear(d, w), nn.ReLU()] + ([nn.Dropout(dropout)] if k == len(f) - 1 else [])
            d = w
        self.f = nn.Sequential(*head, nn.Linear(d, num_answers))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """N×P×(C+2) grid cells (row-major) with their coordinates."""
        x = self.cnn(self.normalise(images))
        n, _, h, w = x.shape
        x = torch.cat([x, coordinates(h, w, x.device).expand(n, -1, -1, -1)], dim=1)
        return x.flatten(2).transpose(1, 2)

    def question(self, tokens: torch.Tensor) -> torch.Tensor:
        """N×question_dim: the LSTM state after the last non-padding token, or the bag of words."""
        return encode_question(self.embed, getattr(self, self.encoder_name), tokens)

    def answer(self, o: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cells ``o`` N×P×(C+2) and int64 N×L ``tokens`` -> logits N×A."""
        q = self.question(tokens)
        first = self.g_i(o)[:, :, None] + self.g_j(o)[:, None, :] + self.g_q(q)[:, None, None]  # N×P×P×G
        pairs = self.g(first)
        return self.f(pairs.sum(dim=(1, 2)))

