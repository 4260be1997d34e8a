"""The CI-aware rules that turn numbers into verdicts, and the rules that combine verdicts.

Comparisons use the 95% bootstrap CIs of the results table:

- ``better(a, b)``: "a is better than b" is *reproduced* when a's CI lies entirely on the better side of b's CI,
  *not reproduced* when b's CI lies entirely on the better side of a's, and *inconclusive* when they overlap.
  Non-overlap of two 95% CIs is a conservative test (about p < 0.006 for equal widths; more so for rows scored on
  the same images, whose errors correlate positively), so an overlap never counts against a claim; it only leaves it
  undecided. With no true difference, a comparison separates the wrong way with probability below about 0.3%, so a
  conjunction of k parts fails spuriously with probability below about k x 0.3%.
- ``beyond(a, t)``: "a is above (below) the threshold t" is reproduced when a's whole CI is on the claimed side of
  t, not reproduced when the whole CI is on the other side, inconclusive when the CI contains t.
- A missing row, or a row with no scored sample (n = 0), is *inconclusive*, and the reason names the row.

Several cells combine by one of two explicit rules:

- ``all_of`` (a conjunction: "on both GT metrics", "on every model"): not reproduced when any part is not
  reproduced; reproduced when every part is reproduced; inconclusive otherwise.
- ``most_of`` ("for most methods"): reproduced when more than half of the parts are reproduced; not reproduced when
  that majority is out of reach even if every inconclusive part turned reproduced (reproduced + inconclusive <= half);
  inconclusive otherwise.

Averages over models (``average``) combine the rows' standard errors, read back from the CIs as
(ci_high - ci_low) / (2 * 1.96), as independent normal errors: mean of means +- 1.96 * sqrt(sum se^2) / k.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterator, Sequence

import numpy as np
from scipy.stats import rankdata

from .base import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Cell, Stat
from .table import Results, Unit

Z95 = 1.959964
ALPHA = 0.05            # one-sided level of the permutation test of a rank correlation
N_RESAMPLES = 2000      # parametric-bootstrap resamples for the CI of a rank correlation
SEED = 0


def stat(results: Results, unit: Unit, method: str, metric: str, variant: str = "", statistic: str = "value",
         step: float | None = None) -> Stat | str:
    """The row as a :class:`Stat` labelled ``model method metric[variant][statistic][@step]``, or the reason it
    cannot be used (missing, or n = 0)."""
    tail = "".join(f" {x}" for x in (variant, "" if statistic == "value" else statistic) if x)
    tail += "" if step is None else f" step {step:g}"
    label = f"{unit.model} {method} {metric}{tail}"
    row = results.row(unit, method, metric, variant, statistic, step)
    if row is None:
        return f"missing row: {label} ({unit.task})"
    if int(row["n"]) == 0 or math.isnan(row["mean"]):
        return f"no scored sample: {label} ({unit.task}), n=0 ({int(row['n_undefined'])} undefined)"
    return Stat(label, float(row["mean"]), float(row["ci_low"]), float(row["ci_high"]), int(row["n"]))


def better(a: Stat | str, b: Stat | str, higher: bool = True, label: str | None = None) -> Cell:
    """Cell "a is better than b" (``higher``: larger is better) by non-overlap of the 95% CIs."""
    missing = [x for x in (a, b) if isinstance(x, str)]
    if missing:
        return Cell(label or "comparison", INCONCLUSIVE, "; ".join(missing),
                    tuple(x for x in (a, b) if isinstance(x, Stat)))
    assert isinstance(a, Stat) and isinstance(b, Stat)
    label = label or f"{a.label} {'>' if higher else '<'} {b.label}"
    word = "above" if higher else "below"
    a_wins = a.ci_low > b.ci_high if higher else a.ci_high < b.ci_low
    b_wins = b.ci_low > a.ci_high if higher else b.ci_high < a.ci_low
    if a_wins:
        return Cell(label, REPRODUCED, f"{a.text()} lies {word} {b.text()}", (a, b))
    if b_wins:
        return Cell(label, NOT_REPRODUCED, f"{b.text()} lies {word} {a.text()}", (a, b))
    return Cell(label, INCONCLUSIVE, f"CIs overlap: {a.text()} vs {b.text()}", (a, b))


def beyond(a: Stat | str, threshold: float, above: bool, label: str | None = None) -> Cell:
    """Cell "a lies above (``above``) or below the threshold" by the position of its 95% CI."""
    if isinstance(a, str):
        return Cell(label or "threshold", INCONCLUSIVE, a)
    side = "above" if above else "below"
    label = label or f"{a.label} {side} {threshold:g}"
    if (a.ci_low > threshold) if above else (a.ci_high < threshold):
        return Cell(label, REPRODUCED, f"{a.text()} lies {side} {threshold:g}", (a,))
    if (a.ci_high < threshold) if above else (a.ci_low > threshold):
        return Cell(label, NOT_REPRODUCED, f"{a.text()} lies {'below' if above else 'above'} {threshold:g}", (a,))
    return Cell(label, INCONCLUSIVE, f"CI contains {threshold:g}: {a.text()}", (a,))


def all_of(label: str, parts: Sequence[Cell]) -> Cell:
    """Conjunction: not reproduced if any part is, reproduced if all are, else inconclusive (no parts: inconclusive)."""
    parts = tuple(parts)
    if not parts:
        return Cell(label, INCONCLUSIVE, "missing rows: nothing to compare for this claim in the results table")
    bad = [p for p in parts if p.verdict == NOT_REPRODUCED]
    if bad:
        return Cell(label, NOT_REPRODUCED, f"{len(bad)} of {len(parts)} parts fail; {_first(bad)}", parts=parts)
    open_ = [p for p in parts if p.verdict == INCONCLUSIVE]
    if open_:
        return Cell(label, INCONCLUSIVE, f"{len(open_)} of {len(parts)} parts undecided; {_first(open_)}",
                    parts=parts)
    return Cell(label, REPRODUCED, f"all {len(parts)} parts hold; {_first(parts)}", parts=parts)


def most_of(label: str, parts: Sequence[Cell]) -> Cell:
    """Majority: reproduced if more than half of the parts are; not reproduced if that majority is out of reach
    even with every inconclusive part reproduced; else inconclusive."""
    parts = tuple(parts)
    if not parts:
        return Cell(label, INCONCLUSIVE, "missing rows: nothing to compare for this claim in the results table")
    k = len(parts)
    yes = [p for p in parts if p.verdict == REPRODUCED]
    no = [p for p in parts if p.verdict == NOT_REPRODUCED]
    open_ = [p for p in parts if p.verdict == INCONCLUSIVE]
    counts = f"{len(yes)} of {k} hold, {len(no)} fail, {len(open_)} undecided"
    if 2 * len(yes) > k:
        return Cell(label, REPRODUCED, f"{counts} (majority holds); {_first(yes)}", parts=parts)
    if 2 * (len(yes) + len(open_)) <= k:
        return Cell(label, NOT_REPRODUCED, f"{counts} (no majority possible); {_first(no)}", parts=parts)
    return Cell(label, INCONCLUSIVE, f"{counts} (majority undecided); {_first(open_ or no)}", parts=parts)


def paired_votes(label: str, results: Results, metric: str, a: str, b: str, statistic: str = "value",
                 higher: bool = True) -> Cell:
    """"Variant ``a`` of ``metric`` is better than variant ``b``" per model and method (every method with a scalar
    row of ``a``), each by :func:`better`; the (model, method) pairs vote (:func:`most_of`)."""
    r = results
    return most_of(label, [
        better(stat(r, u, m, metric, a, statistic), stat(r, u, m, metric, b, statistic), higher,
               label=f"{u.model} {m}")
        for u in r.units_of() for m in r.methods(u, metric, a, statistic)])


def _first(cells: Sequence[Cell]) -> str:
    """"e.g. <path>: <why>" for the first leaf under ``cells[0]`` with that cell's verdict (short explanations)."""
    path, leaf = next(((p, c) for p, c in _paths(cells[0], ()) if c.verdict == cells[0].verdict),
                      ((cells[0].label,), cells[0]))
    return f"e.g. {' / '.join(path)}: {leaf.why}"


def _paths(cell: Cell, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Cell]]:
    path = path + (cell.label,)
    if not cell.parts:
        yield path, cell
    for p in cell.parts:
        yield from _paths(p, path)


def se(s: Stat) -> float:
    """Standard error read back from a 95% CI."""
    return (s.ci_high - s.ci_low) / (2 * Z95)


def average(label: str, stats: Sequence[Stat | str]) -> Stat | str:
    """Mean of several rows' means with a normal-approximation CI (independent errors); any unusable row makes the
    average unusable (its reason is returned)."""
    bad = [s for s in stats if isinstance(s, str)]
    if bad or not stats:
        return "; ".join(bad) or f"no rows for {label}"
    good = [s for s in stats if isinstance(s, Stat)]
    mean = sum(s.mean for s in good) / len(good)
    half = Z95 * math.sqrt(sum(se(s) ** 2 for s in good)) / len(good)
    return Stat(label, mean, mean - half, mean + half, sum(s.n for s in good))


def rank_agreement(label: str, x: Sequence[Stat], y: Sequence[Stat]) -> tuple[Stat, float]:
    """Spearman correlation across paired rows (one per method) of two metrics, with a parametric-bootstrap 95% CI
    (each mean redrawn from N(mean, se^2), seeded; errors taken as independent across methods, an approximation for
    methods scored on the same images) and a one-sided permutation p-value (exact for up to 8 methods, else
    ``N_RESAMPLES`` seeded permutations). Returns the correlation as a Stat (n = number of methods) and p."""
    mx, my = np.array([s.mean for s in x]), np.array([s.mean for s in y])
    rho = _spearman(mx[None], my[None])[0]
    rng = np.random.default_rng(SEED)
    sx, sy = (np.nan_to_num(np.array([se(s) for s in v])) for v in (x, y))  # a row without a CI: taken as exact
    bx = mx + rng.standard_normal((N_RESAMPLES, len(x))) * sx
    by = my + rng.standard_normal((N_RESAMPLES, len(y))) * sy
    boot = _spearman(bx, by)
    lo, hi = np.nanquantile(boot, [0.025, 0.975]) if np.isfinite(boot).any() else (math.nan, math.nan)
    exact = len(x) <= 8
    perms = (np.array(list(itertools.permutations(range(len(x))))) if exact
             else np.argsort(rng.random((N_RESAMPLES, len(x))), axis=1))
    null = _spearman(np.broadcast_to(mx, perms.shape), my[perms])
    hits = int(np.sum(null >= rho - 1e-12))
    p = hits / len(perms) if exact else (hits + 1) / (len(perms) + 1)  # the identity is among the exact ones
    return Stat(label, float(rho), float(lo), float(hi), len(x)), float(p)


def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation of two (R, m) arrays (average ranks for ties; NaN for a constant row)."""
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / den, np.nan)
