"""DVC stage `permutation`: DEPICT concept importance of each classifier through each generator.

Trains the concept classifier h on the rendered training split, then for every model in
concepts.models (checkpoints data/models/<task>/<model>/final) and every generator computes
importance per concept (mean and spread over permutations), its ranking and Spearman correlation with
the rule's true importance and with GradCAM mass, checks 1 and 2, and the generators' agreement.
Writes data/concepts/permutation/ (h checkpoint, full results.json), data/metrics/depict.json
(summary) and data/plots/concepts/permutation/importance.png.
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("permutation")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
from dataclasses import asdict
from pathlib import Path

from salbench.attribution import METHODS
from salbench.concepts import (auroc, evaluate_generator, logits, object_concepts, report, saliency_scores,
                               train_concept_classifier, true_importance)
from salbench.concepts.classifier import classifier_params
from salbench.concepts.dataset import PARAM_KEYS, load_eval_set, load_generated, load_training
from salbench.concepts.depict import Checks, check1_table, json_number, summary
from salbench.concepts.plots import save_importance_figure
from salbench.device import resolve_device, set_threads
from salbench.errors import cli
from salbench.io import atomic_dir, params_hash, provenance, write_json
from salbench.models import load_checkpoint, save_checkpoint, set_deterministic
from salbench.params import check_keys, load_params, section


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/render", help="render stage output root")
    ap.add_argument("--models", default="data/models", help="train stage output root")
    ap.add_argument("--generated", default="data/concepts/generate", help="generate stage output root")
    ap.add_argument("--out", default="data/concepts/permutation")
    ap.add_argument("--metrics", default="data/metrics/depict.json")
    ap.add_argument("--plots", default="data/plots/concepts/permutation")
    args = ap.parse_args()

    p = section(load_params(args.params), "concepts")
    check_keys(p, PARAM_KEYS, "concepts")
    h_spec, h_size, h_cfg = classifier_params(p.get("h") or {})
    checks = Checks.from_params(p.get("checks"))
    seed, device, bs = int(p.get("seed", 0)), resolve_device(p.get("device", "cpu")), int(p.get("batch_size", 250))
    set_deterministic(seed, device)
    set_threads(p.get("threads", 0))
    task_name, method = p.get("task", "presence"), p.get("saliency", "gradcam")
    METHODS.get(method)  # an unknown method fails here, before h is trained
    task_dir = Path(args.data) / task_name
    ev = load_eval_set(task_dir, p.get("split", "test"), int(p.get("n_images", 0)), p.get("concepts"),
                       int(p.get("permutations", 3)), seed)
    plan, names = ev.plan, ev.task.names
    generated = {g: load_generated(Path(args.generated) / g, plan) for g in p.get("generators", ["renderer"])}

    images, concepts, _ = load_training(task_dir, ev.task)
    h = train_concept_classifier(images, concepts, h_spec, h_cfg, seed, device, h_size)
    h_out = logits(h, ev.images, h.input_size, bs).cpu()
    h_auroc = {c: json_number(v) for c, v in zip(names, auroc(h_out.T, plan.concepts.T))}
    h_accuracy = ((h_out > 0) == plan.concepts).double().mean().item()
    truth = true_importance(ev.task, plan)
    carriers = object_concepts(ev.task, ev.records, ev.world.max_objects)

    fs = {m: load_checkpoint(Path(args.models) / task_name / m / "final", device)[0] for m in p.get("models", [])}
    evals = {g: evaluate_generator({m: (f, f.input_size) for m, f in fs.items()}, (h, h.input_size), ev.images, plan,
                                   base, load, bs) for g, (base, load) in generated.items()}
    reports = {}
    for m, f in fs.items():
        sal = saliency_scores(f, f.input_size, ev.images, ev.instance.long(), carriers, plan.concepts, method, bs)
        reports[m] = report(plan, truth, sal, method, {g: e[m] for g, e in evals.items()}, checks)
        print(f"permutation {m}: " + "; ".join(
            f"{g} ranking {r['ranking']} (Spearman with true {r['spearman_true']})"
            + ("" if r["trusted"] else " UNTRUSTED: " + "; ".join(r["reasons"]))
            for g, r in reports[m]["generators"].items()))
    # h does not depend on f: check 1 of h per concept, once per generator
    h_check1 = {g: check1_table(names, next(iter(e.values()))) for g, e in evals.items() if e}
    for g, table in h_check1.items():
        print(f"check 1 of h on {g} (AUROC real/generated): " + ", ".join(
            f"{c} {json_str(v['real'])}/{json_str(v['generated'])}" for c, v in table.items()))

    with atomic_dir(args.out) as tmp, atomic_dir(args.plots) as tmp_plots:
        save_checkpoint(tmp / "h", h, {
            "task": task_name, "classes": names, "accuracy": {"test": h_accuracy}, "params_hash": params_hash(p),
            "seed": seed, "versions": provenance({}, seed)["versions"]})
        write_json(tmp / "results.json", {"models": reports, "h_test_auroc": h_auroc, "h_check1": h_check1,
                                          "checks": asdict(checks),
                                          "provenance": provenance({"concepts": p}, seed)})
        if reports:
            save_importance_figure(tmp_plots / "importance.png", reports)
    write_json(args.metrics, summary(reports, h_auroc))


def json_str(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    main()
