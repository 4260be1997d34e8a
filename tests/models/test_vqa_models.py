"""Question-conditioned models (every QUESTION_MODELS entry): shapes, question dependence, padding, pooling,
FiLM's block against a hand computation, checkpoints of question models."""
from __future__ import annotations

import pytest
import torch

from salbench.models import QUESTION_MODELS, build_question_model, load_checkpoint, save_checkpoint
from salbench.models.film import FiLM, FiLMBlock
from salbench.models.question import as_question_spec
from salbench.params import ParamsError
from salbench.registry import UnknownNameError

TINY = {
    "film": dict(stem=(8, 8), blocks=2, embed_dim=8, question_dim=16, head=16, f=(16,)),
    "relation-network": dict(conv_channels=(8, 8, 8), embed_dim=8, question_dim=16, g=(32, 32), f=(32,)),
}


def model(arch: str, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_question_model(arch, 7, 20, 32, **{**TINY[arch], **kw})
    if isinstance(m, FiLM):  # Δγ, β start at 0 (plain residual blocks); give the question a say
        torch.nn.init.normal_(m.film.weight, std=0.5)
    return m.eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 32, 32, generator=g)
    tokens = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 2], [5, 0, 0, 0, 0]])
    return images, tokens


def test_every_question_model_has_tiny_settings() -> None:
    assert sorted(TINY) == QUESTION_MODELS.names()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_shapes_and_checkpoint_attributes(arch: str) -> None:
    m = model(arch)
    images, tokens = inputs()
    assert m(images, tokens).shape == (3, 7)
    assert (m.arch, m.num_classes, m.input_size, m.kwargs) == (arch, 7, 32, TINY[arch])


@pytest.mark.parametrize("encoder", ["recurrent", "bow"])
@pytest.mark.parametrize("arch", sorted(TINY))
def test_output_depends_on_the_question_and_image_not_on_padding(arch: str, encoder: str) -> None:
    m = model(arch, encoder=encoder)
    images, tokens = inputs()
    out = m(images, tokens)
    other = tokens.clone()
    other[0, 1] = 11
    changed = m(images, other)
    assert not torch.allclose(changed[0], out[0], atol=1e-4) and torch.equal(changed[1:], out[1:])
    padded = torch.cat([tokens, torch.zeros(3, 4, dtype=torch.int64)], dim=1)
    torch.testing.assert_close(m(images, padded), out)
    same_question = tokens[[0, 0, 0]]
    assert not torch.allclose(m(images, same_question)[0], m(images, same_question)[1], atol=1e-4)
    with pytest.raises(ValueError, match="int64 N×L"):
        m(images, tokens.int())


@pytest.mark.parametrize("arch", sorted(TINY))
def test_forward_grouped_is_forward_on_the_gathered_images(arch: str) -> None:
    m = model(arch)
    images, tokens = inputs()
    index = torch.tensor([2, 0, 2])
    torch.testing.assert_close(m.forward_grouped(images, tokens, index), m(images[index], tokens), rtol=0, atol=0)
    torch.testing.assert_close(m.answer(m.features(images), tokens), m(images, tokens), rtol=0, atol=0)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_pool_is_the_same_model_on_the_average_pooled_image(arch: str) -> None:
    pooled, plain = model(arch, pool=2), model(arch)
    images, tokens = inputs()
    images.requires_grad_(True)
    out = pooled(images, tokens)
    torch.testing.assert_close(out, plain(torch.nn.functional.avg_pool2d(images, 2), tokens))
    out.sum().backward()
    assert (images.grad != 0).float().mean() > 0.99  # every pixel reaches the answer


def test_film_block_matches_a_hand_computation() -> None:
    torch.manual_seed(0)
    block = FiLMBlock(4).eval()
    block.norm.running_mean.uniform_(-1, 1)
    block.norm.running_var.uniform_(0.5, 2)
    x, coords = torch.randn(2, 4, 5, 5), torch.randn(2, 2, 5, 5)
    gamma, beta = torch.randn(2, 4), torch.randn(2, 4)
    r = torch.relu(torch.nn.functional.conv2d(torch.cat([x, coords], 1), block.proj.weight, block.proj.bias))
    y = torch.nn.functional.conv2d(r, block.conv.weight, padding=1)
    y = (y - block.norm.running_mean[:, None, None]) / torch.sqrt(block.norm.running_var[:, None, None] + 1e-5)
    expected = r + torch.relu(y * gamma[:, :, None, None] + beta[:, :, None, None])
    torch.testing.assert_close(block(x, coords, gamma, beta), expected, rtol=1e-5, atol=1e-5)


def test_untrained_film_blocks_are_unmodulated() -> None:
    torch.manual_seed(0)
    m = build_question_model("film", 7, 20, **TINY["film"]).eval()
    images, tokens = inputs()
    torch.testing.assert_close(m(images, tokens), m(images, tokens.flip(0)))  # γ = 1, β = 0 for every question


@pytest.mark.parametrize("encoder", ["recurrent", "bow"])
@pytest.mark.parametrize("arch", sorted(TINY))
def test_checkpoint_round_trip(arch: str, encoder: str, tmp_path) -> None:
    m = model(arch, pool=2, encoder=encoder)
    answers, tokens = [f"a{i}" for i in range(7)], [f"w{i}" for i in range(20)]
    save_checkpoint(tmp_path / "ck", m, {"task": "t", "classes": answers, "tokens": tokens, "accuracy": {},
                                         "params_hash": "x", "seed": 0, "versions": {}})
    loaded, manifest = load_checkpoint(tmp_path / "ck")
    images, q = inputs()
    assert type(loaded) is type(m) and manifest["input_size"] == 32 and manifest["family"] == m.family
    torch.testing.assert_close(loaded(images, q), m(images, q), rtol=0, atol=0)


@pytest.mark.parametrize("arch", sorted(TINY))
def test_bag_of_words_encoder_is_the_mean_embedding_and_ignores_word_order(arch: str) -> None:
    m = model(arch, encoder="bow")
    images, tokens = inputs()
    shuffled = tokens.clone()
    shuffled[1] = tokens[1, [4, 2, 0, 3, 1]]
    torch.testing.assert_close(m(images, shuffled), m(images, tokens))
    lin = m.bow[0]
    mean = m.embed(tokens[:1, :3]).mean(1)
    torch.testing.assert_close(m.question(tokens[:1]), torch.relu(mean @ lin.weight.T + lin.bias))
    recurrent = model(arch)
    assert not torch.allclose(recurrent(images, shuffled)[1], recurrent(images, tokens)[1], atol=1e-5)
    with pytest.raises(ParamsError, match="kwargs.encoder"):
        model(arch, encoder="transformer")


def test_spec_validation() -> None:
    assert as_question_spec("film", "w") == {"arch": "film", "kwargs": {}}
    with pytest.raises(ParamsError, match="pretrained"):
        as_question_spec({"arch": "film", "pretrained": True}, "train.vqa_models.x.model")
    with pytest.raises(UnknownNameError, match="'film'"):
        as_question_spec({"arch": "flim"}, "w")
    with pytest.raises(ParamsError, match="names no arch"):
        as_question_spec({}, "w")
