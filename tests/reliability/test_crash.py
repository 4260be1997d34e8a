"""Crashes while writing: a SIGKILLed writer leaves the old output in place, its leftovers are removed by the
next writer of the same output (never a live writer's), and the rerun is byte-identical; the swap of a new
output for an old one never leaves the path missing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TINY_RENDER, deep_merge

from salbench import io
from salbench.io import atomic_dir, atomic_file

WRITER = """
import sys, time
import numpy as np
from salbench.io import atomic_dir, save_shard
out, value, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with atomic_dir(out) as tmp:
    for i in range(3):
        save_shard(tmp / f"s{i}.safetensors", {"x": np.full(1000, value)})
        time.sleep(pause)
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the writer never got there")
        time.sleep(0.01)


def kill_when(proc: subprocess.Popen, predicate) -> None:
    try:
        wait_for(lambda: predicate() or proc.poll() is not None)
        assert proc.poll() is None, "the writer finished before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_killed_writer_keeps_the_old_output_and_the_rerun_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write = [sys.executable, "-c", WRITER, str(out)]
    subprocess.run([*write, "1", "0"], check=True)
    old = snapshot(out)
    proc = subprocess.Popen([*write, "2", "30"])
    kill_when(proc, lambda: any(tmp_path.glob(f".out.tmp-{proc.pid}-*/s0.safetensors")))
    assert snapshot(out) == old and leftovers(tmp_path)  # the old output is whole; the crash left a temp dir
    subprocess.run([*write, "2", "0"], check=True)
    subprocess.run([*write[:3], str(tmp_path / "reference"), "2", "0"], check=True)
    assert snapshot(out) == snapshot(tmp_path / "reference") != old
    assert leftovers(tmp_path) == []


def test_the_output_path_never_goes_missing_while_it_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("0")
    missing, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (out / "f").exists():
                missing.append(time.perf_counter())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(1, 200):
            with atomic_dir(out) as tmp:
                (tmp / "f").write_text(str(i))
    finally:
        stop.set()
        watcher.join()
    assert missing == [] and (out / "f").read_text() == "199" and leftovers(tmp_path) == []


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_without_an_atomic_exchange_a_failed_swap_restores_the_old_output(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    out = tmp_path / "out"
    with atomic_dir(out) as tmp:
        (tmp / "f").write_text("old")
    real_replace, calls = os.replace, []

    def failing_second_rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # old -> .old sibling done; new -> path fails
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="disk gone"):
        with atomic_dir(out) as tmp:
            (tmp / "f").write_text("new")
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert (out / "f").read_text() == "old" and leftovers(tmp_path) == []


def test_a_swap_cut_short_by_a_crash_is_undone_by_the_next_writer(tmp_path: Path) -> None:
    """A kill between `old -> .old` and `new -> path` (only without an atomic exchange) leaves the old
    output under .old: the next writer of the path puts it back before it starts, whatever then happens."""
    out = tmp_path / "out"
    crashed = tmp_path / f".out.old-{dead_pid()}-abcd1234"
    crashed.mkdir()
    (crashed / "f").write_text("old")
    (tmp_path / f".out.tmp-{dead_pid()}-efgh5678").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_dir(out):
            raise RuntimeError("the stage fails")
    assert (out / "f").read_text() == "old" and leftovers(tmp_path) == []


def test_only_dead_writers_leftovers_are_removed(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"live": f".out.tmp-{live.pid}-abcdefgh", "dead": f".out.tmp-{dead_pid()}-abcdefgh",
                 "legacy": ".out.tmp-x1y2_z3w", "dead file": f".out.json.tmp-{dead_pid()}-qwertyui",
                 "other output": f".output.tmp-{dead_pid()}-abcdefgh"}
        for name in names.values():
            (tmp_path / name).mkdir() if "file" not in name else (tmp_path / name).write_text("")
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("1")
        with atomic_file(tmp_path / "out.json") as f:
            f.write("{}")
        assert leftovers(tmp_path) == sorted([names["live"], names["other output"]])
    finally:
        live.kill()
        live.wait()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "f").write_text("2")
    assert leftovers(tmp_path) == [names["other output"]]


@pytest.mark.slow  # three tiny render runs: ~10 s idle, more on a shared machine
def test_sigkilled_render_leaves_nothing_a_rerun_does_not_clean(tmp_path: Path) -> None:
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                        {"render": {**TINY_RENDER, "splits": {"train": 24, "val": 8, "test": 24}}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    render = [sys.executable, str(ROOT / "stages" / "render.py"), "--task", "unique-query", "--params",
              str(tmp_path / "params.yaml"), "--out", str(tmp_path / "render" / "unique-query"), "--plots",
              str(tmp_path / "plots" / "unique-query"), "--metrics", str(tmp_path / "metrics.json")]
    subprocess.run(render, check=True, capture_output=True, cwd=tmp_path)
    before = {d: snapshot(tmp_path / d / "unique-query") for d in ("render", "plots")}
    proc = subprocess.Popen(render, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: any((tmp_path / "render").glob(".unique-query.tmp-*/train.safetensors")))
    assert leftovers(tmp_path / "render") and leftovers(tmp_path / "plots")  # the 58 MB of the issue, in small
    assert {d: snapshot(tmp_path / d / "unique-query") for d in before} == before
    subprocess.run(render, check=True, capture_output=True, cwd=tmp_path)
    assert {d: snapshot(tmp_path / d / "unique-query") for d in before} == before
    assert leftovers(tmp_path / "render") == leftovers(tmp_path / "plots") == leftovers(tmp_path) == []
