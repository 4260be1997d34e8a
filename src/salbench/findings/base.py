"""Findings: the seed papers' headline claims as small functions of the results table, with their verdicts.

A finding function reads rows of the results table (``salbench.findings.table.Results``) and DEPICT's summary
(data/metrics/depict.json) and returns a :class:`Cell`: a verdict with the numbers behind it, possibly built from
smaller cells by the aggregation rules of ``salbench.findings.rules``. :func:`evaluate_findings` runs every
registered finding and wraps each result with its metadata into a :class:`Finding`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..registry import Registry
from .table import Results

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not_reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)


@dataclass(frozen=True)
class Stat:
    """One number behind a verdict: a results-table row (mean, 95% CI, n scored samples) or a derived value with
    its CI (NaN bounds: none; n None: not a count of samples)."""

    label: str
    mean: float
    ci_low: float
    ci_high: float
    n: int | None

    def text(self, digits: int = 3) -> str:
        """``label 0.620 [0.580, 0.660] n=230``."""
        f = f"{{:.{digits}f}}"
        ci = "" if math.isnan(self.ci_low) else f" [{f.format(self.ci_low)}, {f.format(self.ci_high)}]"
        return f"{self.label} {f.format(self.mean)}{ci}" + ("" if self.n is None else f" n={self.n}")

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "mean": _num(self.mean), "ci_low": _num(self.ci_low),
                "ci_high": _num(self.ci_high), "n": self.n}


@dataclass(frozen=True)
class Cell:
    """A verdict on one part of a claim (``parts``: the smaller cells it aggregates; ``stats``: its numbers)."""

    label: str
    verdict: str
    why: str
    stats: tuple[Stat, ...] = ()
    parts: tuple["Cell", ...] = ()

    def leaves(self) -> list["Cell"]:
        """The cells without parts (the individual comparisons), depth first."""
        return [self] if not self.parts else [leaf for p in self.parts for leaf in p.leaves()]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "verdict": self.verdict, "why": self.why}
        if self.stats:
            out["stats"] = [s.to_json() for s in self.stats]
        if self.parts:
            out["parts"] = [p.to_json() for p in self.parts]
        return out


@dataclass(frozen=True)
class Inputs:
    """What findings read: the results table and DEPICT's summary (None when there is none)."""

    results: Results
    depict: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class FindingSpec:
    """A registered claim: metadata, which metrics it reads (``reads``; ``depict.json`` for DEPICT), the rows in
    words, its CI-aware rule in words, and the function that tests it."""

    id: str
    paper: str
    source: str
    claim: str
    reads: tuple[str, ...]
    rows: str
    rule: str
    test: Callable[[Inputs], Cell] = field(repr=False)


@dataclass(frozen=True)
class Finding:
    """A claim tested on this run: the spec's metadata, the verdict, a one-line explanation and the cell tree."""

    spec: FindingSpec
    result: Cell

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def verdict(self) -> str:
        return self.result.verdict

    @property
    def explanation(self) -> str:
        return self.result.why

    def counts(self) -> dict[str, int]:
        """Verdicts of the leaf cells (the individual comparisons)."""
        leaves = self.result.leaves()
        return {v: sum(c.verdict == v for c in leaves) for v in VERDICTS}

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {"id": s.id, "paper": s.paper, "source": s.source, "claim": s.claim, "reads": list(s.reads),
                "rows": s.rows, "rule": s.rule, "verdict": self.verdict, "explanation": self.explanation,
                "result": self.result.to_json()}


FINDINGS: Registry[FindingSpec] = Registry("finding")


def finding(id: str, *, paper: str, source: str, claim: str, reads: tuple[str, ...], rows: str,
            rule: str) -> Callable[[Callable[[Inputs], Cell]], Callable[[Inputs], Cell]]:
    """Register ``test`` as the finding ``id`` with its metadata."""

    def decorator(test: Callable[[Inputs], Cell]) -> Callable[[Inputs], Cell]:
        FINDINGS.register(id)(FindingSpec(id, paper, source, claim, reads, rows, rule, test))
        return test

    return decorator


def evaluate_findings(inputs: Inputs, names: list[str] | None = None) -> list[Finding]:
    """Test every registered finding (or ``names``) on ``inputs``, in registry order."""
    specs = [FINDINGS.get(n) for n in (names if names is not None else FINDINGS.names())]
    return [Finding(s, s.test(inputs)) for s in specs]


def verdict_counts(findings: list[Finding]) -> dict[str, int]:
    return {v: sum(f.verdict == v for f in findings) for v in VERDICTS}


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 6)
