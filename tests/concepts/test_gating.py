"""DEPICT's checks gate the importances: a generator that fails check 1 or 2 is untrusted in the JSON, the
metrics summary, the figure and the report caption; h's per-concept check-1 table."""
from __future__ import annotations

import json
from html import unescape

import pytest
import torch

from salbench.concepts import Plan, evaluate_generator, report, true_importance
from salbench.concepts.depict import Checks, check1_table, summary, trust
from salbench.concepts.metrics import rule_table
from salbench.params import ParamsError
from salbench.plots import FIGURES, Inputs, png_bytes, render_report
from salbench.plots.base import pyplot
from salbench.results import read_results

from depict_synthetic import BitsReader, bits_images


def noise_images(n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 8, 8, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def depict_results(task, noisy: bool) -> dict:
    """results.json of the permutation stage for f = the rule and h = an exact concept reader, through an exact
    generator and (``noisy``) one that returns noise whatever the caption."""
    gen = torch.Generator().manual_seed(0)
    c = torch.rand(40, 4, generator=gen) < 0.5
    labels = torch.tensor([task.rule(dict(zip(task.names, r))) for r in c.tolist()]).long()
    plan = Plan.draw(task.names, c, labels, task.names, 2, seed=1)
    f, h = BitsReader(4, rule_table(task)), BitsReader(4)
    exact = evaluate_generator({"rule": (f, 8)}, (h, 8), bits_images(c), plan, bits_images(c),
                               lambda a: torch.stack([bits_images(plan.targets(a, p)) for p in range(2)]))["rule"]
    results = {"renderer": exact}
    if noisy:
        results["noise"] = evaluate_generator(
            {"rule": (f, 8)}, (h, 8), bits_images(c), plan, noise_images(40, 1),
            lambda a: torch.stack([noise_images(40, 10 * a + p + 2) for p in range(2)]))["rule"]
    rep = report(plan, true_importance(task, plan), torch.tensor([0.4, 0.3, 0.2, 0.1]), "gradcam", results)
    return {"models": {"rule": rep}, "h_check1": {g: check1_table(task.names, r) for g, r in results.items()},
            "checks": rep["checks"]}


def test_a_noise_generator_is_untrusted_end_to_end(task) -> None:
    results = depict_results(task, noisy=True)
    gens = results["models"]["rule"]["generators"]
    # JSON: the exact generator passes, noise fails check 1 for f and h with the measured gaps in the reasons
    assert gens["renderer"]["trusted"] is True and gens["renderer"]["reasons"] == []
    assert gens["renderer"]["gaps"] == {"check1_f": 0.0, "check1_h_max": 0.0, "check2_max_other": 0.0,
                                        "check2_max_own": 0.0}
    noise = gens["noise"]
    assert noise["trusted"] is False
    assert noise["gaps"]["check1_f"] > 0.2 and noise["gaps"]["check1_h_max"] > 0.2
    assert any(r.startswith("check 1 (f)") for r in noise["reasons"])
    assert any(r.startswith("check 1 (h)") for r in noise["reasons"])
    assert f"{noise['gaps']['check1_f']:.3f}" in " ".join(noise["reasons"])
    # depict.json (dvc metrics): trusted / reasons per (model, generator)
    metrics = json.loads(json.dumps(summary(results["models"], {"red_cube": 1.0})))
    assert metrics["rule"]["noise"]["trusted"] is False and metrics["rule"]["noise"]["reasons"] == noise["reasons"]
    assert metrics["rule"]["renderer"]["trusted"] is True
    # figure: the noise bars are grey and hatched, labelled untrusted, with the reasons under the panels
    fig = FIGURES.get("depict").draw(Inputs(read_results([]), [], results))
    ax = fig.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    assert labels == ["true (rule)", "renderer", "noise (untrusted)"]
    assert handles[2].patches[0].get_hatch() == "///" and handles[1].patches[0].get_hatch() is None
    texts = " ".join(t.get_text() for a in fig.axes for t in a.texts)
    assert "UNTRUSTED noise for rule: failed check 1 (f), check 1 (h)" in texts
    assert f"check1_f {noise['gaps']['check1_f']:.3f}" in texts
    # report: the DEPICT caption names the untrusted pair, the reason and the gaps
    html = unescape(render_report(Inputs(read_results([]), [], results), {"depict": png_bytes(fig, 40)}))
    pyplot().close(fig)
    caption = html.split("<figcaption>")[1].split("</figcaption>")[0]
    assert "UNTRUSTED" in caption and "noise for rule: check 1 (f)" in caption
    assert f"check1_f {noise['gaps']['check1_f']:.3f}" in caption


def test_a_passing_run_says_so_in_the_caption_and_figure(task) -> None:
    results = depict_results(task, noisy=False)
    fig = FIGURES.get("depict").draw(Inputs(read_results([]), [], results))
    assert "untrusted" not in " ".join(fig.axes[0].get_legend_handles_labels()[1])
    html = unescape(render_report(Inputs(read_results([]), [], results), {"depict": png_bytes(fig, 40)}))
    pyplot().close(fig)
    assert "Every classifier × generator passed DEPICT's checks" in html and "UNTRUSTED" not in html


def test_check2_and_the_thresholds_gate(task) -> None:
    gen = torch.Generator().manual_seed(2)
    c = torch.rand(30, 4, generator=gen) < 0.5
    plan = Plan.draw(task.names, c, c[:, 0].long(), ["red_cube"], 2, seed=0)

    def leaky(a: int) -> torch.Tensor:  # permuting red_cube also switches yellow_object on everywhere
        out = [plan.targets(a, p) for p in range(2)]
        for t in out:
            t[:, 3] = True
        return torch.stack([bits_images(t) for t in out])

    r = evaluate_generator({"f": (BitsReader(4, torch.tensor([False, True] * 8)), 8)}, (BitsReader(4), 8),
                           bits_images(c), plan, bits_images(c), leaky)["f"]
    verdict = trust(r, plan, Checks())
    assert verdict["trusted"] is False and verdict["gaps"]["check2_max_other"] == pytest.approx(0.5)
    assert verdict["reasons"] == ["check 2: permuting one concept moved h's AUROC of another by > 0.1: "
                                  "yellow_object by 0.500 when red_cube was permuted"]
    assert trust(r, plan, Checks(max_other=0.5))["trusted"] is True  # at the threshold passes


def test_a_generator_that_ignores_the_permutation_fails_check2_on_the_permuted_concept(task) -> None:
    """g(c^j) = g(c): nothing else moves (check 2 off the concept passes) but h no longer finds j where the permuted
    captions put it, so its own AUROC falls from 1 to that of the unpermuted bits against the permuted ones."""
    gen = torch.Generator().manual_seed(3)
    c = torch.rand(30, 4, generator=gen) < 0.5
    plan = Plan.draw(task.names, c, c[:, 0].long(), ["red_cube"], 2, seed=0)
    r = evaluate_generator({"f": (BitsReader(4, torch.tensor([False, True] * 8)), 8)}, (BitsReader(4), 8),
                           bits_images(c), plan, bits_images(c), lambda a: torch.stack([bits_images(c)] * 2))["f"]
    verdict = trust(r, plan, Checks())
    own = verdict["gaps"]["check2_max_own"]
    assert verdict["gaps"]["check2_max_other"] == 0.0 and own > 0.3
    assert verdict["trusted"] is False and verdict["reasons"] == [
        "check 2 (own): the permuted images do not show the permuted concept: h's AUROC of it against the permuted "
        f"captions moved by > 0.1: red_cube by {own:.3f}"]
    assert trust(r, plan, Checks(max_own=own + 1e-6))["trusted"] is True  # (own is rounded to 6 places)


def test_h_check1_table_hand_computed(task) -> None:
    """h reads the bits back; generated images flip concept 0 in row 0: AUROC 3/4 there, 1 elsewhere."""
    c = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1]], dtype=torch.bool)
    plan = Plan.draw(task.names, c, c[:, 0].long(), [task.names[1]], 1, seed=0)
    generated = c.clone()
    generated[0, 0] = False
    f = BitsReader(4, torch.tensor([False, True] * 8))
    r = evaluate_generator({"f": (f, 8)}, (BitsReader(4), 8), bits_images(c), plan, bits_images(generated),
                           lambda a: bits_images(plan.targets(a, 0))[None])["f"]
    table = check1_table(task.names, r)
    # positives of concept 0 score {-1, +1}, negatives {-1, -1}: (0.5 + 0.5 + 1 + 1) / 4 = 0.75
    assert table[task.names[0]] == {"real": 1.0, "generated": 0.75, "gap": 0.25}
    assert all(table[n] == {"real": 1.0, "generated": 1.0, "gap": 0.0} for n in task.names[1:])
    # f = concept 0 (the label), so f's AUROC drops alike; check 2 sees g(c) (flipped) vs exact g(c^j) move 0.25
    verdict = trust(r, plan, Checks(max_gap=0.2, max_other=0.2))
    assert verdict["gaps"] == {"check1_f": 0.25, "check1_h_max": 0.25, "check2_max_other": 0.25, "check2_max_own": 0.0}
    assert verdict["reasons"] == [
        "check 1 (f): AUROC 1.000 on real vs 0.750 on generated images, gap 0.250 > 0.2",
        "check 1 (h): concept AUROC gap > 0.2 on red_cube (1.000 real vs 0.750 generated)",
        "check 2: permuting one concept moved h's AUROC of another by > 0.2: red_cube by 0.250 when blue_sphere "
        "was permuted"]
    assert trust(r, plan, Checks(max_gap=0.25, max_other=0.25)) == {**verdict, "trusted": True, "reasons": []}


@pytest.mark.parametrize(("params", "match"), [({"max_gap": -0.1}, ">= 0"), ({"max_own": -0.1}, ">= 0"),
                                               ({"max_gapp": 0.1}, "max_gap")])
def test_bad_checks_params_are_rejected(params: dict, match: str) -> None:
    with pytest.raises(ParamsError, match=match):
        Checks.from_params(params)
    assert Checks.from_params(None) == Checks(0.1, 0.1)


def test_results_without_verdicts_make_no_claim(task) -> None:
    """Results written before the gating existed carry no `trusted`: the caption says nothing either way."""
    from salbench.plots.depict import caption_note

    results = depict_results(task, noisy=True)
    for r in results["models"]["rule"]["generators"].values():
        del r["trusted"]
    assert caption_note(results) == "" and caption_note(None) == ""
    assert caption_note(depict_results(task, noisy=True)).startswith(" UNTRUSTED")
