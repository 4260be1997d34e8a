"""The test samples evaluate scores, as a :class:`Source` of row blocks: :class:`EvalData` holds them in
memory (a block, or a small set built by hand), :class:`SplitData` reads a rendered split block by block, so
that evaluate's memory is set by the block size and the metrics' ``samples``, not by the split's size.

A source knows every sample's label and the model's prediction (N each, a few bytes per image); images and
GT masks are read per block (:meth:`Source.read`, :meth:`Source.blocks`) or for the first samples only
(:meth:`Source.first`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attribution import select_targets
from ..attribution.cache import StreamHash, tensor_sha256
from ..models import preprocess
from ..render.dataset import SplitReader


class Source(ABC):
    """Rows 0..N-1 of the test samples: ``labels`` and ``predictions`` (N each) and :meth:`read`."""

    labels: Tensor
    predictions: Tensor
    block: int

    def __len__(self) -> int:
        return len(self.labels)

    @abstractmethod
    def read(self, start: int, stop: int) -> EvalData:
        """Samples ``start:stop`` in memory."""

    @abstractmethod
    def input_hashes(self) -> dict[str, str]:
        """SHA-256 (:func:`salbench.attribution.cache.tensor_sha256`) of the per-sample inputs a method may
        read besides the images (``masks``), as the attribute stage keyed its maps."""

    def first(self, n: int | None) -> EvalData:
        """The first ``n`` samples (all for None) in memory."""
        return self.read(0, len(self) if n is None else min(n, len(self)))

    def blocks(self, n: int | None = None) -> Iterator[tuple[int, EvalData]]:
        """(first index, samples) of consecutive blocks of at most ``block`` samples covering the first ``n``."""
        stop = len(self) if n is None else min(n, len(self))
        for start in range(0, stop, self.block):
            yield start, self.read(start, min(stop, start + self.block))

    def scan(self, fn: Callable[[int, EvalData], Sequence[Tensor]]) -> list[Tensor]:
        """``fn(first index, block)`` on every block (per-sample tensors), each of its outputs concatenated over
        the blocks."""
        outs = [fn(start, block) for start, block in self.blocks()]
        return [torch.cat(parts) for parts in zip(*outs)]

    def targets(self, model: nn.Module, which: str, batch_size: int) -> Tensor:
        """N: the classes the attribute stage explained (``attribute.explain``; see
        :func:`salbench.attribution.select_targets`)."""
        if which == "predicted":
            return self.predictions
        return self.scan(lambda _, d: [select_targets(model, d.images, d.labels, which, batch_size)])[0]


@dataclass(frozen=True)
class EvalData(Source):
    """images N×3×H×W in [0, 1], labels N, GT masks N×H×W bool, the model's predictions N; one block."""

    images: Tensor
    labels: Tensor
    masks: Tensor
    predictions: Tensor

    @property
    def block(self) -> int:  # type: ignore[override]
        return max(1, len(self))

    def read(self, start: int, stop: int) -> EvalData:
        if (start, stop) == (0, len(self)):
            return self
        return EvalData(*(t[start:stop] for t in (self.images, self.labels, self.masks, self.predictions)))

    def input_hashes(self) -> dict[str, str]:
        return {"masks": tensor_sha256(self.masks)}


class SplitData(Source):
    """A rendered split (:class:`~salbench.render.dataset.SplitReader`) read ``block`` rows at a time: images
    preprocessed for ``model`` and moved with the masks to ``device``. Opening it runs the model once over the
    split (predictions, ``batch_size`` images at a time) and hashes the masks; it then holds N labels and
    predictions only."""

    def __init__(self, reader: SplitReader, model: nn.Module, device: torch.device, batch_size: int,
                 block: int = 256) -> None:
        self.reader, self.input_size, self.device, self.block = reader, model.input_size, device, block
        labels = torch.from_numpy(reader.read("label")).long().to(device)
        self.labels = self.predictions = labels  # read() slices them until the predictions are known
        masks: StreamHash | None = None
        predictions = []
        for _, d in self.blocks():
            masks = masks or StreamHash("bool", (len(self), *d.masks.shape[1:]))
            masks.update(d.masks)
            predictions.append(select_targets(model, d.images, d.labels, "predicted", batch_size))
        self.predictions = torch.cat(predictions) if predictions else labels.clone()
        self._hashes = {"masks": masks.hexdigest()} if masks else {}

    def read(self, start: int, stop: int) -> EvalData:
        images = preprocess(self.reader.read("images", start, stop), {"input_size": self.input_size})
        masks = torch.from_numpy(self.reader.read("gt_mask", start, stop)).bool()
        return EvalData(images.to(self.device), self.labels[start:stop], masks.to(self.device),
                        self.predictions[start:stop])

    def input_hashes(self) -> dict[str, str]:
        return dict(self._hashes)
