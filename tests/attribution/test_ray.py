"""The attribute stage's jobs on Ray (salbench.parallel): the same files as in-process, passes not split,
no Ray import by default, a clear error without Ray, and a killed worker retried on a local head + worker (the driver: ray_driver.py)."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pytest
import torch
import yaml

import salbench.attribution.stream as stream
from salbench.attribution import build
from salbench.attribution.cache import MapWriter
from salbench.attribution.stream import attribute_split, pass_groups
from salbench.config.validate import validate_params
from salbench.errors import SalbenchError
from salbench.io import save_shard
from salbench.models import build_model, save_checkpoint
from salbench.parallel import InProcess, RayExecutor, executor
from salbench.params import ParamsError
from salbench.render.dataset import SplitReader

from helpers import ROOT

ENTRIES = {"gradient": {}, "gradcam": {"layer": {"cnn": "layer3", "vit": "blocks.-1.norm1"}},
           "guided_backprop": {}, "guided_gradcam": {"layer": {"cnn": "layer3", "vit": "blocks.-1.norm1"}},
           "deconvolution": {}, "smoothgrad": {"base": "gradient", "samples": 2, "sigma": 0.1},
           "vargrad": {"base": "gradient", "samples": 2, "sigma": 0.1}, "integrated_gradients": {"steps": 2},
           "gt_mask": {}, "lrp": {"families": ["cnn"]}, "gradient_true": {"method": "gradient", "explain": "true"}}
MANIFEST = {"family": "cnn", "input_size": 32}
SIZE = 10


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({"arch": "resnet-small", "kwargs": {"stem_width": 8, "channels": [8, 8, 16, 16]}}, 3, 32).eval()


def _split(root: Path, n: int = SIZE) -> Path:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, 32, 32), dtype=bool)
    masks[:, 4:12, 6:20] = True
    save_shard(root / "test.safetensors", {"images": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                                           "label": np.arange(n, dtype=np.int64) % 3, "gt_mask": masks})
    return root


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (hidden leftovers included) by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run(root: Path, out: Path, ex: Any = None, n: int = SIZE) -> stream.StreamStats:
    return attribute_split(_model(), MANIFEST, SplitReader(_split(root, n), "test"), ENTRIES, out, model_hash="h",
                           seed=0, batch_size=2, shard_size=4, executor=ex, device="cpu", threads=1)


class Pickling(InProcess):
    """Jobs split as for Ray and sent through pickle (as Ray sends them), run here."""

    parallel = True

    def __init__(self) -> None:
        self.jobs: list[Any] = []

    def map(self, fn: Callable, shared: Any, items: Sequence[Any]) -> Iterator[Any]:
        self.jobs = list(items)
        shared = pickle.loads(pickle.dumps(shared))
        return iter([pickle.loads(pickle.dumps(fn(shared, pickle.loads(pickle.dumps(item))))) for item in items])


def test_pass_groups_keep_entries_that_share_passes_together() -> None:
    built = {n: build(n, e, "cnn") for n, e in ENTRIES.items()}
    # guided_gradcam reads a plain and a guided pass: it joins those two groups; smoothgrad and vargrad draw the
    # same noise; the GT control, LRP, IG, deconvolution and the explain wrapper run their own passes
    assert pass_groups(_model(), built) == [
        ("gradient", "gradcam", "guided_backprop", "guided_gradcam"), ("deconvolution",), ("smoothgrad", "vargrad"),
        ("integrated_gradients",), ("gt_mask",), ("lrp",), ("gradient_true",)]


def test_jobs_split_for_ray_write_the_same_files_and_keep_shards(tmp_path: Path) -> None:
    ref = _run(tmp_path / "render", tmp_path / "a")
    ex = Pickling()
    stats = _run(tmp_path / "render", tmp_path / "b", ex)
    assert len(ex.jobs) == 3 * 7 and stats == ref and set(stats.computed.values()) == {3}
    assert _files(tmp_path / "a") == _files(tmp_path / "b") and len(_files(tmp_path / "a")) == 11 * 4
    grown = _run(tmp_path / "render14", tmp_path / "b", Pickling(), n=14)  # shards 0-1 kept, 2 (now full) and 3 new
    assert grown.kept == {n: 2 for n in ENTRIES} and grown.computed == {n: 2 for n in ENTRIES}
    _run(tmp_path / "render14", tmp_path / "a", n=14)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_a_partial_file_in_the_temporary_directory_is_not_swapped_in(tmp_path: Path) -> None:
    writer = MapWriter(tmp_path / "g", model_hash="h", method="g", params={}, layer=None, seed=0)
    writer.add("k", torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]))
    # named with a live pid, as a killed writer on another machine may be: atomic_file's clean-up keeps it
    (writer.tmp / f".maps-00001.safetensors.tmp-{os.getppid()}-abcdefgh").write_bytes(b"x")
    writer.close()
    assert sorted(os.listdir(tmp_path / "g")) == ["manifest.json", "maps-00000.safetensors"]


def test_the_default_runs_in_process_without_importing_ray(tmp_path: Path) -> None:
    code = ("import sys; from salbench.parallel import executor, InProcess; "
            "assert isinstance(executor(1, None), InProcess) and isinstance(executor(0, None), InProcess); "
            "import salbench.attribution.stream; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_ray_without_the_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for workers, ray in ((2, None), (0, {"address": "127.0.0.1:6379"})):
        with pytest.raises(SalbenchError, match=r"pip install 'salbench\[ray\]'"):
            executor(workers, ray)


def test_an_address_nothing_answers_at_fails_fast() -> None:
    pytest.importorskip("ray")  # the test extra installs it
    port = _free_port()  # closed again: nothing listens there
    t0 = time.monotonic()
    with pytest.raises(SalbenchError, match=f"attribute.ray.address: nothing answers at '127.0.0.1:{port}'"):
        RayExecutor(address=f"127.0.0.1:{port}")
    assert time.monotonic() - t0 < 30  # Ray alone retries for minutes


def test_a_failed_map_cancels_only_the_tasks_still_running() -> None:
    """Cancelling a task whose reply Ray is processing aborts the driver (Ray 2.60: "Check failed: it !=
    submissible_tasks_.end()", ray-project/ray#54527; it ended this suite in CI): after an error, ``map`` cancels only
    what ``ray.wait`` reports unfinished, and re-raises the task's error."""

    class TaskError(Exception):
        cause = None

    def get(refs: list) -> None:
        raise TaskError("task 2 failed")

    cancelled: list = []
    fake = SimpleNamespace(
        remote=lambda **kw: lambda fn: SimpleNamespace(remote=lambda shared, item: f"ref{item}"),
        put=lambda x: x, get=get, cancel=lambda ref, force: cancelled.append(ref),
        wait=lambda refs, num_returns, timeout: (refs[:2], refs[2:]),  # ref0, ref1 done; ref2, ref3 running
        exceptions=SimpleNamespace(RayTaskError=TaskError, WorkerCrashedError=KeyError, NodeDiedError=KeyError))
    ex = object.__new__(RayExecutor)
    ex.__dict__.update(max_retries=0, cpus_per_task=1.0, gpus_per_task=0.0, _ray=fake, _started=False)
    with pytest.raises(TaskError, match="task 2 failed"):
        ex.map(lambda shared, item: item, None, [0, 1, 2, 3])
    assert cancelled == ["ref2", "ref3"]


def test_workers_and_an_address_together_is_an_error() -> None:
    with pytest.raises(SalbenchError, match="set one of them"):
        executor(2, {"address": "auto"})
    with pytest.raises(ParamsError, match="attribute.workers: 2 starts a local Ray instance but attribute.ray.address "
                       "joins the cluster at 'auto'; set one of them"):
        validate_params({"attribute": {"workers": 2, "ray": {"address": "auto"}}})


def test_the_attribute_stage_checks_that_ray_is_installed_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    validate_params({"attribute": {"workers": 2}})  # other stages do not need Ray
    for section in ({"workers": 2}, {"ray": {"address": "127.0.0.1:6379"}}):
        with pytest.raises(ParamsError, match=r"not installed here: pip install 'salbench\[ray\]'"):
            validate_params({"attribute": section}, "attribute")
    validate_params({"attribute": {"workers": 1}}, "attribute")


# ---- a real Ray cluster on 127.0.0.1 ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage(tmp: Path, extra: dict, out: str, env: dict | None = None) -> subprocess.CompletedProcess:
    params = {"attribute": {"seed": 0, "device": "cpu", "batch_size": 2, "shard_size": 4, "threads": 1,
                            "methods": ENTRIES, **extra}}
    (tmp / f"{out}.yaml").write_text(yaml.safe_dump(params))
    # prints whether the stage imported Ray, at exit
    code = ("import atexit, runpy, sys; atexit.register(lambda: print('ray imported:', 'ray' in sys.modules)); "
            "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    cmd = [sys.executable, "-c", code, str(ROOT / "stages" / "attribute.py"), "--task", "t", "--model", "m",
           "--params", str(tmp / f"{out}.yaml"), "--data", str(tmp / "render"), "--models", str(tmp / "models"),
           "--out", str(tmp / out)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=300)


def _diagnosis(run: subprocess.CompletedProcess, logs: Path) -> str:
    """A failed process's exit status and output, and the tails of the nodes' and Ray's own logs."""
    ray_logs = Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs"
    files = sorted(logs.glob("*.log")) + sorted(ray_logs.glob("raylet*.out")) + sorted(ray_logs.glob("*driver*.log"))
    tails = "".join(f"\n--- {f}:\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]) for f in files)
    return f"exit {run.returncode}\n--- stdout:\n{run.stdout[-3000:]}\n--- stderr:\n{run.stderr[-3000:]}{tails}"


@pytest.mark.slow  # a Ray head and worker (~15 s to start here), two stage runs and a library run: ~60 s loaded
def test_ray_cluster_writes_the_in_process_files_and_retries_a_killed_worker(tmp_path: Path) -> None:
    pytest.importorskip("ray")  # the test extra installs it
    save_checkpoint(tmp_path / "models" / "t" / "m" / "final", _model(),
                    {"task": "t", "classes": ["a", "b", "c"], "accuracy": {}, "params_hash": "x", "seed": 0,
                     "versions": {}})
    _split(tmp_path / "render")
    local = _stage(tmp_path, {}, "local")
    assert local.returncode == 0, local.stderr
    assert "ray imported: False" in local.stdout

    port = _free_port()
    # Ray's memory monitor off and small object stores: the test's tasks are tiny, the machine may be shared
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "RAY_AUTH_MODE": "disabled", "RAY_memory_monitor_refresh_ms": "0"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 2**20), "--block", "--disable-usage-stats"]
    logs = tmp_path / "node-logs"
    logs.mkdir()
    nodes = {"head": ["--head", "--port", str(port), "--include-dashboard", "false"],
             "worker": ["--address", f"127.0.0.1:{port}"]}
    procs = []
    try:
        for name, args in nodes.items():
            with open(logs / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen([ray_bin, "start", *args, "--node-ip-address", "127.0.0.1", *common],
                                              env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT))
        remote = _stage(tmp_path, {"ray": {"address": f"127.0.0.1:{port}"}}, "remote", env)
        assert remote.returncode == 0, _diagnosis(remote, logs)
        assert "ray imported: True" in remote.stdout
        assert _files(tmp_path / "remote") == _files(tmp_path / "local")

        # the library call with a worker that dies once, and a failing task, from a driver process of its own
        driver = subprocess.run([sys.executable, str(Path(__file__).with_name("ray_driver.py")), str(tmp_path),
                                 f"127.0.0.1:{port}"], capture_output=True, text=True, env=env, timeout=300)
        assert "driver done" in driver.stdout, _diagnosis(driver, logs)
        assert (tmp_path / "crashed").exists()
        assert _files(tmp_path / "crash") == _files(tmp_path / "local")  # no partial file, no .tmp directory
    finally:
        for proc in procs:  # each node's processes are in its `ray start`'s session (SIGTERM takes ~30 s)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # `address: auto` reads it
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
