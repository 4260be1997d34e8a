"""Every bad params.yaml value stops every stage before any work: `error: <key path>: ...`, exit 2, nothing written.

Most cases run in-process (the validator, and each stage script's start-up through runpy); one case per stage
runs the script as a subprocess, which also shows that no heavy library was imported before the error.
"""
from __future__ import annotations

import ast
import copy
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from helpers import ROOT

from salbench.attribution import METHODS
from salbench.config import sections as S
from salbench.config.validate import STAGE_SECTIONS, listing, metric_params, method_params, validate_params
from salbench.metrics import METRICS
from salbench.params import ParamsError
from salbench.profile import load_profile, merge
from salbench.render import TASKS

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
STAGES = list(STAGE_SECTIONS)
SELECTORS = {"render": ["--task", "unique-query"], "train": ["--task", "unique-query", "--model", "resnet-small"],
             "attribute": ["--task", "unique-query", "--model", "resnet-small"],
             "evaluate": ["--task", "unique-query", "--model", "resnet-small"], "generate": ["--generator", "renderer"],
             "permutation": [], "plot": [], "import": ["--task", "unique-query"]}
MISSING = object()


def edited(changes: dict[str, Any], base: dict[str, Any] = PARAMS) -> dict[str, Any]:
    """A copy of ``base`` with dotted keys set (MISSING deletes the key)."""
    params = copy.deepcopy(base)
    for path, value in changes.items():
        *head, last = path.split(".")
        node = params
        for k in head:
            node = node[k]
        if value is MISSING:
            del node[last]
        else:
            node[last] = value
    return params


# (dotted key, bad value, fragment the message must hold): typos, types, ranges, registry names, paths, tasks.
BAD = [
    ("render.resolutoin", 64, "render.resolutoin: unknown key (did you mean 'resolution'?)"),
    ("render.max_objects", "many", "render.max_objects: expected an integer, got 'many'"),
    ("render.resolution", 16, "render.resolution: 16 is below the minimum of 32"),
    ("render.colors", ["red", "pink"], "render.colors: unknown color 'pink'"),
    ("render.tasks", ["unique-qurey", "presence"],
     "render.tasks: unknown task 'unique-qurey'. Did you mean 'unique-query'?"),
    ("render.splits", {"train": 10, "val": 2, "tst": 2}, "render.splits.tst: unknown key (did you mean 'test'?)"),
    ("tasks.unique-query.targte", "color", "tasks.unique-query.targte: unknown key (did you mean 'target'?)"),
    ("tasks.presence.rule", "red_cube and purple", "tasks.presence.rule uses unknown concept 'purple'"),
    ("tasks.presence.spurious.p", 1.5, "tasks.presence.spurious.p: 1.5 is above the maximum of 1"),
    ("tasks.presence.world", {"zom": 1.5}, "tasks.presence.world.zom: unknown key (did you mean 'zoom'?)"),
    ("tasks.presence.world", {"max_objects": 2, "min_objects": 3},
     "tasks.presence.world: need 1 <= render.min_objects <= render.max_objects"),
    ("tasks.unique-query.world", {"resolution": 64}, "tasks.unique-query.world.resolution: unknown key"),
    ("render.zoom", 0, "render.zoom: 0 must be > 0"),
    ("train.models.resnet-small.epochs", "eight", "train.models.resnet-small.epochs: expected an integer"),
    ("train.models.resnet-small.lr", "1e-3", "train.models.resnet-small.lr: expected a number, got '1e-3'"),
    ("train.models.resnet-small.random_labels.epoch", 1,
     "train.models.resnet-small.random_labels.epoch: unknown key (did you mean 'epochs'?)"),
    ("train.models.resnet-small.model", {"arch": "resnet-small", "kwargz": {}},
     "train.models.resnet-small.model.kwargz: unknown key (did you mean 'kwargs'?)"),
    ("train.models.resnet-small.model", {"arch": "resnet18", "pretrained": True, "pretrained_file": "no/such.pth"},
     "train.models.resnet-small.model.pretrained_file: no file 'no/such.pth'"),
    ("train.device", "gpu", "train.device: 'gpu' is not a device"),
    ("train.min_test_accuracy", {"unique-query": 0.9}, "train.min_test_accuracy has no entry for task 'presence'"),
    ("attribute.batch_size", "big", "attribute.batch_size: expected an integer, got 'big'"),
    ("attribute.split", "tst", "attribute.split: 'tst' is not one of 'train', 'val', 'test'"),
    ("attribute.explain", "predicetd", "attribute.explain: unknown class to explain 'predicetd'"),
    ("attribute.workers", -2, "attribute.workers: -2 is below the minimum of 0"),
    ("attribute.ray", {"adress": "127.0.0.1:6379"}, "attribute.ray.adress: unknown key (did you mean 'address'?)"),
    ("attribute.ray", {"max_retries": "3"}, "attribute.ray.max_retries: expected an integer, got '3'"),
    ("attribute.methods.integrated_gradients", {"stpes": 8},
     "attribute.methods.integrated_gradients.stpes: unknown parameter (did you mean 'steps'?); integrated_gradients "
     "takes: steps (int >= 1, default 32), baseline (float, default 0.0)"),
    ("attribute.methods.integrated_gradients", {"steps": "eight"},
     "attribute.methods.integrated_gradients.steps: expected an integer, got 'eight'"),
    ("attribute.methods.integrated_gradients", {"steps": 0},
     "attribute.methods.integrated_gradients.steps: 0 is below the minimum of 1"),
    ("attribute.methods.smoothgrad", {"samples": -3}, "attribute.methods.smoothgrad.samples: -3 is below the minimum"),
    ("attribute.methods.smoothgrad", {"base": "gradcam", "layr": "layer3"},
     "attribute.methods.smoothgrad.layr: unknown parameter (did you mean 'layer'?)"),
    ("attribute.methods.gradcm", {},
     "attribute.methods.gradcm: unknown attribution method 'gradcm'. Did you mean 'gradcam'"),
    ("attribute.methods.gradcam@1", {"method": "gradcam", "layer": {"cnn": "layer1"}},
     "attribute.methods.gradcam@1.layer is given per family ['cnn'] but not for 'vit'"),
    ("attribute.methods.normgrad_multi", {"method": "normgrad", "layers": ["layer2"], "weights": [1.0]},
     "attribute.methods.normgrad_multi.weights: combine 'product' takes no weights"),
    ("attribute.methods.linear_approx", {"aggregation": "mean"},
     "attribute.methods.linear_approx.aggregation: unknown channel aggregation 'mean'"),
    ("evaluate.n_boot", 0, "evaluate.n_boot: 0 is below the minimum of 1"),
    ("evaluate.metrics.pointing_game", {"tolerence": 1},
     "evaluate.metrics.pointing_game.tolerence: unknown parameter (did you mean 'tolerance'?); pointing_game takes:"),
    ("evaluate.metrics.pointing_game", {"tolerance": -1}, "evaluate.metrics.pointing_game.tolerance: -1 is below"),
    ("evaluate.metrics.mass_accuracy", {"sweep": {"pooling": ["l1", "sum"]}},
     "evaluate.metrics.mass_accuracy.sweep.pooling: unknown non-negative pooling 'sum'"),
    ("evaluate.metrics.rank_acuracy", {},
     "evaluate.metrics.rank_acuracy: unknown metric 'rank_acuracy'. Did you mean 'rank_accuracy'"),
    ("evaluate.metrics.cose", {"samples": 0}, "evaluate.metrics.cose.samples: 0 is below the minimum of 1"),
    ("evaluate.meta_saliency.lr", "fast", "evaluate.meta_saliency.lr: expected a number, got 'fast'"),
    ("evaluate.metrics.aopc.baseline", "black", "evaluate.metrics.aopc.baseline: unknown baseline 'black'"),
    ("evaluate.methods", ["gradient", "gradiant"], "evaluate.methods: 'gradiant' is not an attribute.methods entry"),
    ("concepts.generators", ["nonexistent"], "concepts.generators: unknown generator 'nonexistent'"),
    ("concepts.concepts", ["red_cube", "purple_cone"], "concepts.concepts: unknown concept 'purple_cone'"),
    ("concepts.renderer", {"tris": 3}, "concepts.renderer.tris: unknown key (did you mean 'tries'?)"),
    ("concepts.saliency", "gradcm", "concepts.saliency: unknown attribution method 'gradcm'. Did you mean 'gradcam'"),
    ("concepts.diffusion.pretrained", "./no/such/pipeline", "concepts.diffusion.pretrained: no directory"),
    ("concepts.diffusion.stesp", 5, "concepts.diffusion.stesp: unknown key (did you mean 'steps'?)"),
    ("concepts.diffusion.vae_channels", [16, 12], "concepts.diffusion.vae_channels: [16, 12]: give widths that are "
     "multiples of 8"),
    ("concepts.diffusion.vae_channels", [8] * 5, "concepts.diffusion.resolution: 32 must be divisible by "
     "2^(len(channels)-1) = 4 times the autoencoder's 2^(len(vae_channels)-1): 64"),
    ("concepts.threads", -1, "concepts.threads: -1 is below the minimum of 0"),
    ("concepts.h.epochs", -1, "concepts.h.epochs: -1 is below the minimum of 0"),
    ("concepts.models", ["resnet-smal"], "concepts.models: 'resnet-smal' is not in train.models"),
    ("plot.figures", ["exmaples"], "plot.figures: unknown figure 'exmaples'. Did you mean 'examples'?"),
    ("plot.dpi", 0, "plot.dpi: 0 is below the minimum of 1"),
    ("evaluat", {}, "evaluat: unknown key (did you mean 'evaluate'?)"),
]


@pytest.mark.parametrize("key, value, message", BAD, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD])
def test_bad_value_is_a_params_error_naming_the_key(key: str, value: Any, message: str) -> None:
    with pytest.raises(ParamsError) as info:
        validate_params(edited({key: value}))
    text = str(info.value)
    assert message in text
    assert not any(jargon in text for jargon in ("Input should", "validation error", "pydantic", "Traceback"))


def run_stage_inprocess(stage: str, params: dict[str, Any], tmp: Path, capsys: pytest.CaptureFixture,
                        argv: list[str] | None = None) -> tuple[int, str]:
    """Run stages/<stage>.py's start-up in this process (its preflight validates before its heavy imports)."""
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    argv = [f"stages/{stage}.py", *(SELECTORS[stage] if argv is None else argv), "--params", str(path)]
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as info:
        mp.setattr(sys, "argv", argv)
        mp.chdir(tmp)
        runpy.run_path(str(ROOT / "stages" / f"{stage}.py"))
    return info.value.code, capsys.readouterr().err


# Cases of each kind (typo, type, range, missing path, registry name, tasks.<name> typo, method and metric params)
# against every stage script: the whole file is validated by every stage.
STAGE_CASES = [case for case in BAD if case[2].split(":")[0] in {
    "render.resolutoin", "render.max_objects", "render.resolution", "train.models.resnet-small.model.pretrained_file",
    "concepts.diffusion.pretrained", "concepts.generators", "tasks.unique-query.targte", "attribute.split",
    "attribute.methods.integrated_gradients.stpes", "evaluate.metrics.mass_accuracy.sweep.pooling"}]
assert len(STAGE_CASES) == 10  # a changed message must not drop a case silently


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("key, value, message", STAGE_CASES, ids=[k for k, _, _ in STAGE_CASES])
def test_every_stage_stops_before_any_work(stage: str, key: str, value: Any, message: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    code, err = run_stage_inprocess(stage, edited({key: value}), tmp_path, capsys)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # no output, not even a folder


@pytest.mark.parametrize("stage, changes, argv, message", [
    ("generate", {"concepts.device": "cuda"}, None, "concepts.device: 'cuda' but CUDA is not available here"),
    ("permutation", {"concepts.device": "cuda:0"}, None, "concepts.device: 'cuda:0' but CUDA is not available"),
    ("train", {"train.device": "cuda"}, None, "train.device: 'cuda' but CUDA is not available here"),
    ("train", {}, ["--task", "nonexistent", "--model", "resnet-small"],
     "--task nonexistent: unknown task 'nonexistent'; known: presence, unique-query (train.tasks)"),
    ("train", {}, ["--task", "presence", "--model", "resnet-smal"], "--model resnet-smal: unknown model"),
    ("attribute", {"attribute.tasks": ["unique-query"]}, ["--task", "presence", "--model", "vit-tiny"],
     "--task presence: unknown task 'presence'"),
    ("generate", {}, ["--generator", "difusion"], "--generator difusion: unknown generator 'difusion'"),
    ("render", {}, ["--task", "presense"], "--task presense: unknown task 'presense'. Did you mean 'presence'?"),
    ("train", {"train.models.resnet-small.model": {"checkpoint": "no/such/dir"}}, None,
     "train.models.resnet-small.model.checkpoint: no checkpoint directory 'no/such/dir'"),
    ("evaluate", {"evaluate": MISSING}, None, "params.yaml has no 'evaluate' section, which stage evaluate reads"),
])
def test_stage_specific_checks(stage: str, changes: dict, argv: list[str] | None, message: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    code, err = run_stage_inprocess(stage, edited(changes), tmp_path, capsys, argv)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


HEAVY = ("timm", "dvclive", "diffusers", "transformers", "pyrender", "matplotlib")


# The stages with heavy imports as subprocesses (a different kind of error each): the real start-up, exit status,
# stderr, and no heavy library imported before the error. (Every stage's start-up runs in-process above.)
@pytest.mark.parametrize("stage, key, value, message", [
    ("train", "train.models.resnet-small.epochs", "eight", "train.models.resnet-small.epochs: expected an integer"),
    ("evaluate", "evaluate.metrics.pointing_game", {"tolerence": 1}, "pointing_game.tolerence: unknown parameter"),
    ("generate", "concepts.diffusion.pretrained", "./no/such/pipeline", "concepts.diffusion.pretrained: no directory"),
    ("permutation", "concepts.saliency", "gradcm", "concepts.saliency: unknown attribution method 'gradcm'"),
])
def test_stage_script_exits_2_with_error_and_no_traceback(stage: str, key: str, value: Any, message: str,
                                                          tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited({key: value})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-X", "importtime", str(ROOT / "stages" / f"{stage}.py"), *SELECTORS[stage],
           "--params", str(tmp_path / "params.yaml")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - t0
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    err = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    assert proc.returncode == 2 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err and not proc.stdout
    assert not {m for m in imported if m.split(".")[0] in HEAVY}  # validated before the stage's heavy imports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
    assert seconds < 120  # start-up only (about 2 s idle); generous for a shared, loaded machine


def test_default_params_and_the_paper_profile_validate() -> None:
    for params in (PARAMS, merge(PARAMS, load_profile("paper", ROOT))):
        p = validate_params(params)
        assert set(p.model_fields_set) == set(params)
        for stage in STAGES:
            validate_params(params, stage)


def test_a_params_file_that_is_not_yaml_is_a_params_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "params.yaml").write_text("render: {seed: 0\n")
    with pytest.MonkeyPatch.context() as mp, pytest.raises(SystemExit) as info:
        mp.setattr(sys, "argv", ["stages/plot.py", "--params", str(tmp_path / "params.yaml")])
        runpy.run_path(str(ROOT / "stages" / "plot.py"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith(f"error: {tmp_path / 'params.yaml'} is not valid YAML"), err


def test_hub_ids_and_existing_dirs_are_accepted_as_pretrained_pipelines(tmp_path: Path) -> None:
    validate_params(edited({"concepts.diffusion.pretrained": "org/some-pipeline"}))
    validate_params(edited({"concepts.diffusion.pretrained": str(tmp_path)}))
    with pytest.raises(ParamsError, match="no directory"):
        validate_params(edited({"concepts.diffusion.pretrained": str(tmp_path / "missing")}))


def test_sections_a_stage_does_not_read_may_be_absent() -> None:
    validate_params({"attribute": {**PARAMS["attribute"], "tasks": ["t"]}}, "attribute", task="t", model="m")
    validate_params({"train": {"models": {"m": {}}}, "attribute": {"tasks": ["t"]}, "plot": {}}, "plot")


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(ParamsError) as info:
        validate_params(edited({"render.seed": "zero", "plot.dpi": -1}))
    assert str(info.value).count("\nerror: ") == 1
    assert "render.seed: expected an integer" in str(info.value) and "plot.dpi: -1 is below" in str(info.value)


def test_listing_names_every_method_and_metric_with_its_params(capsys: pytest.CaptureFixture) -> None:
    methods, metrics = listing("methods").splitlines(), listing("metrics").splitlines()
    assert [line.split(":")[0] for line in methods] == METHODS.names()
    assert [line.split(":")[0] for line in metrics] == METRICS.names()
    assert "integrated_gradients: steps (int >= 1, default 32), baseline (float, default 0.0)" in methods
    assert "pointing_game: tolerance (int >= 0, default 0), pooling (str in {l1, l2, " in listing("metrics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["python -m salbench.config", "methods"])
        runpy.run_module("salbench.config", run_name="__main__")
    assert capsys.readouterr().out.splitlines() == methods


@pytest.mark.parametrize("name", METHODS.names())
def test_declared_method_params_are_what_the_method_takes(name: str) -> None:
    """Every declared param, given explicitly, validates and the method accepts it (it rejects unknown ones)."""
    from attribution.attr_helpers import FAST, tiny_resnet

    params = {k: p.default for k, p in method_params(name).items()} | FAST.get(name, {})
    validate_params({"attribute": {"methods": {name: params}}})
    images = torch.rand((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    inputs = {"masks": torch.rand(2, 32, 32) > 0.5} if "masks" in METHODS.get(name).needs else {}
    maps = METHODS.get(name)(tiny_resnet(), images, torch.tensor([0, 1]), batch_size=2, **params, **inputs)
    assert maps.shape[0] == 2 and maps.shape[2:] == images.shape[2:]


@pytest.mark.parametrize("name", METRICS.names())
def test_declared_metric_params_validate_their_defaults(name: str) -> None:
    declared = metric_params(name)
    validate_params({"evaluate": {"metrics": {name: {k: p.default for k, p in declared.items()
                                                     if p.default is not None}}}})


def _dataclass_fields(path: Path, cls: str) -> dict[str, Any]:
    """Field names and literal defaults of a dataclass, read from source (importing it would load diffusers)."""
    node = next(n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef) and n.name == cls)
    out = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            try:
                out[stmt.target.id] = ast.literal_eval(stmt.value)
            except ValueError:
                out[stmt.target.id] = None
    return out


@pytest.mark.parametrize("model, source, cls, skip", [
    (S.TrainSettings, "models/training.py", "TrainConfig", ()),
    (S.Diffusion, "concepts/diffusion.py", "DiffusionConfig", ()),
    (S.Render, "render/world.py", "World", ("values",)),
])
def test_section_models_mirror_the_config_classes(model: type, source: str, cls: str, skip: tuple) -> None:
    fields = _dataclass_fields(ROOT / "src/salbench" / source, cls)
    mine = {k: f.default for k, f in model.model_fields.items()}
    for k, v in fields.items():
        if k in skip:
            continue
        assert k in mine, f"{model.__name__} lacks {k}"
        if v is not None:
            assert mine[k] == (list(v) if isinstance(v, tuple) else v), k


def test_section_models_know_every_key_the_stages_read() -> None:
    from salbench.concepts.generators import GENERATORS
    from salbench.concepts.dataset import PARAM_KEYS
    from salbench.evaluate.config import STAGE_KEYS, METRIC_KEYS
    from salbench.models.zoo import SPEC_KEYS

    assert set(S.Concepts.model_fields) == set(PARAM_KEYS)
    assert set(S.Evaluate.model_fields) == set(STAGE_KEYS) and set(S.MetricKeys.model_fields) == set(METRIC_KEYS)
    assert set(S.ModelSpec.model_fields) == set(SPEC_KEYS)
    stage_keys = {stage: set(runpy.run_path(str(ROOT / "stages" / f"{stage}.py"))["STAGE_KEYS"])
                  for stage in ("render", "train", "attribute")}
    assert set(S.Render.model_fields) == stage_keys["render"] | set(_dataclass_fields(
        ROOT / "src/salbench/render/world.py", "World")) - {"values"}
    assert set(S.Train.model_fields) == stage_keys["train"]
    assert set(S.Attribute.model_fields) == stage_keys["attribute"]
    assert set(S.GENERATORS) == set(GENERATORS.names()) and set(S.TASK_PARAMS) == set(TASKS.names())
