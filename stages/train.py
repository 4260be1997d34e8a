"""DVC stage `train@<task>-<model>`: train a classifier, its checkpoints, random-label model and random-init twin.

`train_vqa@<task>-<model>` (a model from train.vqa_models on a VQA task) trains a question-conditioned model on
the task's question shards instead, with the same outputs and answer accuracy per question family; it fails
below train.vqa_min_test_accuracy (task -> number for the overall accuracy, or {all | <family>: number}).

Writes data/models/<task>/<model>/{final, checkpoints/epoch_K, random_labels, random_init}/ (checkpoints:
model.safetensors + manifest.json), metrics.json and plots/{train,random_labels}/ (dvclive per-epoch curves
for `dvc plots`).
Fails after writing if the test accuracy is below train.min_test_accuracy (a number, or task -> number).
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("train")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from dvclive import Live

from salbench.device import resolve_device
from salbench.errors import SalbenchError, cli
from salbench.io import atomic_dir, provenance, save_shard, write_json
from salbench.models import (
    Classifier,
    Questions,
    QuestionModel,
    TrainConfig,
    accuracy,
    answer_accuracy,
    as_question_spec,
    as_spec,
    below_gates,
    build_model,
    build_question_model,
    fit,
    fit_questions,
    random_labels,
    read_manifest,
    save_checkpoint,
    set_deterministic,
)
from salbench.models.external import build_external, package
from salbench.params import ParamsError, check_keys, load_params, section
from salbench.render import SPLITS, load_manifest, load_split
from salbench.vqa.dataset import load_questions, load_vocabulary

STAGE_KEYS = ("seed", "device", "tasks", "models", "min_test_accuracy", "vqa_tasks", "vqa_models",
              "vqa_min_test_accuracy")


@contextmanager
def live(path: Path) -> Iterator[Live]:
    """A dvclive logger writing ``path/plots/metrics/<name>.tsv`` (columns step, <name>), the curves dvc.yaml declares.

    Only files: no DVC experiment, no dvc.yaml edits, no report, no timestamps, so reruns are byte-identical;
    dvclive's summary ``path/metrics.json`` is removed on exit (the stage's own metrics.json holds the results).
    """
    with Live(str(path), save_dvc_exp=False, dvcyaml=None, report=None) as logger:
        yield logger
    (path / "metrics.json").unlink(missing_ok=True)


def split_config(p: Mapping[str, Any], where: str) -> tuple[dict[str, Any], TrainConfig, TrainConfig, int]:
    """(model spec, training config, random-label config, random-label subset size) of one model entry."""
    p = dict(p)
    spec = as_spec(p.pop("model", None) or {})
    rl = dict(p.pop("random_labels", None) or {})
    n_rl = int(rl.pop("n_train", 0))
    return spec, TrainConfig.from_params(p, where), TrainConfig.from_params(rl, f"{where}.random_labels"), n_rl


def package_external(args: argparse.Namespace, entry: Mapping[str, Any], task: Mapping[str, Any],
                     x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], seed: int, device: torch.device,
                     min_acc: float) -> None:
    """`source: checkpoint` (salbench.models.external): final = the given model, random_init = its
    re-initialised twin, random_labels = that twin trained on permuted labels (train split, or the test split
    when the folder has no train images), checkpoints/ empty; the same files as a trained model."""
    classes, where = list(task["classes"]), f"train.models.{args.model}"
    if int(entry["input_size"]) != int(task["resolution"]):
        raise ParamsError(f"{where}.input_size is {entry['input_size']} but task {args.task} has "
                          f"{task['resolution']} px images; import it with folders.{args.task}.image_size: "
                          f"{entry['input_size']}")
    if task.get("interpolation") and task["interpolation"] != entry.get("interpolation", "bilinear"):
        raise ParamsError(f"{where}.interpolation is {entry.get('interpolation', 'bilinear')!r} but task "
                          f"{args.task} was resized with {task['interpolation']!r}; make them the same")
    rl = dict(entry.get("random_labels") or {})
    n_rl, rl_cfg = int(rl.pop("n_train", 0)), TrainConfig.from_params(rl, f"{where}.random_labels")
    prov = provenance({"model": entry, "task": args.task, "data": task.get("provenance", {}).get("params_hash")}, seed)
    base = {"task": args.task, "classes": classes, "params_hash": prov["params_hash"], "seed": seed,
            "versions": prov["versions"], "params": prov["params"]}
    splits = [s for s in SPLITS if len(y[s])]

    def acc(model: Classifier, *names: str) -> dict[str, float]:
        return {s: accuracy(model, x[s], y[s], rl_cfg.eval_batch_size) for s in names}

    out = Path(args.out or f"data/models/{args.task}/{args.model}")
    with atomic_dir(out) as tmp:
        t0 = time.perf_counter()
        model = build_external(entry, len(classes)).to(device)
        final_acc = acc(model, *splits)
        package(entry, model, tmp / "final", {**base, "kind": "final", "epoch": 0, "accuracy": final_acc})
        (tmp / "checkpoints").mkdir()
        set_deterministic(seed, device)
        twin = build_external(entry, len(classes), weights=False).to(device)
        package(entry, twin, tmp / "random_init", {**base, "kind": "random_init", "epoch": 0,
                                                   "accuracy": acc(twin, "test")})
        rl_split = "train" if len(y["train"]) else "test"
        set_deterministic(seed, device)
        rl_model = build_external(entry, len(classes), weights=False).to(device)
        idx, perm = random_labels(y[rl_split], n_rl, seed + 1)
        with live(tmp / "plots" / "random_labels") as rl_curves:
            def on_rl_epoch(epoch: int, stats: dict[str, float], m: Classifier) -> None:
                rl_curves.step = epoch
                for k in ("loss", "fit_accuracy"):
                    if k in stats:
                        rl_curves.log_metric(k, stats[k])

            rl_history = fit(rl_model, x[rl_split][idx], perm, rl_cfg, seed, on_rl_epoch)
        rl_acc = {"train_permuted": accuracy(rl_model, x[rl_split][idx], perm, rl_cfg.eval_batch_size),
                  **acc(rl_model, "test")}
        package(entry, rl_model, tmp / "random_labels", {**base, "kind": "random_labels", "epoch": len(rl_history),
                                                         "accuracy": rl_acc, "n_train": len(idx), "split": rl_split})
        save_shard(tmp / "random_labels" / "labels.safetensors",
                   {"index": idx.numpy(), "label": perm.numpy(), "true_label": y[rl_split][idx].numpy()})
        (tmp / "plots" / "train").mkdir(parents=True)
        summary = {
            "source": "checkpoint", "test_accuracy": final_acc["test"], "min_test_accuracy": min_acc,
            "passed": final_acc["test"] >= min_acc, **{f"{s}_accuracy": final_acc[s] for s in splits},
            "random_labels_split": rl_split, "random_labels_train_accuracy": rl_acc["train_permuted"],
            "random_labels_test_accuracy": rl_acc["test"], "random_labels_epochs": len(rl_history),
            "random_labels_n_train": len(idx), "seconds_total": round(time.perf_counter() - t0, 1),
        }
        write_json(tmp / "metrics.json", summary)
        print(f"[{args.model}] packaged from a checkpoint: {summary}")
    if not summary["passed"]:
        raise SalbenchError(f"train@{args.task}-{args.model}: the given model's test accuracy {final_acc['test']:.3f} "
                            f"is below train.min_test_accuracy={min_acc}: check its classes order "
                            f"(folders.{args.task}.classes) and preprocessing (input_size, mean, std)")


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", required=True, help="task name (data/render/<task>)")
    ap.add_argument("--model", required=True, help="model name from params.yaml train.models")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default=None, help="default: data/render/<task>")
    ap.add_argument("--out", default=None, help="default: data/models/<task>/<model>")
    args = ap.parse_args()

    p = section(load_params(args.params), "train")
    check_keys(p, STAGE_KEYS, "train")
    if args.model in (p.get("vqa_models") or {}):
        return train_vqa(args, p)
    models = p.get("models") or {}
    if args.model not in models:
        raise ParamsError(f"unknown model {args.model!r}; train.models has {sorted(models)}")
    entry = models[args.model] or {}
    external = entry.get("source") == "checkpoint"  # packaged from a local checkpoint, not trained
    if not external:
        spec, cfg, rl_cfg, n_rl = split_config(entry, f"train.models.{args.model}")
    seed, device = int(p.get("seed", 0)), resolve_device(str(p.get("device", "cpu")))
    gate = p.get("min_test_accuracy", 0.0)
    if isinstance(gate, Mapping) and args.task not in gate:
        raise ParamsError(f"train.min_test_accuracy has no entry for task {args.task!r} (it has {sorted(gate)}); "
                          "add one")
    min_acc = float(gate[args.task] if isinstance(gate, Mapping) else gate)

    data_dir = Path(args.data or f"data/render/{args.task}")
    if (data_dir / "vqa.json").exists():
        raise ParamsError(f"task {args.task!r} is a VQA task (questions per image): train it with a question model "
                          f"from train.vqa_models ({sorted(p.get('vqa_models') or {})}), not {args.model!r}")
    task = load_manifest(data_dir)
    classes, size = list(task["classes"]), int(task["resolution"])
    arrays = {s: load_split(data_dir, s) for s in SPLITS}
    x = {s: torch.from_numpy(a["images"]) for s, a in arrays.items()}
    y = {s: torch.from_numpy(a["label"]) for s, a in arrays.items()}
    if external:
        return package_external(args, entry, task, x, y, seed, device, min_acc)
    if spec.get("checkpoint") and (saved := read_manifest(spec["checkpoint"])["classes"]) != classes:
        raise ParamsError(f"checkpoint {spec['checkpoint']} was trained on classes {saved}, but task {args.task} "
                          f"has {classes}; use a checkpoint of this task")

    prov = provenance({"train": {k: p.get(k) for k in ("seed", "device")}, "model": models[args.model],
                       "task": args.task, "data": task.get("provenance", {}).get("params_hash")}, seed)
    base = {"task": args.task, "classes": classes, "params_hash": prov["params_hash"], "seed": seed,
            "versions": prov["versions"], "params": prov["params"]}

    def acc(model: Classifier, *splits: str) -> dict[str, float]:
        return {s: accuracy(model, x[s], y[s], cfg.eval_batch_size) for s in splits}

    out = Path(args.out or f"data/models/{args.task}/{args.model}")
    with atomic_dir(out) as tmp:
        t0 = time.perf_counter()

        set_deterministic(seed, device)
        model = build_model(spec, len(classes), size).to(device)
        set_deterministic(seed, device)  # the twin draws the same init as a from-scratch model
        twin = build_model({k: v for k, v in spec.items() if k not in ("pretrained", "pretrained_file", "checkpoint")},
                           len(classes), size).to(device)
        twin_acc = acc(twin, "test")
        save_checkpoint(tmp / "random_init", twin, {**base, "kind": "random_init", "epoch": 0, "accuracy": twin_acc})

        def on_epoch(epoch: int, stats: dict[str, float], m: Classifier) -> None:  # `curves`: the logger below
            stats["val_accuracy"] = acc(m, "val")["val"]
            curves.step = epoch
            for k in ("loss", "train_accuracy", "val_accuracy"):
                curves.log_metric(k, stats[k])
            print(f"[{args.model}] epoch {epoch}: loss {stats['loss']:.3f} train {stats['train_accuracy']:.3f} "
                  f"val {stats['val_accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if epoch in cfg.checkpoint_epochs:
                save_checkpoint(tmp / "checkpoints" / f"epoch_{epoch}", m,
                                {**base, "kind": "intermediate", "epoch": epoch, "accuracy": acc(m, "val", "test")})

        with live(tmp / "plots" / "train") as curves:
            history = fit(model, x["train"], y["train"], cfg, seed, on_epoch)
        final_acc = acc(model, *SPLITS)
        save_checkpoint(tmp / "final", model, {**base, "kind": "final", "epoch": len(history), "accuracy": final_acc})
        t_model = time.perf_counter() - t0

        # Data randomisation: the same architecture and init (pretrained weights kept, never a checkpoint that
        # already learnt the true labels), trained on permuted labels of a training subset.
        set_deterministic(seed, device)
        rl_model = build_model({k: v for k, v in spec.items() if k != "checkpoint"}, len(classes), size).to(device)
        idx, perm = random_labels(y["train"], n_rl, seed + 1)

        def on_rl_epoch(epoch: int, stats: dict[str, float], m: Classifier) -> None:
            rl_curves.step = epoch
            for k in ("loss", "fit_accuracy"):
                if k in stats:
                    rl_curves.log_metric(k, stats[k])

        rl_images = x["train"][idx]
        with live(tmp / "plots" / "random_labels") as rl_curves:
            rl_history = fit(rl_model, rl_images, perm, rl_cfg, seed, on_rl_epoch)
        rl_acc = {"train_permuted": accuracy(rl_model, rl_images, perm, cfg.eval_batch_size), **acc(rl_model, "test")}
        save_checkpoint(tmp / "random_labels", rl_model,
                        {**base, "kind": "random_labels", "epoch": len(rl_history), "accuracy": rl_acc,
                         "n_train": len(idx)})
        save_shard(tmp / "random_labels" / "labels.safetensors",
                   {"index": idx.numpy(), "label": perm.numpy(), "true_label": y["train"][idx].numpy()})

        summary = {
            "test_accuracy": final_acc["test"], "val_accuracy": final_acc["val"], "train_accuracy": final_acc["train"],
            "epochs": len(history), "min_test_accuracy": min_acc, "passed": final_acc["test"] >= min_acc,
            "random_init_test_accuracy": twin_acc["test"],
            "random_labels_train_accuracy": rl_acc["train_permuted"], "random_labels_test_accuracy": rl_acc["test"],
            "random_labels_epochs": len(rl_history), "random_labels_n_train": len(idx),
            "seconds_model": round(t_model, 1), "seconds_total": round(time.perf_counter() - t0, 1),
        }
        write_json(tmp / "metrics.json", summary)
        print(f"[{args.model}] {summary}")

    if not summary["passed"]:
        raise SalbenchError(f"train@{args.task}-{args.model}: test accuracy {final_acc['test']:.3f} is below "
                            f"train.min_test_accuracy={min_acc}; train longer (train.models.{args.model}.epochs) "
                            "or make the task easier (tasks.<task>)")


def train_vqa(args: argparse.Namespace, p: Mapping[str, Any]) -> None:
    """The VQA path: question model ``args.model`` (train.vqa_models) on the question shards of ``args.task``."""
    where = f"train.vqa_models.{args.model}"
    entry = dict(p["vqa_models"][args.model] or {})
    spec = as_question_spec(entry.pop("model", None) or {}, f"{where}.model")
    rl = {"flip": False, **(entry.pop("random_labels", None) or {})}  # flips default to off here
    n_rl = int(rl.pop("n_train", 0))
    group = entry.pop("group_questions", 1)
    if not isinstance(group, int) or isinstance(group, bool) or group < 1:
        raise ParamsError(f"{where}.group_questions must be an integer >= 1 (1 = questions sampled independently), "
                          f"got {group!r}")
    cfg = TrainConfig.from_params({"flip": False, **entry}, where)
    rl_cfg = TrainConfig.from_params(rl, f"{where}.random_labels")
    if cfg.flip or rl_cfg.flip:
        raise ParamsError(f"{where}: a horizontal flip swaps left and right in the questions; set flip: false "
                          "(or leave it out)")
    data_dir = Path(args.data or f"data/render/{args.task}")
    if not (data_dir / "vqa.json").exists():
        raise ParamsError(f"task {args.task!r} has no questions ({data_dir}/vqa.json): question models in "
                          "train.vqa_models train only on VQA tasks (train.vqa_tasks, e.g. vqa-simple)")
    seed, device = int(p.get("seed", 0)), resolve_device(str(p.get("device", "cpu")))
    gates_by_task = p.get("vqa_min_test_accuracy") or {}
    if args.task not in gates_by_task:
        raise ParamsError(f"train.vqa_min_test_accuracy has no entry for task {args.task!r} (it has "
                          f"{sorted(gates_by_task)}); add one (a number, or {{all | <family>: number}})")
    gates = gates_by_task[args.task]

    task, vocab = load_manifest(data_dir), load_vocabulary(data_dir)
    answers, tokens, families = list(vocab["answers"]), list(vocab["tokens"]), list(vocab["families"])
    unknown = sorted(set(gates) - {"all", *families}) if isinstance(gates, Mapping) else []
    if unknown:
        raise ParamsError(f"train.vqa_min_test_accuracy.{args.task} names {unknown}, not families of the task "
                          f"({families}) nor 'all'")
    size = int(task["resolution"])
    x = {s: torch.from_numpy(load_split(data_dir, s)["images"]) for s in SPLITS}
    q = {}
    for s in SPLITS:
        a = load_questions(data_dir, s)
        q[s] = Questions(*(torch.from_numpy(a[k]) for k in ("image_index", "tokens", "answer", "family")))

    prov = provenance({"train": {k: p.get(k) for k in ("seed", "device")}, "model": p["vqa_models"][args.model],
                       "task": args.task, "data": task.get("provenance", {}).get("params_hash")}, seed)
    base = {"task": args.task, "classes": answers, "tokens": tokens, "families": families,
            "params_hash": prov["params_hash"], "seed": seed, "versions": prov["versions"], "params": prov["params"]}

    def build() -> QuestionModel:
        return build_question_model(spec["arch"], len(answers), len(tokens), size, **spec["kwargs"]).to(device)

    def acc(model: QuestionModel, *splits: str) -> dict[str, dict[str, float]]:
        return {s: answer_accuracy(model, x[s], q[s], families, cfg.eval_batch_size) for s in splits}

    def overall(a: dict[str, dict[str, float]]) -> dict[str, float]:
        return {s: v["all"] for s, v in a.items()}

    out = Path(args.out or f"data/models/{args.task}/{args.model}")
    with atomic_dir(out) as tmp:
        t0 = time.perf_counter()
        set_deterministic(seed, device)
        model = build()
        set_deterministic(seed, device)  # the twin: the same init, never trained
        twin = build()
        twin_acc = acc(twin, "test")
        save_checkpoint(tmp / "random_init", twin, {**base, "kind": "random_init", "epoch": 0,
                                                    "accuracy": overall(twin_acc), "family_accuracy": twin_acc})

        def on_epoch(epoch: int, stats: dict[str, float], m: QuestionModel) -> None:  # `curves`: the logger below
            val = acc(m, "val")["val"]
            stats["val_accuracy"] = val["all"]
            curves.step = epoch
            for k in ("loss", "train_accuracy", "val_accuracy"):
                curves.log_metric(k, stats[k])
            for fam in families:
                if fam in val:
                    curves.log_metric(f"val_accuracy_{fam}", val[fam])
            print(f"[{args.model}] epoch {epoch}: loss {stats['loss']:.3f} train {stats['train_accuracy']:.3f} "
                  f"val {val['all']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if epoch in cfg.checkpoint_epochs:
                a = acc(m, "val", "test")
                save_checkpoint(tmp / "checkpoints" / f"epoch_{epoch}", m,
                                {**base, "kind": "intermediate", "epoch": epoch, "accuracy": overall(a),
                                 "family_accuracy": a})

        with live(tmp / "plots" / "train") as curves:
            history = fit_questions(model, x["train"], q["train"], cfg, seed, on_epoch, group)
        final_acc = acc(model, *SPLITS)
        save_checkpoint(tmp / "final", model, {**base, "kind": "final", "epoch": len(history),
                                               "accuracy": overall(final_acc), "family_accuracy": final_acc})
        t_model = time.perf_counter() - t0

        # Data randomisation: the same architecture and init, trained on permuted answers of a question subset.
        set_deterministic(seed, device)
        rl_model = build()
        idx, perm = random_labels(q["train"].answer, n_rl, seed + 1)
        rl_questions = q["train"].subset(idx, perm)

        def on_rl_epoch(epoch: int, stats: dict[str, float], m: QuestionModel) -> None:
            rl_curves.step = epoch
            for k in ("loss", "fit_accuracy"):
                if k in stats:
                    rl_curves.log_metric(k, stats[k])

        with live(tmp / "plots" / "random_labels") as rl_curves:
            rl_history = fit_questions(rl_model, x["train"], rl_questions, rl_cfg, seed, on_rl_epoch)
        rl_fit = answer_accuracy(rl_model, x["train"], rl_questions, [], cfg.eval_batch_size)["all"]
        rl_acc = {"train_permuted": rl_fit, **overall(acc(rl_model, "test"))}
        save_checkpoint(tmp / "random_labels", rl_model,
                        {**base, "kind": "random_labels", "epoch": len(rl_history), "accuracy": rl_acc,
                         "n_train": len(idx)})
        save_shard(tmp / "random_labels" / "labels.safetensors",
                   {"index": idx.numpy(), "label": perm.numpy(), "true_label": q["train"].answer[idx].numpy()})

        failed = below_gates(final_acc["test"], gates)
        summary = {
            "test_accuracy": final_acc["test"]["all"], "val_accuracy": final_acc["val"]["all"],
            "train_accuracy": final_acc["train"]["all"],
            "test_accuracy_per_family": {k: v for k, v in final_acc["test"].items() if k != "all"},
            "val_accuracy_per_family": {k: v for k, v in final_acc["val"].items() if k != "all"},
            "questions": {s: len(q[s]) for s in SPLITS},
            "epochs": len(history), "min_test_accuracy": gates, "passed": not failed,
            "random_init_test_accuracy": twin_acc["test"]["all"],
            "random_labels_train_accuracy": rl_acc["train_permuted"], "random_labels_test_accuracy": rl_acc["test"],
            "random_labels_epochs": len(rl_history), "random_labels_n_train": len(idx),
            "seconds_model": round(t_model, 1), "seconds_total": round(time.perf_counter() - t0, 1),
        }
        write_json(tmp / "metrics.json", summary)
        print(f"[{args.model}] {summary}")

    if failed:
        below = ", ".join(f"{k} {a:.3f} < {g}" for k, (a, g) in failed.items())
        raise SalbenchError(f"train_vqa@{args.task}-{args.model}: test answer accuracy below "
                            f"train.vqa_min_test_accuracy.{args.task} ({below}); train longer "
                            f"(train.vqa_models.{args.model}.epochs) or lower the gate")


if __name__ == "__main__":
    main()
