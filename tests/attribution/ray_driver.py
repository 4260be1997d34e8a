"""The Ray driver of test_ray's cluster test, run as its own process (``python ray_driver.py TMP ADDRESS``) so that
whatever Ray does to its driver (it may end the process when a node goes away) cannot take pytest with it.

It runs the attribute stage's library call on the cluster at ADDRESS with a worker that leaves a partial file and
dies on the first attempt of shard 1's smoothgrad job (TMP/crashed records that it did), writing TMP/crash; then
checks that a task's own error comes back unwrapped and is not retried. The methods are TMP/local.yaml's.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

from salbench.attribution.stream import attribute_split
from salbench.errors import SalbenchError
from salbench.io import file_hash
from salbench.models import load_checkpoint
from salbench.parallel import RayExecutor
from salbench.render.dataset import SplitReader


class CrashOnce(RayExecutor):
    """Ray tasks whose worker leaves a partial file (named with a live pid, as on another machine) and dies
    (os._exit) on the first attempt of shard 1's smoothgrad job; ``marker`` records that it did."""

    marker: Path

    def map(self, fn: Callable, shared: Any, items: Sequence[Any]) -> Iterator[Any]:
        marker = self.marker

        def crash_once(ctx: Any, job: Any) -> Any:
            if job.block == 1 and "smoothgrad" in job.groups[0] and not marker.exists():
                marker.write_text(str(os.getpid()))
                (ctx.dirs["smoothgrad"].tmp / f".maps-00001.safetensors.tmp-{os.getppid()}-abcdefgh").write_bytes(b"x")
                os._exit(1)
            return fn(ctx, job)

        return super().map(crash_once, shared, items)


def _fails(shared: Any, item: int) -> None:
    raise SalbenchError(f"task {item} names its fix")


def main(tmp: Path, address: str) -> None:
    attribute = yaml.safe_load((tmp / "local.yaml").read_text())["attribute"]
    checkpoint = tmp / "models" / "t" / "m" / "final"
    model, manifest = load_checkpoint(checkpoint)
    ex = CrashOnce(address=address, max_retries=2)
    ex.marker = tmp / "crashed"
    try:  # as the stage calls it, once the worker node has joined
        import ray

        deadline = time.monotonic() + 120
        while sum(node["Alive"] for node in ray.nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert sum(node["Alive"] for node in ray.nodes()) == 2, ray.nodes()
        stats = attribute_split(model, manifest, SplitReader(tmp / "render", "test"), attribute["methods"],
                                tmp / "crash", model_hash=file_hash(checkpoint / "model.safetensors"), seed=0,
                                batch_size=2, shard_size=4, executor=ex, device="cpu", threads=1)
    finally:
        ex.close()
    assert set(stats.computed.values()) == {3}, stats
    ex = RayExecutor(address=address)
    try:  # the task's own error, not wrapped in Ray's and not retried
        ex.map(_fails, None, [1])
        raise AssertionError("the failing task did not raise")
    except SalbenchError as e:
        assert str(e) == "task 1 names its fix", e
    finally:
        ex.close()
    print("driver done", flush=True)  # every check above passed; what Ray does at interpreter exit is not ours


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
