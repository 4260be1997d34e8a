"""Merge the dvc.lock files of jobs that each reproduced part of the attribute/evaluate matrix.

``python -m salbench.lockmerge dvc.lock job1.lock job2.lock ...`` adds every stage entry of the jobs' lock
files to ``dvc.lock`` (in place). An entry two files both hold must be identical (the same stage with the
same deps and outs); otherwise it stops naming the stage. Needed because the attribute stage's output is
``persist: true`` (maps are recomputed per changed method), and DVC keeps no run cache for stages with
persistent outputs: their results reach another clone only through dvc.lock (see README, "Splitting a large
matrix over machines or CI jobs").
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import SalbenchError, cli
from .io import atomic_file


def merge_locks(base: Mapping[str, Any], others: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """``base`` with every stage entry of ``others`` ((name, lock) pairs) added; conflicting entries raise."""
    stages = dict(base.get("stages") or {})
    source = dict.fromkeys(stages, "the base dvc.lock")
    for name, lock in others:
        if str(lock.get("schema")) != str(base.get("schema")):
            raise SalbenchError(f"{name}: dvc.lock schema {lock.get('schema')!r} differs from the base's "
                                f"{base.get('schema')!r}; use the same DVC version in every job")
        for stage, entry in (lock.get("stages") or {}).items():
            if stage in stages and stages[stage] != entry:
                raise SalbenchError(f"stage {stage}: {name} and {source[stage]} hold different results (deps, "
                                    "params or outs); reproduce each matrix cell in one job only, from the same "
                                    "upstream commit")
            stages.setdefault(stage, entry)
            source.setdefault(stage, name)
    return {**base, "stages": stages}


def _read(path: str) -> dict[str, Any]:
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SalbenchError(f"{path}: cannot read it as a dvc.lock ({e})") from None


@cli
def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m salbench.lockmerge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="the dvc.lock to update in place")
    ap.add_argument("others", nargs="+", help="the jobs' dvc.lock files")
    args = ap.parse_args()
    merged = merge_locks(_read(args.base), [(p, _read(p)) for p in args.others])
    with atomic_file(args.base) as f:
        yaml.safe_dump(merged, f, sort_keys=False)
    print(f"{args.base}: {len(merged['stages'])} stages")


if __name__ == "__main__":
    main()
