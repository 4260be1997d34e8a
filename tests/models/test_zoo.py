"""Model registry, timm names, pretrained weights from a local file, preprocessing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from models.model_specs import MODEL_SPECS
from safetensors.torch import save_file

from salbench.models import MODELS, ModelSpecError, build_model, preprocess, to_unit
from salbench.registry import UnknownNameError


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_registered_model_shapes_and_family(spec: dict) -> None:
    torch.manual_seed(0)
    model = build_model(spec, num_classes=5, input_size=32)
    assert model.family in ("cnn", "vit") and model.arch == spec["arch"]
    assert model(torch.rand(3, 3, 32, 32)).shape == (3, 5)


@pytest.mark.parametrize("spec", MODEL_SPECS)
def test_registered_model_overfits_a_tiny_batch(spec: dict, fake_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = fake_batch
    torch.manual_seed(0)
    model = build_model(spec, num_classes=4, input_size=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = to_unit(images)
    for _ in range(60):
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert (logits.argmax(1) == labels).all()
    assert F.cross_entropy(logits, labels).item() < 0.1


def test_normalisation_is_inside_the_model() -> None:
    torch.manual_seed(0)
    model = build_model("resnet-small", 3, 32).eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(timm.data.IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(timm.data.IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), model.net((x - mean) / std), rtol=0, atol=0)


@pytest.mark.parametrize("arch, family", [("resnet18", "cnn"), ("deit_tiny_patch16_224", "vit"),
                                          ("vit_tiny_patch16_224", "vit")])
def test_timm_names_build_at_the_task_size(arch: str, family: str) -> None:
    model = build_model({"arch": arch}, num_classes=3, input_size=64)
    assert model.family == family and model.num_classes == 3
    if family == "vit":
        assert model.net.patch_embed.grid_size == (4, 4)  # img_size follows the task, not the 224 default
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)


def test_unknown_model_lists_known_names_and_close_matches() -> None:
    with pytest.raises(UnknownNameError) as e:
        build_model("resnet-smal", 3, 32)
    msg = str(e.value)
    assert "Did you mean 'resnet-small'" in msg
    assert all(name in msg for name in MODELS.names())


@pytest.mark.parametrize("spec, match", [
    ({"arch": "test_efficientnet"}, "supports the timm ResNet family"),
    ({"arch": "resnet-small", "lr": 1}, r"unknown model spec keys \['lr'\]"),
    ({"arch": "resnet-small", "pretrained": True}, "without pretrained weights"),
    ({"arch": "resnet18", "pretrained": "resnet34.a1_in1k"}, "weights for 'resnet34', not arch 'resnet18'"),
    ({"arch": "resnet18", "pretrained_file": "w.pth"}, "without pretrained"),
    ({}, "names no arch"),
])
def test_bad_specs_say_what_to_change(spec: dict, match: str) -> None:
    with pytest.raises(ModelSpecError, match=match):
        build_model(spec, 3, 32)


def test_pretrained_weights_from_a_local_file(tmp_path: Path) -> None:
    """A timm pretrained name loaded offline from a file the test writes: backbone kept, head replaced."""
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(2)
    model = build_model({"pretrained": "test_resnet", "pretrained_file": str(path)}, num_classes=4, input_size=32)
    assert model.arch == "test_resnet" and model.num_classes == 4
    cfg = timm.models.get_pretrained_cfg("test_resnet")
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(cfg.mean))
    state, want = model.net.state_dict(), source.state_dict()
    body = [k for k in want if not k.startswith("fc.")]
    assert body and all(torch.equal(state[k], want[k]) for k in body)
    assert state["fc.weight"].shape == (4, want["fc.weight"].shape[1])
    with pytest.raises(ModelSpecError, match="pretrained_file .*nope.pth does not exist"):
        build_model({"pretrained": "test_resnet", "pretrained_file": str(tmp_path / "nope.pth")}, 4, 32)
    (tmp_path / "bad.pth").write_bytes(b"not weights")
    with pytest.raises(ModelSpecError, match="could not load pretrained weights 'test_resnet'.*pretrained_file"):
        build_model({"pretrained": "test_resnet", "pretrained_file": str(tmp_path / "bad.pth")}, 4, 32)


def test_preprocess_scales_to_unit_range_and_checks_size() -> None:
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[0, 1, 2] = (255, 51, 0)
    x = preprocess(images, {"input_size": 32})
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert x[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.2, 0.0], abs=1e-7) and x.sum().item() == pytest.approx(1.2)
    with pytest.raises(ValueError, match="model takes 64×64"):
        preprocess(images, {"input_size": 64})
    with pytest.raises(ValueError, match="uint8 N×H×W×3"):
        preprocess(images.astype(np.float32), {"input_size": 32})
