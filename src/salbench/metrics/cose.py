"""COSE: consistency and sensitivity of saliency maps (Daroya, Sun, Maji 2023; SPEC.md section 3).

Only correctly classified images are used. Each is paired with transformed copies (see
:mod:`.transforms`) and with other models (model changes). A pair whose prediction stays correct
joins the consistency pool, one whose prediction changes the sensitivity pool; model-change pairs
always join the sensitivity pool. Maps are channel-pooled; the map of a geometrically transformed
image is mapped back with the inverse transform and compared on the valid pixels only (the
transformed all-ones image mapped back, eroded by a 5×5 window). Similarity is SSIM with a 5×5
uniform window and data range the larger value range of the two maps over the valid pixels.

C = mean SSIM over the consistency pool, F = mean SSIM over the sensitivity pool, S = 1 - F,
COSE = √(C·S) (a negative C·S counts as 0). Nothing is clipped: SSIM lies in [-1, 1], so S lies in
[0, 2] and exceeds 1 when the sensitivity pool's mean SSIM is negative (maps anti-correlated with the
original's), and COSE can then exceed 1 as well (at most √2).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import Tensor, nn

from ..config.declare import OneOf, declare
from .base import Combined, Explain, MetricInputs, Values, batches, explain_batched, metric, predict
from .pooling import POOLINGS, pool_channels
from .ssim import ssim_index
from .transforms import GEOMETRIC, TRANSFORMS, Transform, sample_magnitudes

SPLITS = ("geometric", "photometric", "model_change")


class CosePairs(NamedTuple):
    ssim: Tensor  # P: SSIM of the original map with the transformed (mapped back) or other model's map
    consistent: Tensor  # P bool: consistency pool (prediction unchanged), else sensitivity pool
    split: Tensor  # P long: index into SPLITS
    source: Tensor  # P long: index into sources
    sources: list[str]  # transform names, then model-change names
    sample: Tensor  # P long: index of the image in the images passed to cose
    magnitude: Tensor  # P float64: the transform's signed magnitude (0 where it has none)


def erode(mask: Tensor, size: int = 5) -> Tensor:
    """Erode N×H×W bool masks with a size×size window; outside the image counts as valid."""
    return -F.max_pool2d(-mask[:, None].float(), size, stride=1, padding=size // 2)[:, 0] > 0.5


def valid_mask(transform: Transform, magnitudes: Tensor, like: Tensor) -> Tensor:
    """Pixels (N×H×W bool) of the original frame that a geometric transform keeps, eroded by 5×5."""
    ones = torch.ones_like(like[:, :1])
    return erode(transform.invert(transform.apply(ones, magnitudes), magnitudes)[:, 0] > 0.5)


def cose_ssim(a: Tensor, b: Tensor, valid: Tensor) -> Tensor:
    """SSIM (5×5) of maps a, b (N×H×W) over ``valid`` pixels, data range the larger value range of the two there."""

    def value_range(m: Tensor) -> Tensor:
        return torch.where(valid, m, -torch.inf).amax((1, 2)) - torch.where(valid, m, torch.inf).amin((1, 2))

    return ssim_index(a, b, torch.maximum(value_range(a), value_range(b)), win_size=5, mask=valid)


def cose(
    model: nn.Module,
    explain: Explain,
    images: Tensor,
    labels: Tensor,
    transforms: Sequence[str] | None = None,
    per_image: int = 2,
    model_changes: Mapping[str, nn.Module] | None = None,
    pooling: str = "l1",
    seed: int = 0,
    batch_size: int = 64,
) -> CosePairs:
    """COSE pairs of images N×C×H×W in [0, 1] (the model takes them as they are) with labels N.

    ``transforms``: names from TRANSFORMS (default all); ``per_image`` magnitudes are drawn per
    image and transform that has magnitudes (one pair otherwise), seeded by ``seed``.
    """
    if images.min() < 0 or images.max() > 1:
        raise ValueError("cose transforms images in [0, 1]: pass such images and a model that normalises them itself")
    chosen = {name: TRANSFORMS.get(name) for name in (TRANSFORMS.names() if transforms is None else transforms)}
    changes = dict(model_changes or {})
    device = images.device
    keep = (predict(model, images, batch_size) == labels).nonzero()[:, 0]
    x, y = images[keep], labels[keep]
    base = pool_channels(explain_batched(explain, model, x, y, batch_size), pooling)
    generator = torch.Generator().manual_seed(seed)
    parts: list[CosePairs] = []
    for source, transform in enumerate(chosen.values()):
        sample = torch.arange(len(x), device=device).repeat(per_image if transform.max_magnitude else 1)
        magnitude = sample_magnitudes(transform, len(sample), tuple(x.shape[-2:]), generator).to(device)
        for s in batches(len(sample), batch_size):
            idx, m = sample[s], magnitude[s]
            changed = transform.apply(x[idx], m)
            prediction = predict(model, changed, batch_size)
            maps = pool_channels(explain_batched(explain, model, changed, prediction, batch_size), pooling)
            if transform.kind == GEOMETRIC:
                maps, valid = transform.invert(maps[:, None], m)[:, 0], valid_mask(transform, m, changed)
            else:
                valid = torch.ones_like(maps, dtype=torch.bool)
            similarity = cose_ssim(base[idx], maps, valid)
            parts.append(_part(similarity, prediction == y[idx], SPLITS.index(transform.kind), source, idx, m))
    for source, other in enumerate(changes.values(), start=len(chosen)):
        for s in batches(len(x), batch_size):
            idx = torch.arange(s.start, s.stop, device=device)
            maps = pool_channels(
                explain_batched(explain, other, x[s], predict(other, x[s], batch_size), batch_size), pooling
            )
            similarity = cose_ssim(base[s], maps, torch.ones_like(maps, dtype=torch.bool))
            parts.append(
                _part(
                    similarity,
                    torch.zeros_like(idx, dtype=torch.bool),
                    SPLITS.index("model_change"),
                    source,
                    idx,
                    torch.zeros_like(similarity),
                )
            )
    if not parts:  # no correctly classified image or nothing to compare with
        empty = torch.empty(0, dtype=torch.long, device=device)
        parts.append(_part(empty.double(), empty.bool(), 0, 0, empty, empty.double()))
    pairs = CosePairs(
        **{f: torch.cat([getattr(p, f) for p in parts]) for f in CosePairs._fields if f != "sources"},
        sources=[*chosen, *changes],
    )
    return pairs._replace(sample=keep[pairs.sample])


def _part(ssim: Tensor, consistent: Tensor, split: int, source: int, idx: Tensor, magnitude: Tensor) -> CosePairs:
    """The pairs of one batch, tagged with their split and source."""
    return CosePairs(
        ssim,
        consistent,
        torch.full_like(idx, split),
        torch.full_like(idx, source),
        [],
        idx,
        magnitude.to(torch.float64),
    )


def _cose(c: Tensor, s: Tensor) -> Tensor:
    return (c * s).clamp(min=0).sqrt()


def cose_values(pairs: CosePairs) -> list[Values | Combined]:
    """Per-pair values of C (statistic ``C``: SSIM over the consistency pool), S (``S``: 1 - SSIM over
    the sensitivity pool, so its mean is 1 - F) and the combined ``cose`` = √(C·S), per split and over
    all pairs (variant ``split=...``). The model-change split has no consistency pool: its C and COSE
    are undefined. S and COSE are not clipped: S > 1 when the sensitivity pool's mean SSIM is negative."""
    out: list[Values | Combined] = []
    for split in (*SPLITS, "all"):
        in_split = torch.ones_like(pairs.consistent) if split == "all" else pairs.split == SPLITS.index(split)
        variant = {"split": split}
        pools = (in_split & pairs.consistent, in_split & ~pairs.consistent)
        c = Values(pairs.ssim[pools[0]], "C", variant, sample=pairs.sample[pools[0]])
        s = Values(1 - pairs.ssim[pools[1]], "S", variant, sample=pairs.sample[pools[1]])
        out += [c, s, Combined((c, s), _cose, "cose", variant)]
    return out


@metric("cose", needs=("explain", "model_changes"), scores="correct")
@declare(transforms=OneOf(TRANSFORMS), per_image=Ge(1), pooling=OneOf(POOLINGS))
def cose_metric(
    inputs: MetricInputs,
    *,
    transforms: Sequence[str] | None = None,
    per_image: int = 2,
    pooling: str = "l1",
    seed: int = 0,
) -> list[Values | Combined]:
    """COSE's C, S and COSE per split (geometric, photometric, model_change, all) from pairs of correctly
    classified samples (see :func:`cose_values`)."""
    pairs = cose(
        inputs.model,
        inputs.explain,
        inputs.images,
        inputs.labels,
        transforms,
        per_image,
        inputs.model_changes,
        pooling,
        seed,
        inputs.batch_size,
    )
    return cose_values(pairs)
