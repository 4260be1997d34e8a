"""The negative-controls table on hand-counted rows, and the self-contained HTML fragment."""
from __future__ import annotations

import html.parser
import re

import pandas as pd
import pytest
from findings_synthetic import synthetic_depict, synthetic_table

from salbench.findings import (FINDINGS, Inputs, Results, controls_summary, controls_table, evaluate_findings,
                               findings_html)
from salbench.findings.controls import higher_is_better, records


@pytest.fixture(scope="module")
def controls() -> pd.DataFrame:
    return controls_table(Results(synthetic_table()))


def row(controls: pd.DataFrame, model: str, metric: str, variant: str, statistic: str = "value") -> pd.Series:
    sel = controls[(controls["model"] == model) & (controls["metric"] == metric) & (controls["variant"] == variant)
                   & (controls["statistic"] == statistic)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_edge_and_random_counts_on_mass_accuracy(controls: pd.DataFrame) -> None:
    # edge 0.40 +- 0.02 vs the 15 CNN methods (synthetic.MASS): CI-below it IG .05, G×I .28, gradient .30,
    # smoothgrad .35, vargrad .33, deconvolution .15, linear_approx .27; CI-above it the 8 others (guided bp .45 ...)
    r = row(controls, "resnet-small", "mass_accuracy", "pooling=sum_abs")
    assert (r["n_methods"], r["edge_beats"], r["edge_ties"], r["edge_loses"], r["edge_rank"]) == (15, 7, 0, 8, 9)
    assert not r["edge_above_methods"]
    # random 0.12: beats IG (0.05), ties deconvolution (0.15), loses to the 13 others
    assert (r["random_beats"], r["random_ties"], r["random_loses"], r["random_rank"]) == (1, 1, 13, 15)
    assert r["random_beaten"] and r["gt_mask_rank"] == 1 and r["better"] == "higher"
    assert row(controls, "vit-tiny", "mass_accuracy", "pooling=sum_abs")["n_methods"] == 16  # + attnlrp on the ViT


def test_edge_flagged_where_it_beats_most_methods(controls: pd.DataFrame) -> None:
    # edge 0.5 +- 0.02 vs 0.1 + 0.5 * mass +- 0.02: the best method (LRP) reaches 0.41 + 0.02 < 0.48
    r = row(controls, "resnet-small", "aopc", "order=morf")
    assert r["edge_beats"] == 15 and r["edge_rank"] == 1 and r["edge_above_methods"]
    lerf = row(controls, "resnet-small", "aopc", "order=lerf")
    assert lerf["better"] == "lower"
    # class sensitivity (lower is better): the model-independent edge map is identical for both classes (1.0)
    cs = row(controls, "resnet-small", "class_sensitivity", "")
    assert cs["edge_loses"] == cs["n_methods"] == 6 and not cs["edge_above_methods"]


def test_compared_rows_are_scalars_and_the_last_cascading_step(controls: pd.DataFrame) -> None:
    assert "perturbation_curve" not in set(controls["metric"])
    casc = row(controls, "resnet-small", "cascading_randomization", "", "spearman_abs")
    assert casc["step"] == 6 and casc["edge_mean"] == pytest.approx(1.0)
    assert higher_is_better("smooth_mprt", "") is False and higher_is_better("efficient_mprt", "") is True
    assert higher_is_better("aopc", "order=sideways") is None


def test_controls_summary_and_records(controls: pd.DataFrame) -> None:
    summary = controls_summary(controls)
    assert summary["metrics"] == len(controls)
    assert summary["edge_above_methods"] == int(controls["edge_above_methods"].sum())
    recs = records(controls)
    assert recs[0]["model"] == "resnet-small" and all(v is None or not isinstance(v, float) or v == v
                                                      for r in recs for v in r.values())


class _Parser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs


def test_html_fragment_has_every_finding_and_is_self_contained(controls: pd.DataFrame) -> None:
    findings = evaluate_findings(Inputs(Results(synthetic_table()), synthetic_depict()))
    out = findings_html(findings, controls)
    for name in FINDINGS.names():
        assert f"<b>{name}</b>" in out
    assert out.startswith("<section") and out.endswith("</section>")
    p = _Parser()
    p.feed(out)
    assert not {"script", "link", "img", "iframe"} & set(p.tags)
    assert not [a for a in p.attrs if a[0] in ("src", "href")]
    assert not re.search(r"url\(|@import|https?:", out.split("</style>")[0])
    assert out.count("<tr class='not_reproduced'>") >= 2  # two findings not reproduced (+ flagged control rows)
    assert "Negative controls" in out and "aopc" in out
    # the JSON form (data/findings/findings.json) gives the same fragment; without controls, no controls table
    assert findings_html([f.to_json() for f in findings], records(controls)) == out
    alone = findings_html(findings)
    assert "Negative controls" not in alone and all(f"<b>{name}</b>" in alone for name in FINDINGS.names())


def test_question_sensitivity_is_lower_is_better(controls: pd.DataFrame) -> None:
    # VQA rows: edge at 1.0 (the same map for both questions), random at 0.0 +- 0.02 (drawn per question), 4 real
    # methods at 0.2-0.6 +- 0.04: every method beats edge, random beats every method (like class sensitivity, the
    # metric alone rewards noise)
    qs = controls[(controls["task"] == "vqa-simple") & (controls["model"] == "rn-small")
                  & (controls["metric"] == "question_sensitivity")].iloc[0]
    assert qs["better"] == "lower" and qs["n_methods"] == 4
    assert (qs["edge_loses"], qs["edge_rank"], qs["random_beats"], qs["random_rank"]) == (4, 5, 4, 1)
    assert not qs["random_beaten"]
