"""The question shards of a rendered VQA task (data/render/vqa-<kind>/).

- ``<split>_questions.safetensors``: int64 ``image_index`` Q, ``tokens`` Q×L (0 = padding),
  ``answer`` Q, ``family`` Q; bool ``gt_<kind>`` Q×O (O = render.max_objects; object k of the
  scene record is instance value k+1, so a GT mask is ``isin(instance[image_index], where(gt)+1)``);
- ``<split>_questions.json``: the question texts and programs (for figures);
- ``vqa.json``: token and answer vocabularies, families, GT kinds, per-split per-family answer counts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..io import load_shard, read_json, save_shard, write_json
from .generate import QuestionSet


def write_split(out: Path, split: str, qs: QuestionSet) -> None:
    save_shard(out / f"{split}_questions.safetensors", qs.arrays)
    write_json(out / f"{split}_questions.json",
               [{"image_index": int(i), "question": t, "program": p}
                for i, t, p in zip(qs.arrays["image_index"], qs.texts, qs.programs)])


def balance(qs: QuestionSet, n_images: int) -> dict[str, Any]:
    """Answer-balance summary of one split: questions, per image, and per family the number of questions,
    distinct answers, top-answer share and normalised answer entropy (1 = uniform over the answers seen)."""
    fams = {}
    for fam, counts in qs.answer_counts.items():
        c = np.array(list(counts.values()), dtype=np.float64)
        n = c.sum()
        p = c[c > 0] / n if n else c
        ent = float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0
        fams[fam] = {"n": int(n), "answers": len(p), "top_share": round(float(c.max() / n), 4) if n else 0.0,
                     "entropy": round(ent, 4)}
    return {"n": len(qs.texts), "per_image": round(len(qs.texts) / max(n_images, 1), 3), "families": fams}


def write_vocabulary(out: Path, vocabulary: Mapping[str, Any], counts: Mapping[str, QuestionSet]) -> None:
    write_json(out / "vqa.json", {**vocabulary, "answer_counts": {s: q.answer_counts for s, q in counts.items()}})


def load_questions(task_dir: str | Path, split: str) -> dict[str, np.ndarray]:
    task_dir = Path(task_dir)
    return load_shard(task_dir / f"{split}_questions.safetensors", stage=f"render@{task_dir.name}")


def load_vocabulary(task_dir: str | Path) -> dict[str, Any]:
    task_dir = Path(task_dir)
    return read_json(task_dir / "vqa.json", stage=f"render@{task_dir.name}")


def gt_masks(instance: np.ndarray, questions: Mapping[str, np.ndarray], kind: str) -> np.ndarray:
    """Q×H×W bool pixel masks of ground truth ``kind`` from N×H×W instance maps (0 = ground)."""
    gt = questions[f"gt_{kind}"]
    inst = instance[questions["image_index"]].astype(np.int64)  # Q×H×W, object k -> k+1
    table = np.concatenate([np.zeros((len(gt), 1), dtype=bool), gt], axis=1)  # Q×(O+1), 0 = ground
    return np.take_along_axis(table, inst.reshape(len(gt), -1), axis=1).reshape(inst.shape)
