"""Every finding's verdict on the synthetic table, its flip when its numbers are edited, and missing rows."""
from __future__ import annotations

import math

import pandas as pd
import pytest
from findings_synthetic import EXPECTED, FLIPS, TASK, set_mean, synthetic_depict, synthetic_table

from salbench.findings import FINDINGS, INCONCLUSIVE, Inputs, Results, evaluate_findings
from salbench.findings.depict import generator_cell


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table()


def verdict(table: pd.DataFrame, depict: dict | None, name: str):
    return evaluate_findings(Inputs(Results(table), depict), [name])[0]


def test_every_registered_finding_has_an_expected_verdict_and_a_flip() -> None:
    assert set(EXPECTED) == set(FINDINGS.names()) == set(FLIPS)
    assert len(FINDINGS.names()) >= 13


def test_every_finding_gives_its_expected_verdict(table: pd.DataFrame) -> None:
    found = {f.id: f.verdict for f in evaluate_findings(Inputs(Results(table), synthetic_depict()))}
    assert found == EXPECTED


@pytest.mark.parametrize("name", sorted(FLIPS))
def test_verdict_flips_when_its_numbers_are_edited(table: pd.DataFrame, name: str) -> None:
    edit, after = FLIPS[name]
    edited, depict = edit(table, synthetic_depict())
    assert after != EXPECTED[name]
    f = verdict(edited, depict, name)
    assert f.verdict == after, f.explanation


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_missing_rows_give_inconclusive_with_the_reason(table: pd.DataFrame, name: str) -> None:
    spec = FINDINGS.get(name)
    depict = None if "depict.json" in spec.reads else synthetic_depict()
    f = verdict(table[~table["metric"].isin(spec.reads)], depict, name)
    assert f.verdict == INCONCLUSIVE
    assert "missing" in f.explanation, f.explanation


def test_a_missing_method_is_named_in_the_explanation(table: pd.DataFrame) -> None:
    vit = verdict(table[(table["model"] != "vit-tiny") | (table["method"] != "lrp")], None, "clevr_xai_ordering_vit")
    assert vit.verdict == INCONCLUSIVE and "missing row: vit-tiny lrp mass_accuracy" in vit.explanation
    cnn = verdict(table[table["method"] != "gradient_x_input"], None, "clevr_xai_ordering_cnn")
    # IG > G×I cannot be decided any more, but LRP > IG still holds: undecided, naming the missing row
    assert cnn.verdict == INCONCLUSIVE and "missing row: resnet-small gradient_x_input" in cnn.explanation


def test_finding_json_carries_claim_source_rule_and_numbers(table: pd.DataFrame) -> None:
    f = verdict(table, None, "clevr_xai_ordering_cnn").to_json()
    assert {"id", "paper", "source", "claim", "rule", "rows", "verdict", "explanation", "result"} <= set(f)
    # 2 GT metrics x 6 poolings x 1 CNN x 2 adjacent pairs, each with both rows' mean, CI and n
    leaves = [leaf for metric in f["result"]["parts"] for cell in metric["parts"] for leaf in cell["parts"]]
    assert len(leaves) == 24
    stats = {s["label"]: s for s in leaves[0]["stats"]}
    lrp = stats["resnet-small lrp mass_accuracy pooling=l1"]
    assert lrp["n"] == 230 and lrp["mean"] == pytest.approx(0.65) and lrp["ci_low"] == pytest.approx(0.63)


def test_depict_gates() -> None:
    untrusted = generator_cell("m", "diffusion", {"spearman_true": 1.0, "trusted": False, "reasons": ["check 1 fails"]})
    assert untrusted.verdict == INCONCLUSIVE and "check 1 fails" in untrusted.why
    unknown = generator_cell("m", "renderer", {"spearman_true": 0.95})
    assert unknown.verdict == "reproduced" and "trust unknown" in unknown.why
    assert generator_cell("m", "renderer", {"spearman_true": 0.4}).verdict == INCONCLUSIVE
    assert generator_cell("m", "renderer", {"spearman_true": 0.4, "trusted": True}).verdict == "not_reproduced"
    assert generator_cell("m", "renderer", {"spearman_true": None, "trusted": True}).verdict == INCONCLUSIVE
    only_untrusted = {"m": {"diffusion": {"spearman_true": 0.9, "trusted": False, "reasons": ["check 2"]}}}
    f = evaluate_findings(Inputs(Results(synthetic_table().head(0)), only_untrusted), ["depict_recovers_ranking"])[0]
    assert f.verdict == INCONCLUSIVE and "no trusted generator" in f.explanation and "check 2" in f.explanation


def test_sanity_checks_read_the_fully_randomised_step(table: pd.DataFrame) -> None:
    f = verdict(table, None, "sanity_cascading").to_json()
    labels = [s["label"] for model in f["result"]["parts"] for cell in model["parts"] for s in cell["stats"]]
    assert all(label.endswith("step 6") for label in labels) and len(labels) == 8
    # raising an intermediate step only (not the last) changes nothing
    mid = table.copy()
    mid.loc[(mid["metric"] == "cascading_randomization") & (mid["step"] == 3.0), "mean"] = 0.99
    assert verdict(mid, None, "sanity_cascading").verdict == EXPECTED["sanity_cascading"]


def test_gt_vs_perturbation_reports_rho_and_p(table: pd.DataFrame) -> None:
    f = verdict(table, None, "clevr_xai_gt_vs_perturbation").to_json()
    cnn = f["result"]["parts"][0]
    (rho,) = cnn["stats"]
    assert rho["mean"] == pytest.approx(1.0) and rho["n"] == 15  # AOPC MoRF is increasing in mass accuracy here
    assert "permutation p=0.0005" in cnn["why"]  # 1 / (2000 + 1) seeded permutations for 15 methods
    assert not math.isnan(rho["ci_low"]) and rho["ci_low"] > 0


def test_findings_are_deterministic(table: pd.DataFrame) -> None:
    runs = [[f.to_json() for f in evaluate_findings(Inputs(Results(table), synthetic_depict()))] for _ in range(2)]
    assert runs[0] == runs[1]


def test_vqa_ordering_is_stated_per_task_and_gt_kind_with_numbers(table: pd.DataFrame) -> None:
    f = verdict(table, None, "clevr_xai_vqa_simple_single_object").to_json()
    # 2 GT metrics x 6 poolings x 2 VQA models x 2 adjacent pairs; only gt=single_object rows of vqa-simple
    leaves = [leaf for metric in f["result"]["parts"] for cell in metric["parts"] for leaf in cell["parts"]]
    assert len(leaves) == 48 and all(leaf["verdict"] == "reproduced" for leaf in leaves)
    stats = {s["label"]: s for s in leaves[0]["stats"]}
    lrp = stats["film-small lrp mass_accuracy gt=single_object,pooling=l1"]
    assert lrp["n"] == 150 and lrp["mean"] == pytest.approx(0.73) and lrp["ci_high"] == pytest.approx(0.75)
    # the classifier-only table: every VQA finding is undecided and names the task it lacks
    classifier = verdict(table[~table["task"].str.startswith("vqa-")], None, "clevr_xai_vqa_complex_union")
    assert classifier.verdict == INCONCLUSIVE and "no vqa-complex model with mass_accuracy" in classifier.explanation


def test_question_sensitivity_bar_lies_midway_from_the_random_control_to_one(table: pd.DataFrame) -> None:
    f = verdict(table, None, "vqa_question_sensitivity").to_json()
    units = [p["label"] for p in f["result"]["parts"]]
    assert units == ["vqa-simple film-small", "vqa-simple rn-small", "vqa-complex film-small", "vqa-complex rn-small"]
    cells = {c["label"].split(" ")[0]: c for c in f["result"]["parts"][0]["parts"]}  # real methods only, not edge
    assert sorted(cells) == ["gradient", "gradient_x_input", "integrated_gradients", "lrp"]
    assert cells["lrp"]["label"] == "lrp below 0.500 (midway from random 0.000 to 1)"
    assert cells["gradient_x_input"]["verdict"] == "reproduced" and cells["gradient"]["verdict"] == "not_reproduced"
    why = cells["gradient"]["why"]
    assert "film-small gradient question_sensitivity 0.600 [0.560, 0.640] n=120 lies above 0.5" in why
    # random maps correlated at 0.5 across questions: the bar moves to 0.75 and gradient now holds too
    moved = verdict(set_mean(table, 0.5, method="random", metric="question_sensitivity"), None,
                    "vqa_question_sensitivity")
    assert moved.verdict == "reproduced" and moved.counts() == {"reproduced": 16, "not_reproduced": 0,
                                                                "inconclusive": 0}
    # without the random control's row: undecided, naming it
    missing = verdict(table[table["method"] != "random"], None, "vqa_question_sensitivity")
    assert missing.verdict == INCONCLUSIVE
    assert "missing row: film-small random question_sensitivity" in missing.explanation


def test_classifier_claims_ignore_question_answering_models(table: pd.DataFrame) -> None:
    """A VQA model's sanity, COSE and class-sensitivity rows (evaluate_vqa writes them, family cnn) with every
    classifier number inverted change no classifier paper's verdict; the VQA findings still see the model."""
    base = {f.id: f.to_json() for f in evaluate_findings(Inputs(Results(table), synthetic_depict()))}
    clf = table[(table["task"] == TASK) & (table["model"] == "resnet-small")]
    twin = clf.assign(task="vqa-simple", model="film-small", mean=1 - clf["mean"], ci_low=1 - clf["ci_high"],
                      ci_high=1 - clf["ci_low"])
    twin = twin[twin["metric"] != "accuracy"]
    mixed = {f.id: f.to_json() for f in evaluate_findings(Inputs(Results(pd.concat([table, twin])),
                                                                 synthetic_depict()))}
    classifier = [i for i in base if not i.startswith(("clevr_xai_vqa", "vqa_"))]
    assert len(classifier) >= 10 and all(mixed[i] == base[i] for i in classifier)
    units = Results(pd.concat([table, twin])).units_of(task="vqa-simple", kind="vqa")
    assert [u.model for u in units] == ["film-small", "rn-small"]
    # without the kind filter the inverted twin would decide: the same rows under a classifier task flip verdicts
    flipped = {f.id: f.verdict for f in evaluate_findings(Inputs(Results(pd.concat(
        [table, twin.assign(task="other-task")])), synthetic_depict()))}
    assert any(flipped[i] != base[i]["verdict"] for i in classifier)
