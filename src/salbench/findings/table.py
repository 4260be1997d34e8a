"""The results table as findings read it: load data/results/**/*.csv (schema: :mod:`salbench.results`) and look
rows up by their keys."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..io import MissingArtifactError
from ..results import read_results

def load_results(root: str | Path) -> pd.DataFrame:
    """Every ``<root>/<task>/<model>.csv`` (schema: :mod:`salbench.results`) as one table; a missing or empty
    root names the evaluate stage."""
    root = Path(root)
    paths = sorted(root.rglob("*.csv")) if root.is_dir() else []
    if not paths:
        raise MissingArtifactError(f"no results tables under {root}: run `dvc repro evaluate` (or `dvc pull`) first")
    return read_results(paths)


@dataclass(frozen=True)
class Unit:
    """One evaluated (task, model) and its model family."""

    task: str
    model: str
    family: str


class Results:
    """Row look-ups in the results table by (task, model, method, metric, variant, statistic, step)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        steps = [None if pd.isna(s) else float(s) for s in table["step"]]
        keys = zip(table["task"], table["model"], table["method"], table["metric"], table["variant"],
                   table["statistic"], steps)
        self._rows = {k: i for i, k in enumerate(keys)}
        units = table[["task", "model", "family"]].drop_duplicates()
        self.units = [Unit(*u) for u in units.itertuples(index=False, name=None)]

    def units_of(self, family: str | None = None) -> list[Unit]:
        """Evaluated (task, model)s, optionally of one family, in table order."""
        return [u for u in self.units if family is None or u.family == family]

    def row(self, unit: Unit, method: str, metric: str, variant: str = "", statistic: str = "value",
            step: float | None = None) -> pd.Series | None:
        """The row with these keys, or None when the table lacks it."""
        i = self._rows.get((unit.task, unit.model, method, metric, variant, statistic, step))
        return None if i is None else self.table.iloc[i]

    def steps(self, unit: Unit, method: str, metric: str, variant: str = "", statistic: str = "value") -> list[float]:
        """The defined steps of a curve, ascending."""
        t = self.table
        sel = ((t["task"] == unit.task) & (t["model"] == unit.model) & (t["method"] == method)
               & (t["metric"] == metric) & (t["variant"] == variant) & (t["statistic"] == statistic))
        return sorted(float(s) for s in t.loc[sel, "step"] if not math.isnan(s))

    def methods(self, unit: Unit, metric: str, variant: str = "", statistic: str = "value",
                role: str = "method") -> list[str]:
        """Methods (of ``role``) with a scalar row for this metric, in table order."""
        t = self.table
        sel = ((t["task"] == unit.task) & (t["model"] == unit.model) & (t["role"] == role) & (t["metric"] == metric)
               & (t["variant"] == variant) & (t["statistic"] == statistic) & t["step"].isna())
        return list(dict.fromkeys(t.loc[sel, "method"]))

    def variants(self, metric: str, keys: tuple[str, ...]) -> list[str]:
        """The variants of ``metric`` in the table whose settings are exactly ``keys`` (e.g. ("pooling",) finds
        ``pooling=l1`` but not ``pooling=l1,saliency=meta``), sorted."""
        v = set(self.table.loc[self.table["metric"] == metric, "variant"])
        return sorted(x for x in v if x and sorted(kv.split("=")[0] for kv in x.split(",")) == sorted(keys))

