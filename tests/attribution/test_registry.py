"""Every registered method, on a CNN and a ViT (bare and wrapped): the uniform contract."""
from __future__ import annotations

import pytest
import torch

from salbench.attribution import METHODS
from salbench.registry import UnknownNameError

from attribution.attr_helpers import FAST, MODELS

# Maps that are random by design: equal across calls with the same seed, not across batch splits.
RANDOM_BY_DESIGN = {"random"}
# Control maps: independent of the model and the class by design (tests/attribution/test_controls.py).
CONTROLS = {"random", "edge", "gt_mask", "gt_blur"}
CASES = [(m, k) for m in METHODS for k in MODELS]


@pytest.fixture(scope="module")
def models():
    return {k: make() for k, make in MODELS.items()}


def _inputs(method, images):
    """The per-sample inputs a method declares (GT masks: a square per image), as keywords."""
    masks = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.bool)
    for i in range(len(masks)):
        masks[i, 4 * i:4 * i + 10, 3 + 2 * i:15 + 2 * i] = True
    return {key: {"masks": masks}[key] for key in method.needs}


def _state(model):
    flags = [p.requires_grad for p in model.parameters()] + [m.training for m in model.modules()]
    return {k: v.clone() for k, v in model.state_dict().items()}, flags


@pytest.mark.parametrize("name,kind", CASES)
def test_contract(name, kind, models, images, targets):
    method, model = METHODS.get(name), models[kind]
    inputs = _inputs(method, images)
    params = {**FAST.get(name, {}), **inputs}
    model.train()  # attribution must switch to eval mode itself and restore every module's mode
    next(model.children()).eval()
    before, flags = _state(model)
    x = images.clone()

    maps = method(model, images, targets, batch_size=4, **params)

    n, c, h, w = images.shape
    assert maps.shape in {(n, c, h, w), (n, 1, h, w)}
    assert maps.dtype == torch.float32 and maps.device == images.device
    assert torch.isfinite(maps).all()
    assert maps.abs().sum() > 0
    assert torch.equal(images, x), "the method changed its input"
    after, flags_after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before), "the method changed the model's state"
    assert flags_after == flags and all(p.grad is None for p in model.parameters())

    with torch.no_grad():  # a caller's no_grad must not break methods that need gradients
        assert torch.equal(method(model, images, targets, batch_size=4, **params), maps), "not deterministic"
    chunked = method(model, images, targets, batch_size=1, **params)
    torch.testing.assert_close(chunked, maps, rtol=1e-4, atol=1e-6)
    if name not in RANDOM_BY_DESIGN:
        one_by_one = torch.cat([method(model, images[i:i + 1], targets[i:i + 1], **FAST.get(name, {}),
                                       **{k: v[i:i + 1] for k, v in inputs.items()}) for i in range(n)])
        torch.testing.assert_close(one_by_one, maps, rtol=1e-4, atol=1e-6)
    model.eval()


@pytest.mark.parametrize("name", sorted(set(METHODS) - CONTROLS))
def test_depends_on_target(name, models, images, targets):
    """A method that ignored the class would give the same map for every target."""
    model, params = models["cnn"], FAST.get(name, {})
    a = METHODS.get(name)(model, images, targets, **params)
    b = METHODS.get(name)(model, images, (targets + 1) % 5, **params)
    assert not torch.allclose(a, b)


def test_random_is_seeded(models, images, targets):
    method = METHODS.get("random")
    assert torch.equal(method(models["cnn"], images, targets, seed=3), method(models["vit"], images, targets, seed=3))
    other = method(models["cnn"], images, targets, seed=4)
    assert not torch.equal(method(models["cnn"], images, targets, seed=3), other)


def test_unknown_method_lists_known_names():
    with pytest.raises(UnknownNameError) as err:
        METHODS.get("gradcma")
    message = str(err.value)
    assert "'gradcam'" in message and "Did you mean" in message
    assert all(name in message for name in METHODS)


def test_unknown_param_lists_known_ones(models, images, targets):
    with pytest.raises(TypeError, match=r"gradcam: unknown parameter\(s\) \['layr'\]; known: \['relu'\]"):
        METHODS.get("gradcam")(models["cnn"], images, targets, layr="layer3")
    with pytest.raises(UnknownNameError, match="channel aggregation 'mean'.*l2_pos"):
        METHODS.get("linear_approx")(models["cnn"], images, targets, aggregation="mean")


def test_bad_inputs_say_what_to_pass(models, images, targets):
    method = METHODS.get("gradient")
    with pytest.raises(ValueError, match="integer tensor of shape \\(4,\\)"):
        method(models["cnn"], images, targets.float())
    with pytest.raises(ValueError, match="N×C×H×W"):
        method(models["cnn"], images[0], targets)


def test_lrp_rule_of_the_other_family_names_the_right_ones(models, images, targets):
    with pytest.raises(ValueError, match=r"rule 'attnlrp' does not apply to a cnn model.*epsilon_plus_flat"):
        METHODS.get("lrp")(models["cnn"], images, targets, rule="attnlrp")
