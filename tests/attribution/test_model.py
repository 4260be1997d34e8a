"""Layer names, defaults per family, and ViT token grids for any input size."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from torch import nn

from salbench.attribution import METHODS, default_layer, inspect_model, resolve_layer
from salbench.registry import UnknownNameError

from attribution.attr_helpers import Normalised, tiny_resnet, tiny_vit


def test_layer_names_with_or_without_the_wrapper_prefix():
    wrapped = Normalised(tiny_resnet())
    assert resolve_layer(wrapped, "layer4") == resolve_layer(wrapped, "net.layer4") == "net.layer4"
    assert resolve_layer(tiny_resnet(), "layer2.0.conv1") == "layer2.0.conv1"
    assert resolve_layer(Normalised(tiny_vit(depth=3)), "blocks.-1.norm1") == "net.blocks.2.norm1"


def test_default_layers_per_family():
    assert default_layer(tiny_resnet()) == "layer4"
    assert default_layer(Normalised(tiny_resnet())) == "net.layer4"
    assert default_layer(tiny_vit(depth=3)) == "blocks.2.norm1"
    assert default_layer(Normalised(tiny_vit())) == "net.blocks.1.norm1"
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert default_layer(plain) == "2"
    assert inspect_model(Normalised(tiny_vit())).family == "vit"
    assert inspect_model(Normalised(tiny_resnet())).family == "cnn"


def test_unknown_layer_lists_the_options():
    with pytest.raises(UnknownNameError) as err:
        resolve_layer(Normalised(tiny_resnet()), "layer5")
    message = str(err.value)
    assert "Did you mean 'layer4'" in message and "layer1.0" in message and "fc" in message
    with pytest.raises(UnknownNameError, match="blocks.1.norm1, blocks.1.attn"):
        METHODS.get("gradcam")(tiny_vit(), torch.rand(1, 3, 32, 32), torch.tensor([0]), layer="blocks.9")


def test_a_layer_without_spatial_extent_is_explained(images, targets):
    with pytest.raises(ValueError, match="no spatial layout; choose a convolutional stage"):
        METHODS.get("normgrad")(tiny_resnet(), images, targets, layer="fc")


def _gradcam_by_hand(model, layer, images, targets, prefix_tokens, grid):
    """Tokens reshaped to the patch grid by hand, then GradCAM's formula and bilinear upsampling."""
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o) and None)
    x = images.clone().requires_grad_(True)
    score = model(x).gather(1, targets[:, None]).sum()
    (grad,) = torch.autograd.grad(score, seen[0])
    handle.remove()

    def to_grid(t):
        n, _, d = t.shape
        return t[:, prefix_tokens:].reshape(n, grid[0], grid[1], d).permute(0, 3, 1, 2)

    a, g = to_grid(seen[0].detach()), to_grid(grad)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    return F.interpolate(cam, size=images.shape[2:], mode="bilinear", align_corners=False)


VITS = {
    "vit-32d-2l-p8": lambda size: tiny_vit(img_size=size),
    "vit-48d-3l-p4": lambda size: tiny_vit(img_size=size, patch_size=4, embed_dim=48, depth=3, num_heads=3),
    "vit-reg4-avgpool": lambda size: tiny_vit(img_size=size, reg_tokens=4, global_pool="avg"),
    "deit-distilled": lambda size: VisionTransformerDistilled(img_size=size, patch_size=8, embed_dim=32, depth=2,
                                                              num_heads=2, num_classes=5).eval(),
}


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("arch", VITS)
def test_vit_gradcam_matches_hand_reshaped_tokens(arch, size, targets):
    torch.manual_seed(0)
    model = VITS[arch](size)
    images = torch.rand((4, 3, size, size), generator=torch.Generator().manual_seed(2))
    patch = model.patch_embed.patch_size[0]
    layer = default_layer(model)
    expected = _gradcam_by_hand(model, layer, images, targets, model.num_prefix_tokens, (size // patch,) * 2)
    maps = METHODS.get("gradcam")(model, images, targets)
    assert maps.shape == (4, 1, size, size)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)
    assert maps.flatten(1).std(1).max() > 0  # a spatial map (ReLU may zero a whole map of an untrained ViT)


def test_dynamic_size_vit_at_two_input_sizes(targets):
    model = tiny_vit(dynamic_img_size=True)
    for size, grid in ((32, 4), (48, 6)):
        images = torch.rand((4, 3, size, size), generator=torch.Generator().manual_seed(size))
        expected = _gradcam_by_hand(model, "blocks.1.norm1", images, targets, 1, (grid, grid))
        torch.testing.assert_close(METHODS.get("gradcam")(model, images, targets), expected, rtol=1e-5, atol=1e-7)
        # The patch embedding of a dynamic-size ViT is channels-last (N×h×w×D): also laid out as N×D×h×w.
        maps = METHODS.get("normgrad")(model, images, targets, layer="patch_embed")
        assert maps.shape == (4, 1, size, size) and maps.flatten(1).std(1).min() > 0
