"""DEPICT (Jabbour et al. 2024): concept importance through each generator beside the true importance.

A (classifier, generator) whose images fail DEPICT's check 1 or 2 (``trusted: false`` in the results) is drawn
grey and hatched, labelled untrusted, with the failed checks and their gaps under the panels: never as a result.
"""
from __future__ import annotations

import textwrap
from typing import Any, Mapping

from .base import Inputs, bars, figure, pyplot

GENERATOR_COLORS = {"true (rule)": "#444444", "renderer": "#1b9e77", "diffusion": "#d95f02"}
UNTRUSTED_COLOR, UNTRUSTED_HATCH = "#d9d9d9", "///"
UNTRUSTED = " (untrusted)"


def untrusted(depict: Mapping[str, Any] | None) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(model, generator, its report entry) of every pair marked ``trusted: false``."""
    return [(m, g, r) for m, rep in (depict or {}).get("models", {}).items()
            for g, r in rep["generators"].items() if r.get("trusted") is False]


def h_check1(depict: Mapping[str, Any] | None) -> dict[str, dict[str, dict[str, float | None]]]:
    """Generator -> concept -> {real, generated, gap}: h's AUROC on real and generated images (check 1)."""
    d = depict or {}
    if d.get("h_check1"):
        return d["h_check1"]
    out = {}
    for rep in d.get("models", {}).values():
        for g, r in rep["generators"].items():
            if r.get("check1", {}).get("h_table"):
                out.setdefault(g, r["check1"]["h_table"])
    return out


def gated(depict: Mapping[str, Any] | None) -> bool:
    """Whether the results carry the checks' verdicts (results written before the gating existed do not)."""
    return any("trusted" in r for rep in (depict or {}).get("models", {}).values() for r in rep["generators"].values())


def _gaps(r: Mapping[str, Any]) -> str:
    g = r.get("gaps", {})
    return ", ".join(f"{k} {'—' if v is None else f'{v:.3f}'}" for k, v in g.items())


def caption_note(depict: Mapping[str, Any] | None) -> str:
    """The report's per-run addition to the DEPICT caption: which pairs are untrusted, why, and the gaps."""
    d = depict or {}
    if not gated(d):
        return ""
    checks = d.get("checks") or next(iter(d["models"].values())).get("checks", {})
    limits = (f"check 1 gap ≤ {checks.get('max_gap', '?')}, "
              f"check 2 off-concept change ≤ {checks.get('max_other', '?')}, "
              f"permuted concept's own change ≤ {checks.get('max_own', '?')}")
    bad = untrusted(d)
    if not bad:
        return f" Every classifier × generator passed DEPICT's checks ({limits})."
    parts = [f"{g} for {m}: " + "; ".join(r["reasons"]) + f" (largest gaps: {_gaps(r)})" for m, g, r in bad]
    return (f" UNTRUSTED, not results (DEPICT's checks: {limits}), drawn grey and hatched: " + " | ".join(parts) + ".")


@figure("depict", "DEPICT: concept permutation importance",
        "Drop in AUROC when one concept is permuted across the images' captions and the images regenerated, per "
        "classifier: the task rule's true importance (grey), the exact re-rendering generator and the diffusion "
        "generator (mean ± std over permutations). A generator whose images fail DEPICT's check 1 (f's or h's "
        "AUROC on generated images more than concepts.checks.max_gap from real) or check 2 (permuting one concept "
        "moves h's AUROC of another by more than max_other, or of itself, against the permuted captions, by more than "
        "max_own) is untrusted: light grey, hatched, not a result. The "
        "table gives h's AUROC per concept on real and generated images (check 1).", skip=lambda inputs: None)
def draw(inputs: Inputs) -> Any:
    plt = pyplot()
    depict = inputs.depict or {}
    models = depict.get("models", {})
    n = max(len(models), 2)  # the bottom row holds the check-1 table and the untrusted pairs' reasons
    fig = plt.figure(figsize=(4.6 * n, 6.4))
    grid = fig.add_gridspec(2, n, height_ratios=[3, 2])
    axes = [fig.add_subplot(grid[0, k]) for k in range(len(models))] if len(models) > 1 else \
        [fig.add_subplot(grid[0, :])]
    for ax, (model, rep) in zip(axes, models.items()):
        names = list(rep["true"]["importance"])
        series = {"true (rule)": ([rep["true"]["importance"][c] for c in names],) * 3}
        colors, hatches = dict(GENERATOR_COLORS), {}
        for g, r in rep["generators"].items():
            mean = [r["importance"][c]["mean"] for c in names]
            std = [r["importance"][c]["std"] or 0 for c in names]
            label = g if r.get("trusted", True) else g + UNTRUSTED
            if label != g:
                colors[label], hatches[label] = UNTRUSTED_COLOR, UNTRUSTED_HATCH
            series[label] = (mean, [m - s if m is not None else None for m, s in zip(mean, std)],
                             [m + s if m is not None else None for m, s in zip(mean, std)])
        series = {k: tuple([float("nan") if v is None else v for v in vals] for vals in s) for k, s in series.items()}
        bars(ax, names, series, colors=colors, hatches=hatches)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(model, fontsize=9)
        ax.set_ylabel("AUROC drop")
        ax.legend(fontsize=7)
    table_ax = fig.add_subplot(grid[1, 0])
    _check1_table(table_ax, h_check1(depict))
    text_ax = fig.add_subplot(grid[1, 1:])
    text_ax.axis("off")
    bad = untrusted(depict)
    lines = [f"UNTRUSTED {g} for {m}: failed " + ", ".join(x.split(":")[0] for x in r["reasons"]) +
             f"; largest gaps: {_gaps(r)}" for m, g, r in bad] or \
        (["every classifier × generator passed checks 1 and 2"] if gated(depict) else [])
    text_ax.text(0, 1, "\n".join(textwrap.fill(s, 80) for s in lines), va="top", ha="left", fontsize=7,
                 color="#b00000" if bad else "#222222", transform=text_ax.transAxes)
    fig.tight_layout()
    return fig


def _check1_table(ax: Any, table: Mapping[str, Mapping[str, Mapping[str, float | None]]]) -> None:
    """h's AUROC per concept (rows): on real images, then on each generator's images and the gap."""
    ax.axis("off")
    if not table:
        return
    gens = list(table)
    concepts = list(next(iter(table.values())))

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.2f}"

    rows = [[fmt(table[gens[0]][c]["real"])] + [fmt(table[g][c][k]) for g in gens for k in ("generated", "gap")]
            for c in concepts]
    cols = ["h real"] + [f"{g} {k}" for g in gens for k in ("gen.", "gap")]
    t = ax.table(cellText=rows, rowLabels=concepts, colLabels=cols, loc="upper center", cellLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(6.5)
    ax.set_title("check 1: h's AUROC per concept", fontsize=8)
