"""The self-contained HTML report: every figure as an embedded PNG with its caption, and the key tables."""
from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..results import parse_variant, variant
from .agreement import ranking_agreement
from .base import FIGURES, Inputs, Run, VqaRun, methods_of
from .depict import caption_note
from .vqa import METRICS as VQA_METRICS
from .vqa import gt_kinds, gt_settings, ordered_runs

KEY_COLUMNS = (  # (metric, variant, statistic, header); columns absent from the table are left out
    ("mass_accuracy", "pooling=l2_sq", "value", "mass acc. (l2²) ↑"),
    ("rank_accuracy", "pooling=max_norm", "value", "rank acc. (max) ↑"),
    ("pointing_game", "", "value", "pointing ↑"),
    ("aopc", "order=morf", "value", "AOPC MoRF ↑"),
    ("aopc", "order=lerf", "value", "AOPC LeRF ↓"),
    ("cose", "split=all", "cose", "COSE ↑"),
    ("class_sensitivity", "", "value", "class sens. ↓"),
    ("data_randomization", "", "spearman_abs", "data rand. ↓"),
)


def png_bytes(fig: Any, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def cell(row: Mapping[str, Any] | None) -> str:
    """"mean [ci_low, ci_high] n=N" of a results row (— when absent or nothing was scored)."""
    if row is None:
        return "—"
    if math.isnan(row["mean"]):
        return f"— n={int(row['n'])}"
    return (f"{row['mean']:.3f} <small>[{row['ci_low']:.3f}, {row['ci_high']:.3f}] "
            f"n={int(row['n'])}</small>")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_table(run: Run, methods: Sequence[str]) -> str:
    """Key scalar metrics per method (rows) of one run, with CIs and counts; controls marked."""
    t = run.table[run.table["step"].isna()]
    columns = [c for c in KEY_COLUMNS if ((t["metric"] == c[0]) & (t["variant"] == c[1])).any()]
    index = {(r["method"], r["metric"], r["variant"], r["statistic"]): r for r in t.to_dict("records")}
    roles = dict(zip(t["method"], t["role"]))
    rows = [[html.escape(m) + (" <small>(control)</small>" if roles.get(m) == "control" else "")]
            + [cell(index.get((m, metric, v, stat))) for metric, v, stat, _ in columns]
            for m in methods if m in roles]
    return table(["method", *(c[3] for c in columns)], rows)


def agreement_table(run: Run) -> str:
    """Spearman correlation between the AOPC ranking of the methods and each GT metric's ranking."""
    rows = ranking_agreement(run.table)
    orders = list(dict.fromkeys(r["aopc"] for r in rows))
    gt = list(dict.fromkeys((r["metric"], r["variant"]) for r in rows))
    index = {(r["aopc"], r["metric"], r["variant"]): r for r in rows}
    body = [[html.escape(f"{m} {v}".strip())] + [_rho(index.get((o, m, v))) for o in orders] for m, v in gt]
    return table(["GT metric", *[f"Spearman vs AOPC {o}" for o in orders]], body)


def _rho(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("spearman") is None:
        return "—"
    return f"{entry['spearman']:+.2f} <small>({entry['n_methods']} methods)</small>"


def depict_table(depict: Mapping[str, Any] | None) -> str:
    rows = []
    for model, rep in (depict or {}).get("models", {}).items():
        for g, r in rep["generators"].items():
            rows.append([html.escape(model), html.escape(g), html.escape(" > ".join(r["ranking"])),
                         html.escape(" > ".join(rep["true"]["ranking"])), _num(r.get("spearman_true")),
                         _num(r.get("spearman_saliency")), _num(r["check1"].get("f")), _num(r["check2"].get("max_abs_other"))])
    return table(["classifier", "generator", "ranking", "true ranking", "Spearman vs true",
                  "Spearman vs saliency", "check 1 (f)", "check 2 (max |other|)"], rows)


def _num(v: Any) -> str:
    return "—" if v is None else f"{v:+.3f}"


def vqa_accuracy(run: VqaRun) -> str:
    """Answer accuracy on all test questions and per question family, with CIs and counts."""
    acc = run.rows("accuracy", None, "value", "")
    overall = [r for r in acc.to_dict("records") if r["variant"] == ""]
    families = [(parse_variant(r["variant"]).get("family"), r) for r in acc.to_dict("records")]
    text = f"answer accuracy {cell(overall[0]) if overall else '—'}"
    per = "; ".join(f"{html.escape(f)} {cell(r)}" for f, r in families if f)
    return f"<p>{text}" + (f"<br>per question family: {per}" if per else "") + "</p>"


def vqa_table(run: VqaRun) -> str:
    """Per method: mass and rank accuracy per GT kind (the figure's poolings), pointing game per GT kind and
    question sensitivity, with CIs and counts."""
    columns = []  # (header, metric, variant)
    for metric in VQA_METRICS:
        gts, pooling = gt_settings(run, metric)
        columns += [(f"{metric.split('_')[0]} acc. {gt} ({pooling}) ↑", metric,
                     variant({"gt": gt, "pooling": pooling})) for gt in gts]
    pointing = {parse_variant(v).get("gt"): v for v in dict.fromkeys(run.rows("pointing_game", None)["variant"])}
    columns += [(f"pointing {gt} ↑", "pointing_game", pointing[gt])
                for gt in gt_kinds(set(pointing) - {None}, run.task)]
    if not run.rows("question_sensitivity").empty:
        columns.append(("question sens. ↓", "question_sensitivity", ""))
    roles = dict(zip(run.table["method"], run.table["role"]))
    rows = [[html.escape(m) + (" <small>(control)</small>" if roles.get(m) == "control" else "")]
            + [cell(run.lookup.row(run.task, run.model, m, metric, v)) for _, metric, v in columns]
            for m in methods_of(run.table)]
    return table(["method", *(c[0] for c in columns)], rows)


def vqa_section(inputs: Inputs) -> str:
    """The VQA tasks' answer accuracies and GT metrics (empty without VQA results)."""
    if not inputs.vqa:
        return ""
    parts = [("<h2>Visual question answering (CLEVR-XAI, SPEC.md §6)</h2><p>Maps explain the predicted answer with "
              "respect to the image, the question held fixed; GT metrics score correctly answered test questions per "
              "ground truth (simple questions: Single Object, All Objects; complex: Unique, Unique First-non-empty, "
              "Union, All Objects). Question sensitivity: rank correlation of one image's maps for two questions "
              "about disjoint objects (lower: the map follows the question).</p>")]
    for run in ordered_runs(inputs):
        parts += [f"<h3>{html.escape(run.label)}</h3>", vqa_accuracy(run), vqa_table(run)]
    return "\n".join(parts)


CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#f3f3f3}small{color:#666}
figcaption{font-size:14px;color:#444;margin:0.3em 0 1.5em}"""


def render_report(inputs: Inputs, pngs: Mapping[str, bytes], top: str = "",
                  skipped: Mapping[str, str] | None = None) -> str:
    """The report's HTML: ``top`` (an HTML fragment: the findings), figures (``pngs`` name -> PNG bytes, in
    order) with captions and the figures not drawn (``skipped`` name -> reason), then the tables."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>salbench report</title>",
             f"<style>{CSS}</style></head><body><h1>salbench: can these saliency maps be trusted?</h1>",
             ("<p>Means with 95% percentile-bootstrap confidence intervals and the number of scored samples "
              "(n); GT metrics, AOPC and COSE score correctly classified test images only. Every number comes from "
              "the results tables data/results/&lt;task&gt;/&lt;model&gt;.csv. COSE's S = 1 − mean SSIM is not "
              "clipped: it exceeds 1 (and COSE can too) when that mean SSIM is negative.</p>"), top]
    for name, data in pngs.items():
        fig = FIGURES.get(name)
        src = base64.b64encode(data).decode()
        caption = fig.caption + (caption_note(inputs.depict) if name == "depict" else "")  # + untrusted pairs
        parts.append(f"<h2>{html.escape(fig.title)}</h2><figure><img alt='{name}' src='data:image/png;base64,{src}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    if skipped:
        parts.append("<p>Not drawn: " + "; ".join(f"<b>{html.escape(FIGURES.get(n).title)}</b> ({html.escape(r)})"
                                                  for n, r in skipped.items()) + "</p>")
    parts.append("<h2>Key numbers per task and model</h2>")
    for run in inputs.runs:
        acc = run.table[run.table["metric"] == "accuracy"]
        text = "—" if acc.empty else f"{acc['mean'].iloc[0]:.3f} on {int(acc['n'].iloc[0])} images"
        parts.append(f"<h3>{html.escape(run.label)}</h3><p>test accuracy {text}</p>")
        parts.append(metrics_table(run, inputs.methods))
        parts.append("<p>Agreement of the method rankings by AOPC with those by the GT metrics (saliency methods "
                     "only; AOPC LeRF counted lower-is-better):</p>")
        parts.append(agreement_table(run))
    parts.append(vqa_section(inputs))
    if inputs.depict is not None:
        parts.append("<h2>DEPICT rankings</h2>" + depict_table(inputs.depict))
    parts.append("</body></html>")
    return "\n".join(parts)
