"""The CI rules and the aggregation rules on hand-computed cases."""
from __future__ import annotations

import math

import pytest

from salbench.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Cell, Results, Stat
from salbench.findings.rules import Z95, all_of, average, better, beyond, most_of, paired_votes, rank_agreement


def s(mean: float, half: float = 0.1, label: str = "x") -> Stat:
    return Stat(label, mean, mean - half, mean + half, 10)


@pytest.mark.parametrize("a, b, higher, expected", [
    (0.5, 0.2, True, REPRODUCED),        # [0.4, 0.6] above [0.1, 0.3]
    (0.2, 0.5, True, NOT_REPRODUCED),
    (0.5, 0.35, True, INCONCLUSIVE),     # [0.4, 0.6] and [0.25, 0.45] overlap
    (0.2, 0.5, False, REPRODUCED),       # lower is better
    (0.5, 0.2, False, NOT_REPRODUCED),
])
def test_better_by_ci_separation(a: float, b: float, higher: bool, expected: str) -> None:
    assert better(s(a, label="a"), s(b, label="b"), higher).verdict == expected


def test_better_with_a_missing_row_is_inconclusive_and_says_why() -> None:
    c = better("missing row: m lrp mass_accuracy", s(0.3))
    assert c.verdict == INCONCLUSIVE and c.why == "missing row: m lrp mass_accuracy"


@pytest.mark.parametrize("mean, above, expected", [
    (0.1, False, REPRODUCED), (0.5, False, NOT_REPRODUCED), (0.3, False, INCONCLUSIVE),
    (0.5, True, REPRODUCED), (0.1, True, NOT_REPRODUCED), (0.3, True, INCONCLUSIVE)])
def test_beyond_threshold(mean: float, above: bool, expected: str) -> None:
    assert beyond(s(mean), 0.3, above).verdict == expected


def cells(*verdicts: str) -> list[Cell]:
    return [Cell(f"c{i}", v, "why") for i, v in enumerate(verdicts)]


R, N, U = REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE  # U: undecided


@pytest.mark.parametrize("verdicts, expected", [
    ((R, R), R), ((R, U), U), ((R, N), N), ((U, N), N), ((), U)])
def test_all_of(verdicts: tuple[str, ...], expected: str) -> None:
    assert all_of("x", cells(*verdicts)).verdict == expected


@pytest.mark.parametrize("verdicts, expected", [
    ((R, R, N), R),          # 2 of 3 > half
    ((R, U, N, N), N),       # even with U reproduced: 2 of 4, not more than half
    ((R, U, U, N), U),       # 3 of 4 possible
    ((R, N), N), ((U,), U), ((), U)])
def test_most_of(verdicts: tuple[str, ...], expected: str) -> None:
    assert most_of("x", cells(*verdicts)).verdict == expected


def test_average_combines_standard_errors() -> None:
    a = average("avg", [s(0.2, 0.1), s(0.6, 0.2)])
    se = math.sqrt((0.1 / Z95) ** 2 + (0.2 / Z95) ** 2) / 2
    assert a.mean == pytest.approx(0.4) and a.ci_high - a.mean == pytest.approx(Z95 * se) and a.n == 20
    assert average("avg", [s(0.2), "missing row: y"]) == "missing row: y"


def test_rank_agreement_exact_permutation_p() -> None:
    x = [s(v, 0.001) for v in (0.1, 0.2, 0.3, 0.4)]
    rho, p = rank_agreement("rho", x, [s(v, 0.001) for v in (1.0, 2.0, 3.0, 4.0)])
    assert rho.mean == pytest.approx(1.0) and p == pytest.approx(1 / 24) and rho.ci_low == pytest.approx(1.0)
    rho, p = rank_agreement("rho", x, [s(v, 0.001) for v in (4.0, 3.0, 2.0, 1.0)])
    assert rho.mean == pytest.approx(-1.0) and p == pytest.approx(1.0)
    # wide CIs: the bootstrap CI of rho widens
    rho, _ = rank_agreement("rho", [s(v, 0.5) for v in (0.1, 0.2, 0.3, 0.4)], x)
    assert rho.ci_low < 0.5


def test_paired_votes_compare_two_variants_per_model_and_method() -> None:
    import pandas as pd

    from salbench.results import COLUMNS

    def row(model: str, method: str, v: str, mean: float) -> dict:
        return dict(task="t", model=model, family="cnn", method=method, role="method", metric="m", variant=v,
                    statistic="value", step=math.nan, step_label="", mean=mean, ci_low=mean - 0.1,
                    ci_high=mean + 0.1, n=10, n_undefined=0)

    # a: 0.9 vs b: 0.5 holds; 0.5 vs 0.45 overlaps; 0.2 vs 0.8 fails; "c" lacks its b row: undecided, named
    rows = [row("m1", "a", "k=a", 0.9), row("m1", "a", "k=b", 0.5), row("m1", "b", "k=a", 0.5),
            row("m1", "b", "k=b", 0.45), row("m2", "a", "k=a", 0.2), row("m2", "a", "k=b", 0.8),
            row("m2", "c", "k=a", 0.9)]
    cell = paired_votes("a > b", Results(pd.DataFrame(rows, columns=list(COLUMNS))), "m", "k=a", "k=b")
    assert [(p.label, p.verdict) for p in cell.parts] == [("m1 a", R), ("m1 b", U), ("m2 a", N), ("m2 c", U)]
    assert cell.verdict == U and "missing row: m2 c m k=b" in cell.parts[3].why
    lower = paired_votes("a < b", Results(pd.DataFrame(rows, columns=list(COLUMNS))), "m", "k=a", "k=b",
                         higher=False)
    assert [p.verdict for p in lower.parts] == [N, U, R, U]
