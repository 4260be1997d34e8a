"""DEPICT end to end on a synthetic exact generator, the report, h, and the saliency ranking."""
from __future__ import annotations

import json

import pytest
import torch

from salbench.concepts import (Plan, concept_matrix, evaluate_generator, object_concepts, ranking, report,
                               saliency_scores, train_concept_classifier, true_importance)
from salbench.concepts.depict import summary
from salbench.models import TrainConfig, build_model

from depict_synthetic import BitsReader, bits_images


def test_with_a_perfect_generator_and_f_the_rule_depict_is_the_true_importance(task) -> None:
    from salbench.concepts.metrics import rule_table

    gen = torch.Generator().manual_seed(0)
    c = torch.rand(40, 4, generator=gen) < 0.5
    labels = torch.tensor([task.rule(dict(zip(task.names, r))) for r in c.tolist()]).long()
    plan = Plan.draw(task.names, c, labels, task.names, 3, seed=1)
    f, h = BitsReader(4, rule_table(task)), BitsReader(4)
    result = evaluate_generator({"rule": (f, 8)}, (h, 8), bits_images(c), plan, bits_images(c),
                                lambda a: torch.stack([bits_images(plan.targets(a, p)) for p in range(3)]))["rule"]
    truth = true_importance(task, plan)
    torch.testing.assert_close(result.importance.mean, truth.mean)
    torch.testing.assert_close(result.importance.std, truth.std)
    assert truth.mean[:2].min() > 0.1 and truth.mean[2:].abs().max() == 0  # rule concepts only
    assert result.check1_f == 0 and result.check1_h.abs().max() == 0
    assert result.check2.abs().max() == 0  # h reads every concept back exactly, permuted or not
    rep = report(plan, truth, torch.tensor([0.4, 0.3, 0.2, 0.1]), "gradcam", {"bits": result})
    g = rep["generators"]["bits"]
    assert g["spearman_true"] == pytest.approx(1.0) and g["check2"]["max_abs_other"] == 0
    assert g["ranking"][:2] == rep["true"]["ranking"][:2]
    assert len(g["importance"]["red_cube"]["values"]) == 3
    json.dumps(rep)  # JSON-able
    short = summary({"f": rep}, {"red_cube": 0.9, "blue_sphere": 0.7, "yellow_object": None})
    assert short["h_test_auroc_mean"] == pytest.approx(0.8)  # undefined AUROCs are left out
    assert short["f"]["bits"] == {"trusted": True, "reasons": [], "spearman_true": g["spearman_true"],
                                  "spearman_saliency": g["spearman_saliency"], "check1_f": 0.0, "check1_h": 0.0,
                                  "check1_h_max": 0.0, "check2_max_abs_other": 0.0}


def test_check2_flags_a_generator_that_moves_another_concept(task) -> None:
    gen = torch.Generator().manual_seed(2)
    c = torch.rand(30, 4, generator=gen) < 0.5
    plan = Plan.draw(task.names, c, c[:, 0].long(), ["red_cube"], 2, seed=0)

    def leaky(a: int) -> torch.Tensor:  # permuting red_cube also switches yellow_object on everywhere
        out = [plan.targets(a, p) for p in range(2)]
        for t in out:
            t[:, 3] = True
        return torch.stack([bits_images(t) for t in out])

    result = evaluate_generator({"f": (BitsReader(4, torch.tensor([False, True] * 8)), 8)}, (BitsReader(4), 8),
                                bits_images(c), plan, bits_images(c), leaky)["f"]
    rep = report(plan, true_importance(task, plan), torch.zeros(4), "gradcam", {"leaky": result})
    assert rep["generators"]["leaky"]["check2"]["matrix"]["red_cube"]["yellow_object"] == pytest.approx(0.5)
    assert rep["generators"]["leaky"]["check2"]["max_abs_other"] == pytest.approx(0.5)
    assert rep["generators"]["leaky"]["check2"]["own"]["red_cube"] == 0


def test_ranking_is_by_decreasing_score() -> None:
    assert ranking(["a", "b", "c"], torch.tensor([0.1, 0.3, 0.2])) == ["b", "c", "a"]


def test_concept_classifier_is_seeded_and_has_one_logit_per_concept(task, scenes) -> None:
    arrays, records = scenes["train"]
    images, c = torch.from_numpy(arrays["images"]), concept_matrix(task, records)
    cfg = TrainConfig(epochs=1, batch_size=6, lr=1e-3)
    h1 = train_concept_classifier(images, c, "resnet-small", cfg, seed=0)
    h2 = train_concept_classifier(images, c, "resnet-small", cfg, seed=0)
    assert not h1.training and h1.num_classes == 4
    h3 = train_concept_classifier(images, c, "resnet-small", cfg, seed=1)
    x = images[:3].permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        torch.testing.assert_close(h1(x), h2(x), rtol=0, atol=0)
        assert not torch.equal(h1(x), h3(x))


@pytest.mark.parametrize("arch", ["resnet-small", "vit-tiny"])
def test_saliency_scores_are_mass_fractions_on_present_concepts(task, scenes, world, arch: str) -> None:
    arrays, records = scenes["test"]
    torch.manual_seed(0)
    f = build_model(arch, 2, world.resolution).eval()
    c = concept_matrix(task, records)
    carriers = object_concepts(task, records, world.max_objects)
    scores = saliency_scores(f, world.resolution, torch.from_numpy(arrays["images"]),
                             torch.from_numpy(arrays["instance"]).long(), carriers, c, "gradcam", batch_size=5)
    assert scores.shape == (4,)
    present = c.any(0)
    assert ((scores[present] >= 0) & (scores[present] <= 1)).all()
    assert scores[~present].isnan().all()
