"""The findings and controls tables as a self-contained HTML fragment (inline CSS, no scripts or external assets)."""
from __future__ import annotations

import html
import math
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd

from .base import Finding

COLOURS = {"reproduced": "#d8f0d2", "not_reproduced": "#f7d4d0", "inconclusive": "#eeeeee"}
WORDS = {"reproduced": "reproduced", "not_reproduced": "not reproduced", "inconclusive": "inconclusive"}
CSS = """.sb-findings table{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em;width:100%}
.sb-findings td,.sb-findings th{border:1px solid #ccc;padding:4px 6px;text-align:left;vertical-align:top}
.sb-findings th{background:#f3f3f3}.sb-findings small{color:#555}.sb-findings details{font-size:12px}
.sb-findings .v{font-weight:bold;white-space:nowrap}.sb-findings ul{margin:0.2em 0;padding-left:1.2em}
""" + "".join(f".sb-findings .{v}{{background:{c}}}" for v, c in COLOURS.items())


def findings_html(findings: Sequence[Finding | Mapping[str, Any]],
                  controls: pd.DataFrame | Sequence[Mapping[str, Any]] | None = None) -> str:
    """A ``<section>`` with the findings table (one row per finding, coloured by verdict: claim, source, verdict,
    explanation, and the numbers of every comparison with CIs) and, if given, the negative-controls table.
    ``findings``: Finding objects or their JSON (data/findings/findings.json ``findings``); ``controls``: the
    controls table or its records (``controls`` of the same file)."""
    items = [f.to_json() if isinstance(f, Finding) else f for f in findings]
    counts = {v: sum(f["verdict"] == v for f in items) for v in COLOURS}
    parts = [f"<section class='sb-findings'><style>{CSS}</style><h2>Does each paper reproduce?</h2>",
             "<p>" + ", ".join(f"{n} {WORDS[v]}" for v, n in counts.items()) + " of " + str(len(items))
             + " findings. A claim is reproduced when the 95% CIs separate in its direction, not reproduced when "
               "they separate the other way, inconclusive when they overlap or rows are missing.</p>",
             "<table><tr><th>verdict</th><th>finding</th><th>claim</th><th>explanation and numbers</th></tr>"]
    for f in items:
        v = f["verdict"]
        parts.append(
            f"<tr class='{v}'><td class='v'>{WORDS[v]}</td>"
            f"<td><b>{_e(f['id'])}</b><br><small>{_e(f['paper'])}<br>{_e(f['source'])}</small></td>"
            f"<td>{_e(f['claim'])}<br><small>rule: {_e(f['rule'])}</small></td>"
            f"<td>{_e(f['explanation'])}{_numbers(f['result'])}</td></tr>")
    parts.append("</table>")
    if controls is not None:
        parts.append(_controls(controls))
    parts.append("</section>")
    return "".join(parts)


def _numbers(result: Mapping[str, Any]) -> str:
    leaves = list(_leaves(result, ())) if not result.get("parts") else [
        leaf for p in result["parts"] for leaf in _leaves(p, ())]
    items = "".join(f"<li class='{c['verdict']}'>{_e(label)}: {_e(WORDS[c['verdict']])}: {_e(c['why'])}</li>"
                    for label, c in leaves)
    return f"<details><summary>{len(leaves)} comparisons</summary><ul>{items}</ul></details>"


def _leaves(cell: Mapping[str, Any], path: tuple[str, ...]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path / label, cell) of every leaf below ``cell``."""
    path = path + (cell["label"],)
    if not cell.get("parts"):
        yield " / ".join(path), cell
    for p in cell.get("parts", []):
        yield from _leaves(p, path)


def _controls(controls: pd.DataFrame | Sequence[Mapping[str, Any]]) -> str:
    rows = controls.to_dict(orient="records") if isinstance(controls, pd.DataFrame) else list(controls)
    head = ("<h3>Negative controls (Binder et al. 2023)</h3><p>Per metric: the edge detector (Sobel magnitude of the "
            "input) and the random map against the real methods. <i>beats / ties / loses</i> count real methods by "
            "non-overlapping 95% CIs. A metric where the edge detector beats most methods (red) measures the image, "
            "not the model; one where most methods do not beat random (grey) does not separate informative maps from "
            "noise.</p>")
    header = ["model", "metric", "variant", "statistic", "better", "edge [CI]", "edge beats/ties/loses", "edge rank",
              "random [CI]", "methods beating random", "GT mask / blur rank"]
    body = []
    for r in rows:
        edge, rand = r.get("edge_above_methods"), r.get("random_beaten")  # NaN / None: no such control
        cls = ("not_reproduced" if not _missing(edge) and edge else
               "inconclusive" if not _missing(rand) and not rand else "")
        n = r.get("n_methods")
        body.append(f"<tr class='{cls}'>" + "".join(f"<td>{c}</td>" for c in [
            _e(r["model"]), _e(r["metric"]), _e(r["variant"]), _e(r["statistic"]), _e(r["better"]),
            _ci(r, "edge"), _counts(r, "edge", n), _int(r.get("edge_rank")), _ci(r, "random"),
            f"{_int(r.get('random_loses'))} of {n}",
            f"{_int(r.get('gt_mask_rank'))} / {_int(r.get('gt_blur_rank'))}"]) + "</tr>")
    return (head + "<table><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" + "".join(body)
            + "</table>")


def _ci(r: Mapping[str, Any], name: str) -> str:
    m, lo, hi = r.get(f"{name}_mean"), r.get(f"{name}_ci_low"), r.get(f"{name}_ci_high")
    if _missing(m):
        return "—"
    return f"{m:.3f}" + ("" if _missing(lo) else f" <small>[{lo:.3f}, {hi:.3f}]</small>")


def _counts(r: Mapping[str, Any], name: str, n: Any) -> str:
    vals = [r.get(f"{name}_{k}") for k in ("beats", "ties", "loses")]
    return "—" if any(_missing(v) for v in vals) else f"{'/'.join(str(int(v)) for v in vals)} of {n}"


def _int(v: Any) -> str:
    return "—" if _missing(v) else str(int(v))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _e(x: Any) -> str:
    return html.escape(str(x))
