"""The results table as findings read it: load data/results/**/*.csv (schema: :mod:`salbench.results`) and look
rows up by their keys."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from ..io import MissingArtifactError
from ..results import Lookup, read_results, variants_with


def load_results(root: str | Path) -> pd.DataFrame:
    """Every ``<root>/<task>/<model>.csv`` (schema: :mod:`salbench.results`) as one table; a missing or empty
    root names the evaluate stage."""
    root = Path(root)
    paths = sorted(root.rglob("*.csv")) if root.is_dir() else []
    if not paths:
        raise MissingArtifactError(f"no results tables under {root}: run `dvc repro evaluate` (or `dvc pull`) first")
    return read_results(paths)


Kind = Literal["classifier", "vqa"]


@dataclass(frozen=True)
class Unit:
    """One evaluated (task, model), its model family, and whether it classifies images or answers questions (a
    question-answering model has answer-accuracy rows per question family, variant ``family=<name>``)."""

    task: str
    model: str
    family: str
    kind: Kind = "classifier"


class Results:
    """Row look-ups in the results table by (task, model, method, metric, variant, statistic, step), through
    :class:`salbench.results.Lookup`."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self.lookup = Lookup(table)
        units = table[["task", "model", "family"]].drop_duplicates()
        qa = table[(table["metric"] == "accuracy") & table["variant"].str.startswith("family=")]
        vqa = set(zip(qa["task"], qa["model"]))
        self.units = [Unit(t, m, f, "vqa" if (t, m) in vqa else "classifier")
                      for t, m, f in units.itertuples(index=False, name=None)]

    def units_of(self, family: str | None = None, task: str | None = None, kind: Kind = "classifier") -> list[Unit]:
        """Evaluated (task, model)s of one kind (the classifier papers' claims are about image classifiers,
        CLEVR-XAI's VQA claims about question-answering models), optionally of one family and / or task, in
        table order."""
        return [u for u in self.units
                if u.kind == kind and family in (None, u.family) and task in (None, u.task)]

    def units_with(self, metric: str, variants: Sequence[str] | None = None, family: str | None = None,
                   kind: Kind = "classifier") -> list[Unit]:
        """:meth:`units_of` that have some row of ``metric`` (of one of ``variants`` unless None): the models a
        claim about that metric applies to; a method missing from such a model still leaves the claim undecided."""
        t = self.lookup.select(metric=metric)
        if variants is not None:
            t = t[t["variant"].isin(list(variants))]
        have = set(zip(t["task"], t["model"]))
        return [u for u in self.units_of(family, kind=kind) if (u.task, u.model) in have]

    def row(self, unit: Unit, method: str, metric: str, variant: str = "", statistic: str = "value",
            step: float | None = None) -> pd.Series | None:
        """The row with these keys, or None when the table lacks it."""
        return self.lookup.row(unit.task, unit.model, method, metric, variant, statistic, step)

    def steps(self, unit: Unit, method: str, metric: str, variant: str = "", statistic: str = "value") -> list[float]:
        """The defined steps of a curve, ascending."""
        t = self.lookup.select(task=unit.task, model=unit.model, method=method, metric=metric, variant=variant,
                               statistic=statistic)
        return sorted(float(s) for s in t["step"] if not math.isnan(s))

    def methods(self, unit: Unit, metric: str, variant: str = "", statistic: str = "value",
                role: str = "method") -> list[str]:
        """Methods (of ``role``) with a scalar row for this metric, in table order."""
        t = self.lookup.select(task=unit.task, model=unit.model, role=role, metric=metric, variant=variant,
                               statistic=statistic)
        return list(dict.fromkeys(t.loc[t["step"].isna(), "method"]))

    def variants(self, metric: str, keys: tuple[str, ...]) -> list[str]:
        """The variants of ``metric`` whose settings are exactly ``keys``, sorted (salbench.results.variants_with)."""
        return variants_with(self.table, metric, keys)
