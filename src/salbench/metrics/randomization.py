"""Model and data randomisation tests of Sanity Checks for Saliency Maps (Adebayo et al. 2018).

Blocks are re-initialised with their modules' ``reset_parameters`` on a deep copy (the caller's
model is never touched), each block from ``torch.manual_seed(seed)`` as Quantus's MPRT does, so a
block gets the same random weights in the cascading and the independent test. Normalisation
running statistics are kept (BatchNorm affine weights are reset to 1 and 0). After each step the
map explains the randomised model's own prediction and is compared with the trained model's map.
"""

from __future__ import annotations

import copy
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from ..config.declare import OneOf, declare
from .base import SIMILARITIES, Explain, MetricInputs, Similarity, Values, explain_batched, metric, predict

DEFAULT_SIMILARITIES = ("spearman_abs", "spearman", "ssim", "hog")


class RandomizationResult(NamedTuple):
    blocks: list[str]  # the block randomised at each step, output to input
    similarity: dict[str, Tensor]  # similarity name -> steps×N


def model_blocks(model: nn.Module) -> list[str]:
    """Module names of the blocks of a timm ResNet or VisionTransformer, output to input.

    ResNet: fc, layer4, ..., layer1, conv1; ViT: head, blocks.K, ..., blocks.0, patch_embed; a question-conditioned
    model (salbench.models.question): its top-level modules with parameters in reverse order of definition, the
    question's embedding and recurrent encoder left out (randomising them changes the question, not the image
    path). The network may be wrapped (e.g. behind a normalisation layer); names then carry its prefix.
    """
    from timm.models.resnet import ResNet
    from timm.models.vision_transformer import VisionTransformer

    from ..models.question import QuestionModel

    for prefix, module in model.named_modules():
        if isinstance(module, QuestionModel):
            names = [n for n, m in reversed(list(module.named_children()))
                     if any(True for _ in m.parameters()) and not isinstance(m, (nn.Embedding, nn.RNNBase))]
        elif isinstance(module, ResNet):
            names = ["fc", "layer4", "layer3", "layer2", "layer1", "conv1"]
        elif isinstance(module, VisionTransformer):
            names = ["head", *[f"blocks.{i}" for i in reversed(range(len(module.blocks)))], "patch_embed"]
        else:
            continue
        return [f"{prefix}.{name}" if prefix else name for name in names]
    raise ValueError(
        f"model_blocks knows timm ResNet and VisionTransformer, not {type(model).__name__}; pass blocks=[...] "
        "explicitly (names from model.named_modules(), output to input)"
    )


def _block(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        top = ", ".join(n for n, _ in model.named_children())
        raise ValueError(f"the model has no module {name!r}; its top-level modules are: {top}") from None


def reinitialise(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module``'s parameters in place from ``torch.manual_seed(seed)`` (global RNG restored)."""
    resettable = [m for m in module.modules() if hasattr(m, "reset_parameters")]
    covered = {id(p) for m in resettable for p in m.parameters(recurse=False)}
    missing = [name for name, p in module.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(f"parameters {missing} belong to no module with reset_parameters; choose other blocks")
    cuda = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)
        for m in resettable:
            if isinstance(m, nn.modules.batchnorm._NormBase):
                if m.affine:
                    m.weight.fill_(1)
                    m.bias.zero_()
            else:
                m.reset_parameters()


def randomized_copy(model: nn.Module, blocks: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with ``blocks`` re-initialised (see the module docstring)."""
    randomized = copy.deepcopy(model)
    for name in blocks:
        reinitialise(_block(randomized, name), seed)
    return randomized


def _own_maps(explain: Explain, model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    return explain_batched(explain, model, images, predict(model, images, batch_size), batch_size)


def _similarities(names: Sequence[str]) -> dict[str, Similarity]:
    return {name: SIMILARITIES.get(name) for name in names}


def _randomization(
    model: nn.Module,
    explain: Explain,
    images: Tensor,
    blocks: Sequence[str] | None,
    similarities: Sequence[str],
    seed: int,
    batch_size: int,
    maps: Tensor | None,
    cascading: bool,
) -> RandomizationResult:
    blocks = list(model_blocks(model) if blocks is None else blocks)
    for name in blocks:  # fail before any map is computed
        _block(model, name)
    compare = _similarities(similarities)
    reference = _own_maps(explain, model, images, batch_size) if maps is None else maps
    cascade = copy.deepcopy(model) if cascading else None
    steps: dict[str, list[Tensor]] = {name: [] for name in compare}
    for name in blocks:
        if cascading:
            reinitialise(_block(cascade, name), seed)
        randomized = cascade if cascading else randomized_copy(model, [name], seed)
        randomized_maps = _own_maps(explain, randomized, images, batch_size)
        for sim_name, sim in compare.items():
            steps[sim_name].append(sim(reference, randomized_maps))
    return RandomizationResult(blocks, {name: torch.stack(values) for name, values in steps.items()})


def cascading_randomization(
    model: nn.Module,
    explain: Explain,
    images: Tensor,
    blocks: Sequence[str] | None = None,
    similarities: Sequence[str] = DEFAULT_SIMILARITIES,
    seed: int = 0,
    batch_size: int = 64,
    maps: Tensor | None = None,
) -> RandomizationResult:
    """Randomise ``blocks`` (default :func:`model_blocks`) one more at a time, output to input, and
    compare each step's maps with the trained model's ``maps`` (computed if None) on images N×C×H×W."""
    return _randomization(model, explain, images, blocks, similarities, seed, batch_size, maps, cascading=True)


def independent_randomization(
    model: nn.Module,
    explain: Explain,
    images: Tensor,
    blocks: Sequence[str] | None = None,
    similarities: Sequence[str] = DEFAULT_SIMILARITIES,
    seed: int = 0,
    batch_size: int = 64,
    maps: Tensor | None = None,
) -> RandomizationResult:
    """Randomise one block at a time, the others trained, and compare with the trained model's maps."""
    return _randomization(model, explain, images, blocks, similarities, seed, batch_size, maps, cascading=False)


def data_randomization(
    model: nn.Module,
    random_label_model: nn.Module,
    explain: Explain,
    images: Tensor,
    similarities: Sequence[str] = DEFAULT_SIMILARITIES,
    batch_size: int = 64,
    maps: Tensor | None = None,
) -> dict[str, Tensor]:
    """Similarity (name -> N) of the maps of a model trained on permuted labels with the true-label
    model's ``maps`` (computed if None), each explaining its own prediction on images N×C×H×W."""
    reference = _own_maps(explain, model, images, batch_size) if maps is None else maps
    randomized_maps = _own_maps(explain, random_label_model, images, batch_size)
    return {name: sim(reference, randomized_maps) for name, sim in _similarities(similarities).items()}


def _model_randomization_metric(cascading: bool) -> Callable[..., list[Values]]:
    test = cascading_randomization if cascading else independent_randomization

    def fn(
        inputs: MetricInputs,
        *,
        blocks: Sequence[str] | None = None,
        similarities: Sequence[str] = DEFAULT_SIMILARITIES,
        seed: int = 0,
    ) -> list[Values]:
        result = test(
            inputs.model, inputs.explain, inputs.images, blocks, similarities, seed, inputs.batch_size, inputs.maps
        )
        return [
            Values(values[step], name, step=step + 1, step_label=block)
            for name, values in result.similarity.items()
            for step, block in enumerate(result.blocks)
        ]

    fn.__doc__ = (
        f"Similarity per sample (statistic: the similarity) after each step of {test.__name__} (step 1..B, "
        "step_label: the block randomised at that step); all samples are scored."
    )
    return fn


for _name, _cascading in (("cascading_randomization", True), ("independent_randomization", False)):
    metric(_name, needs=("explain",), scores="all")(
        declare(similarities=OneOf(SIMILARITIES))(_model_randomization_metric(cascading=_cascading)))


@metric("data_randomization", needs=("explain", "random_label_model"), scores="all")
@declare(similarities=OneOf(SIMILARITIES))
def data_randomization_metric(
    inputs: MetricInputs, *, similarities: Sequence[str] = DEFAULT_SIMILARITIES
) -> list[Values]:
    """Similarity per sample of the random-label model's maps with the model's maps (statistic: the
    similarity); all samples are scored."""
    values = data_randomization(
        inputs.model,
        inputs.random_label_model,
        inputs.explain,
        inputs.images,
        similarities,
        inputs.batch_size,
        inputs.maps,
    )
    return [Values(v, name) for name, v in values.items()]
