"""The generate and permutation stages on a tiny rendered task with an untrained classifier f."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from salbench.io import load_shard
from salbench.models import build_model, load_checkpoint, save_checkpoint
from salbench.render import load_split

from helpers import ROOT, TINY_RENDER, deep_merge

TINY_CONCEPTS = {
    "n_images": 10, "permutations": 2, "models": ["resnet-small"], "batch_size": 16, "preview": 4,
    "diffusion": {"resolution": 16, "steps": 2, "batch_size": 4, "channels": [8, 16], "text_dim": 16,
                  "inference_steps": 2, "sample_batch_size": 16, "sample_every": 1,
                  "caption_context": "colors"},  # the default (none) runs in the tiny dvc repro
    "h": {"arch": "resnet-small", "kwargs": {"stem_width": 8}, "epochs": 1, "batch_size": 8},
}


def stage(args: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",  # tiny tensors: one thread is fastest on a shared CPU
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # `python`, `dvc` are ours
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A work dir with params.yaml, a tiny rendered presence task and an untrained f checkpoint."""
    d = tmp_path_factory.mktemp("stages")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = deep_merge(params, {"render": {**TINY_RENDER, "splits": {"train": 16, "val": 4, "test": 10}},
                                 "concepts": TINY_CONCEPTS})
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage([str(ROOT / "stages/render.py"), "--task", "presence"], d)
    torch.manual_seed(0)
    f = build_model("resnet-small", 2, TINY_RENDER["resolution"])
    save_checkpoint(d / "data/models/presence/resnet-small/final", f, {
        "task": "presence", "classes": ["false", "true"], "accuracy": {}, "params_hash": "-", "seed": 0,
        "versions": {}})
    return d


@pytest.mark.slow
def test_the_recon_benchmark_scores_the_autoencoders_reconstructions(workdir: Path) -> None:
    """benchmarks/diffusion.py recon: h's AUROC per concept on the reconstructions at every scored step, a grid of
    real images over reconstructions, and a clear error without an autoencoder."""
    out = workdir / "recon.json"
    args = [str(ROOT / "benchmarks/diffusion.py"), "recon", "--set", "vae_channels=[8, 16]", "--steps", "4",
            "--every", "2", "--h", str(workdir / "h"), "--json", str(out), "--png", str(workdir / "recon.png")]
    stage(args, workdir)
    result = json.loads(out.read_text())
    assert [r["step"] for r in result["curve"]] == [2, 4]
    names = set(result["h_real"])
    assert names == {"red_cube", "blue_sphere", "green_cylinder", "yellow_object"}
    for r in result["curve"]:
        assert set(r["h_reconstructed"]) == names and all(0 <= v <= 1 for v in r["h_reconstructed"].values())
        assert r["max_gap"] == pytest.approx(max(result["h_real"][n] - r["h_reconstructed"][n] for n in names),
                                             abs=2e-3)
    assert result["curve"][0]["ae_cpu_minutes"] <= result["curve"][1]["ae_cpu_minutes"]
    from PIL import Image

    width, height = Image.open(workdir / "recon.png").size
    assert height == 8 * 34 + 2  # 4 concepts × (real, reconstructed) rows of 2×-enlarged 16 px images, 2-px gutters
    assert (width - 2) % 34 == 0 and 1 <= (width - 2) // 34 <= 8
    assert "recon needs concepts.diffusion.vae_channels" in stage(args[:2] + ["--h", str(workdir / "h")], workdir,
                                                                  ok=False).stderr


@pytest.mark.slow
def test_the_curve_benchmark_scores_every_guidance_and_sampler_step_count(workdir: Path) -> None:
    """benchmarks/diffusion.py curve: one row per scored step × guidance scale × sampler step count, each with h's
    AUROC per concept on the generations and its largest gap below real; a grid per row."""
    out = workdir / "curve.json"
    stage([str(ROOT / "benchmarks/diffusion.py"), "curve", "--steps", "2", "--every", "2", "--guidance", "1,2",
           "--sampler-steps", "1,3", "--h", str(workdir / "h"), "--json", str(out), "--png",
           str(workdir / "g.png")], workdir)
    result = json.loads(out.read_text())
    assert [(r["step"], r["guidance_scale"], r["inference_steps"]) for r in result["curve"]] == \
        [(2, 1.0, 1), (2, 2.0, 1), (2, 1.0, 3), (2, 2.0, 3)]
    for r in result["curve"]:
        assert r["max_gap"] == pytest.approx(max(result["h_real"][n] - v for n, v in r["h_generated"].items()),
                                             abs=2e-3)
    assert sorted(f.name for f in workdir.glob("g_*.png")) == ["g_step2_g1_k1.png", "g_step2_g1_k3.png",
                                                               "g_step2_g2_k1.png", "g_step2_g2_k3.png"]


@pytest.mark.slow
def test_generate_and_permutation_stages_end_to_end(workdir: Path) -> None:
    for g in ("renderer", "diffusion"):
        stage([str(ROOT / "stages/generate.py"), "--generator", g], workdir)
    stage([str(ROOT / "stages/permutation.py")], workdir)

    ren = workdir / "data/concepts/generate/renderer"
    real = load_split(workdir / "data/render/presence", "test")["images"][:10]
    np.testing.assert_array_equal(load_shard(ren / "baseline.safetensors")["images"], real)  # exact re-render
    assert load_shard(ren / "permuted/red_cube.safetensors")["images"].shape == (2, 10, 64, 64, 3)
    dif = workdir / "data/concepts/generate/diffusion"
    assert load_shard(dif / "baseline.safetensors")["images"].shape == (10, 16, 16, 3)
    assert (dif / "model/model_index.json").exists()
    plots = workdir / "data/plots/concepts"
    assert (plots / "renderer/counterfactuals.png").exists() and (plots / "diffusion/train/metrics.json").exists()
    assert (plots / "permutation/importance.png").exists()
    assert (plots / "renderer/grid.png").exists() and (plots / "diffusion/grid.png").exists()

    metrics = json.loads((workdir / "data/metrics/depict.json").read_text())["resnet-small"]
    assert metrics["renderer"]["check1_f"] == 0 and metrics["renderer"]["check1_h"] == 0
    assert set(metrics) == {"renderer", "diffusion", "agreement"}
    results_all = json.loads((workdir / "data/concepts/permutation/results.json").read_text())
    for g in ("renderer", "diffusion"):  # gated on checks 1 and 2 (default thresholds 0.1)
        entry = results_all["models"]["resnet-small"]["generators"][g]
        assert metrics[g]["trusted"] == entry["trusted"] == (metrics[g]["reasons"] == entry["reasons"] == [])
        within = [abs(v) <= 0.1 for v in entry["gaps"].values() if v is not None]
        assert entry["trusted"] == all(within)
        table = results_all["h_check1"][g]
        assert sorted(table) == sorted(results_all["h_test_auroc"])
        assert all(v["gap"] is None or abs(v["real"] - v["generated"] - v["gap"]) < 1e-5 for v in table.values())
    assert results_all["h_check1"]["renderer"]["red_cube"]["gap"] == 0  # the exact re-render
    results = json.loads((workdir / "data/concepts/permutation/results.json").read_text())["models"]["resnet-small"]
    imp = results["generators"]["renderer"]["importance"]
    names = ["blue_sphere", "green_cylinder", "red_cube", "yellow_object"]  # the manifest's (sorted) concept order
    assert sorted(imp) == names
    assert all(len(v["values"]) == 2 for v in imp.values())
    assert results["true"]["importance"]["yellow_object"] == 0 and results["true"]["importance"]["red_cube"] > 0
    h, manifest = load_checkpoint(workdir / "data/concepts/permutation/h")
    assert manifest["classes"] == names and h.num_classes == 4


@pytest.fixture(scope="module")
def renderer_outputs(workdir: Path) -> Path:
    out = workdir / "data/concepts/generate/renderer"
    if not out.exists():
        stage([str(ROOT / "stages/generate.py"), "--generator", "renderer"], workdir)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("override", "script", "message"), [
    ({"concepts": ["red_cube", "purple_cone"]}, "generate.py", "unknown concept 'purple_cone'"),
    ({"permutations": 500}, "generate.py", "distinct orderings; lower concepts.permutations"),
    ({"renderer": {"tris": 3}}, "generate.py", "did you mean 'tries'"),
    ({"saliency": "gradcma"}, "permutation.py", "Did you mean 'gradcam'"),
    ({"seed": 7, "generators": ["renderer"]}, "permutation.py", "generated for another plan"),
    ({"checks": {"max_gapp": 0.1}}, "permutation.py", "did you mean 'max_gap'"),
])
def test_bad_params_fail_with_a_message_that_names_the_fix(workdir: Path, renderer_outputs: Path, tmp_path: Path,
                                                           override: dict, script: str, message: str) -> None:
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["concepts"].update(override)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = [str(ROOT / "stages" / script), "--params", str(tmp_path / "params.yaml"), "--data",
            str(workdir / "data/render"), "--out", str(tmp_path / "out")]
    if script == "generate.py":
        args += ["--generator", "renderer"]
    else:
        args += ["--models", str(workdir / "data/models"), "--generated", str(renderer_outputs.parent)]
    proc = stage(args, tmp_path, ok=False)
    assert message in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dvc_repro_generate_runs_from_the_pipeline_definition(pipeline_copy) -> None:
    repo = pipeline_copy({"render": {**TINY_RENDER, "splits": {"train": 8, "val": 4, "test": 8}, "tasks": ["presence"]},
                          "train": {"tasks": ["presence"]}, "attribute": {"tasks": ["presence"]},
                          "concepts": {**TINY_CONCEPTS, "n_images": 8, "generators": ["renderer"]}})
    stage(["-m", "dvc", "repro", "generate@renderer"], repo)
    out = repo / "data/concepts/generate/renderer"
    assert json.loads((out / "manifest.json").read_text())["n"] == 8
    assert "up to date" in stage(["-m", "dvc", "status", "generate@renderer"], repo).stdout


@pytest.mark.slow
def test_generate_is_byte_reproducible(workdir: Path, renderer_outputs: Path, tmp_path: Path) -> None:
    stage([str(ROOT / "stages/generate.py"), "--generator", "renderer", "--out", str(tmp_path / "again"), "--plots",
           str(tmp_path / "plots")], workdir)
    first = {p.relative_to(renderer_outputs): p.read_bytes() for p in renderer_outputs.rglob("*") if p.is_file()}
    again = {p.relative_to(tmp_path / "again"): p.read_bytes() for p in (tmp_path / "again").rglob("*") if p.is_file()}
    assert first.keys() == again.keys() and first == again
