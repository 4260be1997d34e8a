"""VQA samples for attribution and evaluation: one sample per question (its scene image, tokens, answer, GT masks).

:class:`QuestionReader` reads the first ``limit`` questions of a split of a rendered VQA task with the interface of
:class:`salbench.render.dataset.SplitReader` (``len``, ``keys``, ``read(key, start, stop)``, ``blocks``), so the
streamed attribute stage handles questions as it handles images: ``images`` (each question's scene image),
``label`` (the answer), ``tokens``, and ``gt_mask`` (the GT of the task's first kind, for the GT controls).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import SalbenchError
from ..render.dataset import SplitReader
from .dataset import gt_masks, load_questions, load_vocabulary


def is_vqa_task(task_dir: str | Path, split: str = "test") -> bool:
    """Whether ``task_dir`` holds a rendered VQA task (question shards beside the image shards)."""
    return (Path(task_dir) / f"{split}_questions.safetensors").is_file()


class QuestionReader:
    """The first ``limit`` (None: all) questions of ``split``; rows are questions, in the split's order."""

    keys = ("images", "label", "tokens", "gt_mask")

    def __init__(self, task_dir: str | Path, split: str, limit: int | None = None) -> None:
        self.task_dir, self.split = Path(task_dir), split
        questions = load_questions(self.task_dir, split)
        n = len(questions["answer"]) if limit is None else min(int(limit), len(questions["answer"]))
        self.questions = {k: v[:n] for k, v in questions.items()}
        self.vocabulary = load_vocabulary(self.task_dir)
        self.gt_kinds = tuple(self.vocabulary["gt_kinds"])
        self.images = SplitReader(self.task_dir, split)
        if n and int(self.questions["image_index"].max()) >= len(self.images):
            raise SalbenchError(f"{self.task_dir}: {split} questions name images beyond the split's {len(self.images)}; "
                                f"run `dvc repro -f render@{self.task_dir.name}`")

    def __len__(self) -> int:
        return len(self.questions["answer"])

    @property
    def image_index(self) -> np.ndarray:
        return self.questions["image_index"]

    def _image_rows(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows of the image split's array ``key`` for questions start:stop (one contiguous read)."""
        index = self.image_index[start:stop]
        if len(index) == 0:
            return self.images.read(key, 0, 0)
        lo, hi = int(index.min()), int(index.max()) + 1
        return self.images.read(key, lo, hi)[index - lo]

    def gt(self, kind: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Q×H×W bool pixel masks of GT ``kind`` for questions start:stop."""
        if kind not in self.gt_kinds:
            raise SalbenchError(f"{self.task_dir.name} has GT kinds {list(self.gt_kinds)}, not {kind!r}")
        stop = len(self) if stop is None else stop
        instance = self._image_rows("instance", start, stop)
        part = {k: v[start:stop] for k, v in self.questions.items()}
        return gt_masks(instance, {**part, "image_index": np.arange(stop - start)}, kind)

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows start:stop of ``images`` (N×H×W×3 uint8), ``label`` (answers), ``tokens`` or ``gt_mask``."""
        stop = len(self) if stop is None else stop
        if key == "images":
            return self._image_rows("images", start, stop)
        if key == "label":
            return self.questions["answer"][start:stop]
        if key == "tokens":
            return self.questions["tokens"][start:stop]
        if key == "gt_mask":
            return self.gt(self.gt_kinds[0], start, stop)
        raise SalbenchError(f"question samples have no array {key!r} (have {list(self.keys)})")

    def blocks(self, size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) of consecutive question blocks of ``size``."""
        n = len(self)
        return ((i, min(n, i + size)) for i in range(0, n, size))
