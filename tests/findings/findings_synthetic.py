"""A synthetic results table in the evaluate stage's schema (two models, every metric kind) and a depict.json,
with values chosen so that each finding has a known verdict (EXPECTED), and edits that flip each one (FLIPS)."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml
from helpers import ROOT

from salbench.results import COLUMNS

MODELS = {"resnet-small": "cnn", "vit-tiny": "vit"}
TASK = "unique-query"
CONTROLS = ("random", "edge", "gt_mask", "gt_blur")
POOLINGS = ("sum_abs", "sum_pos", "max_norm", "l1", "l2", "l2_sq")
SIMILARITIES = ("spearman_abs", "spearman", "ssim", "hog")


def real_methods(family: str) -> list[str]:
    """params.yaml attribute.methods without the layer-study entries (name@k) and the controls; an entry only on
    the families it lists."""
    methods = yaml.safe_load((ROOT / "params.yaml").read_text())["attribute"]["methods"]
    return [m for m, spec in methods.items() if "@" not in m and m not in CONTROLS
            and family in (spec or {}).get("families", [family])]


# Relevance mass accuracy (pooling=sum_abs) per method: the CNN's IG below G×I as in issue 13 (0.05 vs 0.28).
MASS = {"lrp": 0.62, "integrated_gradients": 0.05, "gradient_x_input": 0.28, "gradient": 0.30, "smoothgrad": 0.35,
        "vargrad": 0.33, "guided_backprop": 0.45, "deconvolution": 0.15, "gradcam": 0.50, "gradcam_pp": 0.48,
        "guided_gradcam": 0.55, "normgrad": 0.52, "normgrad_selective": 0.58, "linear_approx": 0.27,
        "normgrad_multi": 0.54, "attnlrp": 0.60, "random": 0.12, "edge": 0.40, "gt_mask": 1.0, "gt_blur": 0.85}
VIT_MASS = {**MASS, "integrated_gradients": 0.40, "gradient_x_input": 0.25}
SANITY = ("gradient", "guided_backprop", "gradcam", "guided_gradcam", "normgrad")
CASCADE_FINAL = {"gradient": 0.10, "gradcam": 0.05, "guided_backprop": 0.75, "guided_gradcam": 0.70, "normgrad": 0.20,
                 "random": 0.0, "edge": 1.0}
DATA_RAND = {"gradient": 0.15, "gradcam": 0.10, "guided_backprop": 0.65, "guided_gradcam": 0.60, "normgrad": 0.30,
             "random": 0.0, "edge": 1.0}
COSE_ALL = {"resnet-small": {"gradient": 0.45, "guided_backprop": 0.50, "gradcam": 0.70, "guided_gradcam": 0.55,
                             "normgrad": 0.52, "random": 0.20, "edge": 0.60},
            "vit-tiny": {"gradient": 0.35, "guided_backprop": 0.40, "gradcam": 0.68, "guided_gradcam": 0.45,
                         "normgrad": 0.50, "random": 0.20, "edge": 0.60}}
CLASS_SENS = {"gradient": 0.60, "guided_backprop": 0.85, "gradcam": 0.20, "guided_gradcam": 0.55, "normgrad": 0.80,
              "normgrad_selective": 0.40, "random": 0.0, "edge": 1.0}
LAYERS = {"mass_accuracy": {"gradcam": (0.15, 0.25, 0.40, 0.50), "normgrad": (0.45, 0.47, 0.50, 0.52)},
          "pointing_game": {"gradcam": (0.20, 0.40, 0.60, 0.80), "normgrad": (0.70, 0.72, 0.75, 0.78)}}
LAYER_NAMES = {"cnn": ("layer1", "layer2", "layer3", "layer4"),
               "vit": ("blocks.0.norm1", "blocks.1.norm1", "blocks.2.norm1", "blocks.3.norm1")}
BLOCKS = {"cnn": ("fc", "layer4", "layer3", "layer2", "layer1", "stem"),
          "vit": ("head", "blocks.3", "blocks.2", "blocks.1", "blocks.0", "patch_embed")}


# VQA (contract: mass/rank accuracy per gt=<kind>,pooling=<p>; question_sensitivity): task -> GT kind -> method -> mass
# accuracy. Simple single_object, complex unique and union hold the ordering; simple and complex all_objects break it
# (IG above LRP); complex unique_first_nonempty leaves LRP vs IG within the CIs (undecided).
VQA_MODELS = ("film-small", "rn-small")
VQA_ORDER = ("lrp", "integrated_gradients", "gradient_x_input")
VQA_MASS = {"vqa-simple": {"single_object": (0.70, 0.50, 0.30), "all_objects": (0.80, 0.90, 0.85)},
            "vqa-complex": {"unique": (0.60, 0.40, 0.20), "unique_first_nonempty": (0.55, 0.53, 0.30),
                            "union": (0.50, 0.35, 0.20), "all_objects": (0.30, 0.60, 0.50)}}
# question sensitivity: random maps drawn per question (about 0), edge identical for both questions (1); the bar is
# (0 + 1) / 2: LRP, IG and G×I (CI up to 0.49) lie below it, gradient above it
QUESTION_SENS = {"lrp": 0.20, "integrated_gradients": 0.40, "gradient_x_input": 0.45, "gradient": 0.60,
                 "random": 0.0, "edge": 1.0}


def vqa_rows(add: Callable[..., None]) -> None:
    """The VQA models' rows (family cnn, as the contract says) through ``add(task, model, family, method, ...)``."""
    for task, gts in VQA_MASS.items():
        for model in VQA_MODELS:
            a = functools.partial(add, task, model, "cnn")
            a("", "accuracy", "", "value", 0.9, 0.02, 500)
            a("", "accuracy", "family=query_color", "value", 0.85, 0.03, 200)  # per question family
            for gt, means in gts.items():
                for m, mass in zip(VQA_ORDER + ("random",), means + (0.1,)):
                    for k, p in enumerate(POOLINGS):
                        for metric in ("mass_accuracy", "rank_accuracy"):
                            a(m, metric, f"gt={gt},pooling={p}", "value", mass + 0.01 * k, 0.02, 150)
            for m, v in QUESTION_SENS.items():
                a(m, "question_sensitivity", "", "value", v, {0.0: 0.02, 1.0: 0.0}.get(v, 0.04), 120)


def synthetic_table() -> pd.DataFrame:
    rows: list[dict[str, Any]] = []

    def add_to(task: str, model: str, family: str, method: str, metric: str, variant: str, statistic: str,
               mean: float, half: float, n: int, step: float = math.nan, step_label: str = "") -> None:
        role = "" if not method else "control" if method in CONTROLS else "method"
        lo, hi = (mean, mean) if method == "gt_mask" and metric != "cose" else (mean - half, mean + half)
        rows.append(dict(task=task, model=model, family=family, method=method, role=role, metric=metric,
                         variant=variant, statistic=statistic, step=step, step_label=step_label, mean=mean,
                         ci_low=lo, ci_high=hi, n=n, n_undefined=0))

    def add(model: str, *args: Any, **kwargs: Any) -> None:
        add_to(TASK, model, MODELS[model], *args, **kwargs)

    for model, family in MODELS.items():
        methods = real_methods(family)
        mass = VIT_MASS if family == "vit" else MASS
        add(model, "", "accuracy", "", "value", 0.95, 0.0, 250)
        for m in methods + list(CONTROLS):
            for k, p in enumerate(POOLINGS):
                add(model, m, "mass_accuracy", f"pooling={p}", "value", min(1.0, mass[m] + 0.01 * k), 0.02, 230)
                add(model, m, "rank_accuracy", f"pooling={p}", "value", min(1.0, mass[m] * 0.9 + 0.01 * k), 0.02, 230)
            add(model, m, "pointing_game", "", "value", min(1.0, 0.3 + 0.6 * mass[m]), 0.05, 230)
            aopc = 0.5 if m == "edge" else 0.1 + 0.5 * mass[m]
            add(model, m, "aopc", "order=morf", "value", aopc, 0.02, 128)
            add(model, m, "aopc", "order=lerf", "value", 0.3 - 0.2 * mass[m], 0.02, 128)
            for order, sign in (("morf", -1), ("lerf", 1)):
                for s in range(11):
                    add(model, m, "perturbation_curve", f"order={order}", "score",
                        0.9 + sign * 0.05 * s * mass[m] - 0.02 * s, 0.03, 128, step=s / 10)
            add(model, m, "smooth_mprt", "", "value", 0.3 if m != "edge" else 1.0, 0.05, 32)
            add(model, m, "efficient_mprt", "", "value", 1.2 if m != "edge" else 1.0, 0.05, 32)
        for m in SANITY + ("random", "edge"):
            final = CASCADE_FINAL[m]
            for b, block in enumerate(BLOCKS[family], start=1):
                frac = b / len(BLOCKS[family])
                for sim in SIMILARITIES:
                    add(model, m, "cascading_randomization", "", sim, 1 - frac * (1 - final), 0.05, 32, b, block)
                    add(model, m, "independent_randomization", "", sim, 0.5 + 0.5 * final, 0.05, 32, b, block)
            for sim in SIMILARITIES:
                add(model, m, "data_randomization", "", sim, DATA_RAND[m], 0.04, 64)
            for split, shift in (("geometric", 0.08), ("photometric", -0.08), ("model_change", 0.0), ("all", 0.0)):
                c = COSE_ALL[model][m] + shift
                add(model, m, "cose", f"split={split}", "cose", c, 0.03, 64)
                add(model, m, "cose", f"split={split}", "C", min(1.0, c + 0.2), 0.03, 64)
                add(model, m, "cose", f"split={split}", "S", c * c / min(1.0, c + 0.2), 0.03, 64)
        for m in SANITY + ("normgrad_selective", "random", "edge"):
            add(model, m, "class_sensitivity", "", "value", CLASS_SENS[m], 0.04, 64)
        for m in ("gradient", "gradcam", "normgrad"):
            for sal, delta in (("plain", 0.0), ("meta", -0.2)):
                add(model, m, "class_sensitivity", f"saliency={sal}", "value", CLASS_SENS[m] + delta, 0.04, 64)
                add(model, m, "mass_accuracy", f"pooling=l1,saliency={sal}", "value", mass[m] + 0.03, 0.03, 64)
                add(model, m, "pointing_game", f"saliency={sal}", "value", 0.3 + 0.6 * mass[m], 0.05, 64)
        for metric, variant in (("mass_accuracy", "layer_study=1,pooling=l1"), ("pointing_game", "layer_study=1")):
            for group, values in LAYERS[metric].items():
                for step, (v, name) in enumerate(zip(values, LAYER_NAMES[family]), start=1):
                    add(model, group, metric, variant, "value", v, 0.03, 230, step, name)
    vqa_rows(add_to)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def synthetic_depict() -> dict[str, Any]:
    """depict.json with the permutation stage's keys plus the check gates for resnet-small only (vit-tiny: unknown)."""
    def gen(rho: float | None, **gate: Any) -> dict[str, Any]:
        return {"spearman_true": rho, "spearman_saliency": 0.6, "check1_f": 0.02, "check1_h": 0.01,
                "check2_max_abs_other": 0.03, **gate}

    return {"h_test_auroc_mean": 0.93,
            "resnet-small": {"renderer": gen(0.948683, trusted=True, reasons=[]),
                             "diffusion": gen(-0.2, trusted=False, reasons=["check 1: h's AUROC drops 0.45 on "
                                                                             "generated images"]),
                             "agreement": {"renderer_vs_diffusion": 0.1}},
            "vit-tiny": {"renderer": gen(0.948683), "diffusion": gen(0.1), "agreement": {"renderer_vs_diffusion": 0.2}}}


EXPECTED = {
    "clevr_xai_gt_vs_perturbation": "reproduced",
    "clevr_xai_ordering_cnn": "not_reproduced",
    "clevr_xai_ordering_vit": "reproduced",
    "clevr_xai_vqa_simple_single_object": "reproduced",
    "clevr_xai_vqa_simple_all_objects": "not_reproduced",
    "clevr_xai_vqa_complex_unique": "reproduced",
    "clevr_xai_vqa_complex_unique_first_nonempty": "inconclusive",   # LRP vs IG: CIs overlap
    "clevr_xai_vqa_complex_union": "reproduced",
    "clevr_xai_vqa_complex_all_objects": "not_reproduced",
    "cose_gradcam_best": "reproduced",
    "cose_photometric_harder": "reproduced",
    "cose_vit_above_cnn": "not_reproduced",
    "depict_recovers_ranking": "inconclusive",   # vit-tiny's diffusion (trust unknown) fails, the rest hold
    "normgrad_class_sensitivity_gradcam": "reproduced",
    "normgrad_class_sensitivity_selective": "reproduced",
    "normgrad_layers": "reproduced",
    "normgrad_meta_saliency": "reproduced",
    "sanity_cascading": "reproduced",
    "sanity_data": "reproduced",
    "vqa_question_sensitivity": "reproduced",
}


def set_mean(df: pd.DataFrame, value: float | Callable[[pd.Series], pd.Series], **where: Any) -> pd.DataFrame:
    """A copy with the rows matching ``where`` (column=value; steps compared as floats) moved to a new mean, their
    CI moved with it."""
    df = df.copy()
    mask = pd.Series(True, index=df.index)
    for col, v in where.items():
        mask &= df[col] == v
    assert mask.any(), f"no rows match {where}"
    new = value(df.loc[mask]) if callable(value) else value
    shift = new - df.loc[mask, "mean"]
    for col in ("mean", "ci_low", "ci_high"):
        df.loc[mask, col] = df.loc[mask, col] + shift
    return df


Edit = Callable[[pd.DataFrame, dict], tuple[pd.DataFrame, dict]]


def _table(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Edit:
    return lambda df, depict: (edit(df), depict)


def _depict(edit: Callable[[dict], None]) -> Edit:
    def apply(df: pd.DataFrame, depict: dict) -> tuple[pd.DataFrame, dict]:
        import copy
        d = copy.deepcopy(depict)
        edit(d)
        return df, d
    return apply


def _vqa_gt(task: str, gt: str, **means: float) -> Edit:
    """Move the mass and rank accuracy rows of ``task`` and GT kind ``gt`` of each named method to its new mean (every
    pooling, every model)."""
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        for method, mean in means.items():
            for v in (v for v in set(df["variant"]) if v.startswith(f"gt={gt},")):
                df = set_mean(df, mean, task=task, method=method, variant=v)
        return df
    return _table(edit)


def _last_cascade(df: pd.DataFrame, method: str, value: float) -> pd.DataFrame:
    return set_mean(df, value, method=method, metric="cascading_randomization", statistic="spearman_abs", step=6.0)


# finding id -> (the edit, the verdict after it): each flips its finding's verdict.
FLIPS: dict[str, tuple[Edit, str]] = {
    "clevr_xai_gt_vs_perturbation": (_table(lambda df: set_mean(
        df, lambda r: 0.7 - r["mean"], metric="aopc", variant="order=morf")), "not_reproduced"),
    "clevr_xai_ordering_cnn": (_table(lambda df: set_mean(
        df, lambda r: r["mean"] + 0.40, family="cnn", method="integrated_gradients", role="method")), "reproduced"),
    "clevr_xai_ordering_vit": (_table(lambda df: set_mean(
        df, lambda r: r["mean"] - 0.30, family="vit", method="integrated_gradients", role="method")),
        "not_reproduced"),
    "cose_gradcam_best": (_table(lambda df: set_mean(df, 0.30, method="gradcam", metric="cose", variant="split=all",
                                                     statistic="cose")), "not_reproduced"),
    "cose_photometric_harder": (_table(lambda df: set_mean(
        df, lambda r: r["mean"] + 0.30, metric="cose", variant="split=photometric")), "not_reproduced"),
    "cose_vit_above_cnn": (_table(lambda df: set_mean(
        df, lambda r: r["mean"] + 0.20, family="vit", metric="cose")), "reproduced"),
    "depict_recovers_ranking": (_depict(lambda d: d["vit-tiny"]["diffusion"].update(trusted=False, reasons=["x"])),
                                "reproduced"),
    "normgrad_class_sensitivity_gradcam": (_table(lambda df: set_mean(
        df, 0.90, method="gradcam", metric="class_sensitivity", variant="")), "not_reproduced"),
    "normgrad_class_sensitivity_selective": (_table(lambda df: set_mean(
        df, 0.95, method="normgrad_selective", metric="class_sensitivity", variant="")), "not_reproduced"),
    "normgrad_layers": (_table(lambda df: set_mean(
        df, 0.90, method="gradcam", metric="pointing_game", variant="layer_study=1", step=1.0)), "not_reproduced"),
    "normgrad_meta_saliency": (_table(lambda df: set_mean(
        df, lambda r: r["mean"] + 0.40, metric="class_sensitivity", variant="saliency=meta")), "not_reproduced"),
    "sanity_cascading": (_table(lambda df: _last_cascade(df, "gradcam", 0.8)), "not_reproduced"),
    "sanity_data": (_table(lambda df: set_mean(
        df, 0.2, method="guided_backprop", metric="data_randomization", statistic="spearman_abs")), "not_reproduced"),
    "clevr_xai_vqa_simple_single_object": (_vqa_gt("vqa-simple", "single_object", integrated_gradients=0.8),
                                           "not_reproduced"),
    "clevr_xai_vqa_simple_all_objects": (_vqa_gt("vqa-simple", "all_objects", lrp=0.9, integrated_gradients=0.7,
                                                 gradient_x_input=0.5), "reproduced"),
    "clevr_xai_vqa_complex_unique": (_vqa_gt("vqa-complex", "unique", integrated_gradients=0.7), "not_reproduced"),
    "clevr_xai_vqa_complex_unique_first_nonempty": (_vqa_gt("vqa-complex", "unique_first_nonempty", lrp=0.75),
                                                    "reproduced"),
    "clevr_xai_vqa_complex_union": (_vqa_gt("vqa-complex", "union", gradient_x_input=0.6), "not_reproduced"),
    "clevr_xai_vqa_complex_all_objects": (_vqa_gt("vqa-complex", "all_objects", lrp=0.8, integrated_gradients=0.6,
                                                  gradient_x_input=0.4), "reproduced"),
    "vqa_question_sensitivity": (_table(lambda df: set_mean(df, lambda r: r["mean"] + 0.3, role="method",
                                                            metric="question_sensitivity")), "not_reproduced"),
}


def write_data(root: Path, table: pd.DataFrame, depict: dict[str, Any]) -> None:
    """data/results/<task>/<model>.csv per model and data/metrics/depict.json under ``root``."""
    import json
    for (task, model), part in table.groupby(["task", "model"]):
        path = root / "data/results" / task / f"{model}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        part.to_csv(path, index=False)
    (root / "data/metrics").mkdir(parents=True, exist_ok=True)
    (root / "data/metrics/depict.json").write_text(json.dumps(depict))
