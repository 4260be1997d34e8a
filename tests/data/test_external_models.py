"""Models from a local checkpoint (salbench.models.external): entry point, TorchScript and timm weights are
packaged by the train stage into the trained-model layout and load back with the same outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from data_helpers import CLASSES, SIZE, tiny_cnn, write_task
from safetensors.torch import save_file

from salbench.errors import SalbenchError
from salbench.models import load_checkpoint
from salbench.models.external import build_external, check_hooks

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
RL = {"n_train": 8, "epochs": 1, "batch_size": 8}


def _train(tmp: Path, entry: dict) -> subprocess.CompletedProcess:
    params = {"train": {"tasks": ["t"], "models": {"ext": {"source": "checkpoint", "input_size": SIZE,
                                                           "random_labels": RL, **entry}}}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(ROOT / "stages" / "train.py"), "--task", "t", "--model", "ext", "--params",
           str(tmp / "params.yaml"), "--data", str(tmp / "render" / "t"), "--out", str(tmp / "models" / "ext")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp, env=env)


@pytest.fixture
def net() -> torch.nn.Module:
    torch.manual_seed(3)
    return tiny_cnn(len(CLASSES)).eval()


@pytest.mark.parametrize("kind", ["entry", pytest.param("torchscript", marks=pytest.mark.slow)])  # ~12 s each
def test_train_stage_packages_the_model(tmp_path, net, kind, monkeypatch) -> None:
    write_task(tmp_path / "render" / "t")
    if kind == "entry":
        save_file(net.state_dict(), tmp_path / "w.safetensors")
        entry = {"entry": "data_helpers:tiny_cnn", "kwargs": {"num_classes": 3}, "weights": str(tmp_path / "w.safetensors")}
    else:
        torch.jit.script(net).save(str(tmp_path / "net.pt"))
        entry = {"torchscript": str(tmp_path / "net.pt")}
    proc = _train(tmp_path, {**entry, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "models" / "ext"
    assert {p.name for p in out.iterdir()} >= {"final", "random_init", "random_labels", "checkpoints", "metrics.json"}
    assert not any((out / "checkpoints").iterdir())
    monkeypatch.syspath_prepend(str(HERE))
    final, manifest = load_checkpoint(out / "final")
    twin = load_checkpoint(out / "random_init")[0]
    x = torch.rand(4, 3, SIZE, SIZE)
    with torch.no_grad():
        want = net((x - 0.5) / 0.25)
        assert torch.allclose(final(x), want, atol=1e-6)  # preprocessing inside, weights as given
        assert not torch.allclose(twin(x), want, atol=1e-3)
    assert manifest["external"]["kind"] == kind and manifest["family"] == "cnn" and manifest["classes"] == CLASSES
    assert load_checkpoint(out / "random_labels")[1]["n_train"] == 8


def test_torchscript_hook_methods_stop_naming_the_entries(tmp_path, net) -> None:
    torch.jit.script(net).save(str(tmp_path / "net.pt"))
    model = build_external({"torchscript": str(tmp_path / "net.pt"), "input_size": SIZE}, 3)
    safe = {"gradient": {}, "ig": {"method": "integrated_gradients"}, "sg": {"method": "smoothgrad"}}
    hooked = {"gradcam": {}, "guided_backprop": {}, "sg_gb": {"method": "smoothgrad", "base": "guided_backprop"}}
    with pytest.raises(SalbenchError, match=r"\['gradcam', 'guided_backprop', 'sg_gb'\] hook modules"):
        check_hooks(model, {**safe, **hooked})
    check_hooks(model, safe)  # autograd only: fine
    check_hooks(build_external({"entry": "data_helpers:tiny_cnn", "input_size": SIZE}, 3), hooked)  # not scripted


def test_timm_weights_and_bad_specs(tmp_path) -> None:
    from salbench.models import build_model
    from salbench.models.zoo import ModelSpecError

    torch.manual_seed(0)
    ref = build_model({"arch": "resnet10t"}, 3, SIZE).eval()
    save_file({k.removeprefix("net."): v for k, v in ref.state_dict().items() if k.startswith("net.")},
              tmp_path / "r.safetensors")
    model = build_external({"timm": "resnet10t", "weights": str(tmp_path / "r.safetensors"), "input_size": SIZE,
                            "mean": ref.mean.flatten().tolist(), "std": ref.std.flatten().tolist()}, 3).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x)) and model.family == "cnn"
    with pytest.raises(ModelSpecError, match="outputs of shape \\(1, 3\\).*4 classes"):
        build_external({"entry": "data_helpers:tiny_cnn", "input_size": SIZE}, 4)
    with pytest.raises(ModelSpecError, match="cannot import"):
        build_external({"entry": "no_such_module:f", "input_size": SIZE}, 3)
