"""Class sensitivity (Rebuffi et al. 2020): how alike are the maps of the most and the least likely class?"""

from __future__ import annotations

from torch import Tensor, nn

from .base import METRICS, Explain, MetricInputs, Summary, explain_batched, logits, undefined_where_nonfinite
from .bootstrap import summary
from .rank import rank_correlation


def class_sensitivity(model: nn.Module, explain: Explain, images: Tensor, batch_size: int = 64) -> Tensor:
    """Spearman correlation (no absolute value) of the signed channel sums of the maps for the
    highest and the lowest softmax class of each image N×C×H×W -> N; lower is better. NaN where a map is
    constant or has a NaN or ±inf entry."""
    out = logits(model, images, batch_size)
    highest = explain_batched(explain, model, images, out.argmax(1), batch_size)
    lowest = explain_batched(explain, model, images, out.argmin(1), batch_size)
    return undefined_where_nonfinite(rank_correlation(highest.sum(1), lowest.sum(1)), highest, lowest)


@METRICS.register("class_sensitivity")
def class_sensitivity_metric(inputs: MetricInputs, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Summary]:
    """Class sensitivity over all samples."""
    inputs.need("class_sensitivity", "explain")
    values = class_sensitivity(inputs.model, inputs.explain, inputs.images, inputs.batch_size)
    return {"class_sensitivity": summary(values, n_boot=n_boot, seed=seed)}
