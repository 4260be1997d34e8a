"""Attribution with extra model inputs (VQA question tokens): every method explains the answer w.r.t. the image,
the question held fixed; a batch with extra inputs equals one sample at a time; the map cache key covers them."""
from __future__ import annotations

import inspect

import pytest
import torch
from attribution.attr_helpers import FAST, realistic_bn

from salbench.attribution import METHODS, attribute_many
from salbench.attribution.cache import shard_key
from salbench.attribution.wrappers import ExplainClass, MetaSaliency, MultiLayer
from salbench.errors import SalbenchError
from salbench.models import build_question_model
from salbench.models.film import FiLM

TINY = {
    "film": {"stem": (8, 8), "blocks": 2, "embed_dim": 8, "question_dim": 16, "head": 16, "f": (16,), "pool": 2},
    "relation-network": {"conv_channels": (8, 8), "embed_dim": 8, "question_dim": 16, "g": (16, 16), "f": (16,),
                         "pool": 2, "dropout": 0.0},
}


def vqa_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A tiny question model with trained-looking batch norms and a question that modulates FiLM."""
    torch.manual_seed(seed)
    m = build_question_model(arch, 5, 12, 32, **TINY[arch])
    if isinstance(m, FiLM):
        torch.nn.init.normal_(m.film.weight, std=0.5)
        torch.nn.init.normal_(m.film.bias, std=0.1)
    return realistic_bn(m, seed).eval()


def vqa_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 images (two of them the same image, asked different questions), tokens 4×5, targets 4."""
    images = torch.rand((3, 3, 32, 32), generator=torch.Generator().manual_seed(1))[[0, 1, 2, 2]]
    tokens = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2], [5, 1, 0, 0, 0], [10, 11, 4, 0, 0]])
    return images, tokens, torch.tensor([0, 3, 1, 4])


def _entries(model: torch.nn.Module) -> list:
    """Every registered method (FAST settings), and every wrapper over a method with its own passes."""
    entries = [(name, FAST.get(name, {})) for name in METHODS if name != "random"]  # random: one draw per call
    layer = "cnn.3"  # the stride-2 conv of the second stem layer (both models)
    entries += [("smoothgrad", {"base": "gradcam", "samples": 2}), ("vargrad", {"base": "lrp", "samples": 2}),
                ("vargrad", {"base": "edge", "samples": 2}),
                (MultiLayer("gradcam", ["cnn.0", layer]), {}), (MultiLayer("normgrad_selective", [layer]), {}),
                (MetaSaliency("gradient", 0.1), {}), (ExplainClass("integrated_gradients", "lowest"), {"steps": 3}),
                (ExplainClass(MetaSaliency("gradcam", 0.1), "predicted"), {})]
    return entries


@pytest.mark.parametrize("arch", sorted(TINY))
def test_batch_with_extra_inputs_equals_one_sample_at_a_time(arch: str) -> None:
    model = vqa_model(arch)
    images, tokens, targets = vqa_inputs()
    masks = images[:, 0] > 0.5
    entries = _entries(model)
    assert {e[0] for e in entries if isinstance(e[0], str)} >= set(METHODS) - {"random"}
    batch = attribute_many(model, images, targets, entries, batch_size=5, additional_inputs={"tokens": tokens},
                           masks=masks)
    for (method, params), maps in zip(entries, batch):
        m = METHODS.get(method) if isinstance(method, str) else method
        alone = torch.cat([m(model, images[i:i + 1], targets[i:i + 1], batch_size=3,
                             additional_inputs={"tokens": tokens[i:i + 1]},
                             **({"masks": masks[i:i + 1]} if m.needs else {}), **params) for i in range(4)])
        assert maps.shape[0] == 4 and maps.shape[-2:] == (32, 32)
        torch.testing.assert_close(maps, alone, rtol=1e-4, atol=1e-6, msg=lambda s, e=(m.name, params): f"{e}: {s}")


@pytest.mark.parametrize("arch", sorted(TINY))
def test_maps_follow_the_question(arch: str) -> None:
    """The same image asked two questions: model-dependent maps differ, model-free controls do not."""
    model = vqa_model(arch)
    images, tokens, _ = vqa_inputs()
    targets = torch.tensor([1, 1, 1, 1])
    names = ["gradient", "integrated_gradients", "gradcam", "lrp", "edge"]
    maps = attribute_many(model, images, targets, [(n, FAST.get(n, {})) for n in names],
                          additional_inputs={"tokens": tokens})
    for name, m in zip(names, maps):
        same = torch.allclose(m[2], m[3], atol=1e-6)
        assert same == (name == "edge"), name


def test_question_models_need_their_inputs_and_rows_are_checked() -> None:
    model = vqa_model("film")
    images, tokens, targets = vqa_inputs()
    with pytest.raises(TypeError, match="tokens"):
        attribute_many(model, images, targets, [("gradient", {})])
    with pytest.raises(SalbenchError, match=r"additional_inputs\['tokens'\] must be a tensor with 4 rows"):
        attribute_many(model, images, targets, [("gradient", {})], additional_inputs={"tokens": tokens[:3]})
    with pytest.raises(SalbenchError, match="4 rows"):
        METHODS.get("gradcam")(model, images, targets, additional_inputs={"tokens": tokens[:1]})


def test_shard_key_covers_the_questions() -> None:
    images, tokens, targets = vqa_inputs()
    key = shard_key({"method": "gradient"}, 0, images, targets, {"tokens": tokens}, "float32")
    other = tokens.clone()
    other[0, 0] = 7
    assert key != shard_key({"method": "gradient"}, 0, images, targets, {"tokens": other}, "float32")
    assert key == shard_key({"method": "gradient"}, 0, images, targets, {"tokens": tokens.clone()}, "float32")


def test_function_methods_get_the_extra_inputs_only_when_they_take_them() -> None:
    sig = inspect.signature(METHODS.get("edge").fn)
    assert "additional_inputs" not in sig.parameters
    assert "additional_inputs" not in METHODS.get("random").params()


class _Questions:
    """An in-memory question reader (the interface of salbench.vqa.samples.QuestionReader)."""

    keys = ("images", "label", "tokens", "gt_mask")

    def __init__(self, tokens: torch.Tensor) -> None:
        images, _, _ = vqa_inputs()
        self.arrays = {"images": (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy(),
                       "label": torch.tensor([0, 1, 2, 3]).numpy(), "tokens": tokens.numpy(),
                       "gt_mask": (images[:, 0] > 0.5).numpy()}

    def __len__(self) -> int:
        return 4

    def read(self, key: str, start: int = 0, stop: int | None = None):
        return self.arrays[key][start:stop]

    def blocks(self, size: int):
        return ((i, min(4, i + size)) for i in range(0, 4, size))


def test_streamed_maps_follow_the_questions_shard_by_shard(tmp_path) -> None:
    """The attribute loop with tokens: maps equal attribute_many with them; a changed question recomputes only
    its shard, and the manifest's key covers the tokens."""
    from salbench.attribution.cache import load_maps, read_manifest
    from salbench.attribution.stream import attribute_split
    from salbench.models import preprocess

    model = vqa_model("relation-network")
    _, tokens, _ = vqa_inputs()
    entries = {"gradient": {}, "lrp": {}, "gt_mask": {}}

    def run(t: torch.Tensor):
        return attribute_split(model, {"family": "cnn", "input_size": 32}, _Questions(t), entries, tmp_path,
                               model_hash="h", seed=0, batch_size=4, shard_size=2, additional=("tokens",))

    assert run(tokens).computed == {"gradient": 2, "lrp": 2, "gt_mask": 2}
    reader = _Questions(tokens)
    images = preprocess(reader.read("images"), {"input_size": 32})
    targets = model(images, tokens).argmax(1)
    expected = attribute_many(model, images, targets, [("gradient", {})], additional_inputs={"tokens": tokens})[0]
    maps, explained, _ = load_maps(tmp_path / "gradient")
    torch.testing.assert_close(maps, expected)
    assert torch.equal(explained, targets)
    key = read_manifest(tmp_path / "lrp")["key"]
    assert run(tokens).kept == {"gradient": 2, "lrp": 2, "gt_mask": 2}
    changed = tokens.clone()
    changed[3, 0] = 2
    stats = run(changed)
    assert stats.computed == {"gradient": 1, "lrp": 1, "gt_mask": 1} and stats.kept == stats.computed
    assert read_manifest(tmp_path / "lrp")["key"] != key
