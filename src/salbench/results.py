"""The results table: one tidy long-format CSV per task × model, ``data/results/<task>/<model>.csv``.

One row per (task, model, method, metric, variant, statistic, step): the mean over the scored samples
with its 95% percentile-bootstrap CI, the number of samples with a defined value (n) and of scored
samples whose value is undefined (n_undefined, e.g. a correlation with a constant map). Curves are
rows too (one per step). Every figure, the report and the findings read only this table (plus the
example-map arrays). Conventions per metric kind: docs/artifacts.md and :data:`COLUMNS`.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import SalbenchError
from .io import atomic_file

COLUMNS: dict[str, tuple[type, str]] = {
    "task": (str, "rendered task, e.g. unique-query"),
    "model": (str, "model entry in params.yaml train.models"),
    "family": (str, "architecture family: cnn or vit"),
    "method": (str, "attribute entry name (the layer study: its group); '' for model-level rows"),
    "role": (str, "method | control (model-independent control maps) | '' for model-level rows"),
    "metric": (str, "the metric's registry name (accuracy, mass_accuracy, aopc, perturbation_curve, ...)"),
    "variant": (str, "distinguishing settings as key=value pairs joined by ',', sorted by key; '' if none"),
    "statistic": (str, "which quantity of the metric; 'value' for single-number metrics"),
    "step": (float, "curve position (fraction removed, randomisation step 1..B, layer 1..L); NaN for scalars"),
    "step_label": (str, "name of the step (randomised block, layer); '' otherwise"),
    "mean": (float, "mean over the scored samples with a defined value (NaN when n = 0)"),
    "ci_low": (float, "2.5th percentile of the bootstrap means"),
    "ci_high": (float, "97.5th percentile of the bootstrap means"),
    "n": (int, "scored samples with a defined value"),
    "n_undefined": (int, "scored samples whose value is undefined"),
}
"""Column -> (type, meaning), in file order."""

KEY = ("task", "model", "method", "metric", "variant", "statistic", "step", "step_label")
"""Columns that identify a row (rows are written sorted by them)."""

CONTROLS = ("random", "edge", "gt_mask", "gt_blur")
"""Registry names of the model-independent control maps: their rows get role ``control``."""

ROLES = ("method", "control", "")


class ResultsError(SalbenchError, ValueError):
    """A results table that does not follow the schema."""


def role(method: str) -> str:
    """``control`` for the control maps' registry names, ``method`` for other saliency methods, '' for none."""
    return "" if method == "" else "control" if method in CONTROLS else "method"


def variant(settings: Mapping[str, Any]) -> str:
    """``key=value`` pairs sorted by key and joined by ',' ('' for none)."""
    return ",".join(f"{k}={settings[k]}" for k in sorted(settings))


def parse_variant(text: str) -> dict[str, str]:
    """The settings of a variant string (inverse of :func:`variant`)."""
    return dict(part.split("=", 1) for part in text.split(",")) if text else {}


def _sort_key(row: Mapping[str, Any]) -> tuple:
    step = row["step"]
    return tuple((-math.inf if math.isnan(step) else step) if k == "step" else row[k] for k in KEY)


def _cell(name: str, value: Any) -> str:
    kind = COLUMNS[name][0]
    if kind is float:
        v = float(value)
        return "" if math.isnan(v) else repr(v)
    if kind is int:
        return str(int(value))
    return str(value)


def check_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with exactly the schema's columns and no duplicated key; returns them as dicts."""
    out, seen = [], set()
    for row in rows:
        if set(row) != set(COLUMNS):
            missing, extra = sorted(set(COLUMNS) - set(row)), sorted(set(row) - set(COLUMNS))
            raise ResultsError(f"a results row must have the columns {list(COLUMNS)}; missing {missing}, extra {extra}")
        if row["role"] not in ROLES:
            raise ResultsError(f"role must be one of {list(ROLES)}, got {row['role']!r}")
        key = tuple(_cell(k, row[k]) for k in KEY)
        if key in seen:
            raise ResultsError(f"two results rows share the key {dict(zip(KEY, key))}")
        seen.add(key)
        out.append(dict(row))
    return out


def write_results(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write rows as the results CSV: schema-checked, sorted by :data:`KEY`, floats in shortest round-trip
    form, NaN as an empty cell, so that equal rows give byte-identical files."""
    rows = sorted(check_rows(rows), key=_sort_key)
    with atomic_file(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([_cell(k, row[k]) for k in COLUMNS] for row in rows)


def read_results(paths: str | Path | Sequence[str | Path]):
    """The rows of one or more results CSVs as one pandas DataFrame with the schema's columns and dtypes
    (str columns keep '' as ''; NaN only in float columns). A missing file names the evaluate stage;
    a wrong or missing column, or a value of the wrong type, raises :class:`ResultsError` naming the file."""
    import pandas as pd

    from .io import require

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    frames = []
    for path in paths:
        path = Path(path)
        require(path, f"evaluate@{path.parent.name}-{path.stem}")
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header != list(COLUMNS):
            missing, extra = [c for c in COLUMNS if c not in header], [c for c in header if c not in COLUMNS]
            raise ResultsError(f"{path}: the results columns must be {list(COLUMNS)} in this order; got {header} "
                               f"(missing {missing}, unexpected {extra}); rerun the evaluate stage that wrote it")
        floats = [c for c, (t, _) in COLUMNS.items() if t is float]
        try:
            frame = pd.read_csv(path, dtype={c: (str if t is str else "float64" if t is float else "int64")
                                             for c, (t, _) in COLUMNS.items()},
                                keep_default_na=False, na_values={c: [""] for c in floats})
        except ValueError as e:
            raise ResultsError(f"{path}: a value does not have its column's type ({e})") from None
        bad = sorted(set(frame["role"]) - set(ROLES))
        if bad:
            raise ResultsError(f"{path}: unknown role(s) {bad}; roles are {list(ROLES)}")
        frames.append(frame)
    if not frames:
        return empty_results()
    return pd.concat(frames, ignore_index=True)


def empty_results():
    """A DataFrame with the schema's columns and dtypes and no rows."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=str if t is str else "float64" if t is float else "int64")
                         for c, (t, _) in COLUMNS.items()})


def variants_with(table: Any, metric: str, keys: Iterable[str]) -> list[str]:
    """The variants of ``metric`` in ``table`` whose settings are exactly ``keys`` (e.g. ("pooling",) finds
    ``pooling=l1`` but not ``pooling=l1,saliency=meta``), sorted."""
    keys = set(keys)
    found = set(table.loc[table["metric"] == metric, "variant"])
    return sorted(v for v in found if v and set(parse_variant(v)) == keys)


class Lookup:
    """Row look-ups in a results table (a DataFrame of :func:`read_results`) by its keys: the one index that the
    findings (salbench.findings.table) and the figures (salbench.plots.base) read rows through."""

    def __init__(self, table: Any) -> None:
        import pandas as pd

        self.table = table
        steps = [None if pd.isna(s) else float(s) for s in table["step"]]
        keys = zip(table["task"], table["model"], table["method"], table["metric"], table["variant"],
                   table["statistic"], steps)
        self._rows = {k: i for i, k in enumerate(keys)}

    def row(self, task: str, model: str, method: str, metric: str, variant: str = "", statistic: str = "value",
            step: float | None = None) -> Any:
        """The row (a pandas Series) with these keys (``step`` None: the scalar row), or None when absent."""
        i = self._rows.get((task, model, method, metric, variant, statistic, step))
        return None if i is None else self.table.iloc[i]

    def select(self, **where: Any) -> Any:
        """The rows whose columns equal the given values (a value of None matches anything), in table order."""
        t = self.table
        mask = None
        for column, value in where.items():
            if value is not None:
                m = t[column] == value
                mask = m if mask is None else mask & m
        return t if mask is None else t[mask]


def results_paths(root: str | Path, tasks: Sequence[str], models: Sequence[str]) -> list[Path]:
    """``root/<task>/<model>.csv`` for every task × model (root: data/results)."""
    return [Path(root) / task / f"{model}.csv" for task in tasks for model in models]
