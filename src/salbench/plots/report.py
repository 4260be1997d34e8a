"""The self-contained HTML report: every figure as an embedded PNG with its caption, and the key tables."""
from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from .base import FIGURES, Inputs, Run
from .depict import caption_note

KEY_METRICS = {
    "mass_accuracy/l2_sq": "mass acc. (l2²)", "rank_accuracy/max_norm": "rank acc. (max)", "pointing_game": "pointing",
    "aopc_morf": "AOPC MoRF ↑", "aopc_lerf": "AOPC LeRF ↓", "cose/all/cose": "COSE ↑",
    "class_sensitivity": "class sens. ↓", "data_randomization/spearman_abs": "data rand. ↓",
}


def png_bytes(fig: Any, dpi: int) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def cell(summary: Mapping[str, Any] | None) -> str:
    """"mean [ci_low, ci_high] n=N" (— when nothing was scored)."""
    if not summary or summary.get("mean") is None:
        return "—" if not summary else f"— n={summary.get('n', 0)}"
    return (f"{summary['mean']:.3f} <small>[{summary['ci_low']:.3f}, {summary['ci_high']:.3f}] "
            f"n={summary['n']}</small>")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_table(run: Run) -> str:
    methods = run.metrics.get("methods", {})
    order = run.metrics.get("method_order") or list(methods)
    rows = [[html.escape(m)] + [cell(methods[m].get(k)) for k in KEY_METRICS] for m in order]
    return table(["method", *KEY_METRICS.values()], rows)


def agreement_table(run: Run) -> str:
    agreement = run.metrics.get("agreement", {})
    gt_keys = list(dict.fromkeys(k for v in agreement.values() for k in v))
    rows = [[html.escape(g)] + [_rho(agreement[a].get(g)) for a in agreement] for g in gt_keys]
    return table(["GT metric", *[f"Spearman vs {a}" for a in agreement]], rows)


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


CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}th{background:#f3f3f3}small{color:#666}
figcaption{font-size:14px;color:#444;margin:0.3em 0 1.5em}"""


def render_report(inputs: Inputs, pngs: Mapping[str, bytes]) -> str:
    """The report's HTML: figures (``pngs`` name -> PNG bytes, in order) with captions, then the tables."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>salbench report</title>",
             f"<style>{CSS}</style></head><body><h1>salbench: can these saliency maps be trusted?</h1>",
             ("<p>Means with 95% percentile-bootstrap confidence intervals and the number of scored samples "
              "(n); GT metrics and AOPC score correctly classified test images only.</p>")]
    for name, data in pngs.items():
        fig = FIGURES.get(name)
        src = base64.b64encode(data).decode()
        caption = fig.caption + (caption_note(inputs.depict) if name == "depict" else "")  # + untrusted pairs
        parts.append(f"<h2>{html.escape(fig.title)}</h2><figure><img alt='{name}' src='data:image/png;base64,{src}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<h2>Key numbers per task and model</h2>")
    for run in inputs.runs:
        acc = run.metrics.get("accuracy")
        parts.append(f"<h3>{html.escape(run.label)}</h3><p>test accuracy "
                     f"{'—' if acc is None else f'{acc:.3f}'} on {run.metrics.get('n_test', '?')} images</p>")
        parts.append(metrics_table(run))
        parts.append("<p>Agreement of the method rankings by AOPC with those by the GT metrics:</p>")
        parts.append(agreement_table(run))
    if inputs.depict is not None:
        parts.append("<h2>DEPICT rankings</h2>" + depict_table(inputs.depict))
    parts.append("</body></html>")
    return "\n".join(parts)
