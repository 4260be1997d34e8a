"""Class sensitivity (Rebuffi et al. 2020): how alike are the maps of the most and the least likely class?"""

from __future__ import annotations

from torch import Tensor, nn

from .base import Explain, MetricInputs, Values, explain_batched, logits, metric, undefined_where_nonfinite
from .rank import rank_correlation


def class_sensitivity(model: nn.Module, explain: Explain, images: Tensor, batch_size: int = 64) -> Tensor:
    """Spearman correlation (no absolute value) of the signed channel sums of the maps for the
    highest and the lowest softmax class of each image N×C×H×W -> N; lower is better. NaN where a map is
    constant or has a NaN or ±inf entry."""
    out = logits(model, images, batch_size)
    highest = explain_batched(explain, model, images, out.argmax(1), batch_size)
    lowest = explain_batched(explain, model, images, out.argmin(1), batch_size)
    return undefined_where_nonfinite(rank_correlation(highest.sum(1), lowest.sum(1)), highest, lowest)


@metric("class_sensitivity", needs=("explain",), scores="all")
def class_sensitivity_metric(inputs: MetricInputs) -> list[Values]:
    """Class sensitivity per sample (all samples are scored)."""
    return [Values(class_sensitivity(inputs.model, inputs.explain, inputs.images, inputs.batch_size))]
