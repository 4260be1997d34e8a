"""DVC stage `plot`: the papers' figures from the results tables, and the HTML report.

Reads the results tables data/results/<task>/<model>.csv (every number; schema: salbench.results) and the
example arrays data/evaluate/<task>/<model>/ for every task of `attribute` and model of `train`, and for the VQA
tasks × models (train.vqa_tasks × train.vqa_models) whose results table exists, with their question texts
data/render/<task>/<attribute.split>_questions.json and answers data/render/<task>/vqa.json (not a declared dependency:
the examples in data/evaluate change with the render), data/concepts/permutation/results.json (DEPICT) and
data/findings/findings.json (the verdicts, stage findings: the top of the report). A figure that cannot be drawn
from these (the VQA figures without VQA results) is skipped with its reason, printed and listed in the report.
Writes data/plots/figures/<figure>.png (the figures of `plot.figures`, see salbench.plots.FIGURES) and
data/report/index.html (self-contained: figures embedded as base64 PNG, captions, tables with CIs and counts).
"""
from __future__ import annotations

from salbench.config.validate import preflight

preflight("plot")  # all of params.yaml, before the heavy imports below: `error: ...`, exit 2

import argparse
from pathlib import Path

from salbench.errors import cli
from salbench.findings import findings_html
from salbench.io import atomic_dir, atomic_file, read_json
from salbench.params import check_keys, load_params, section
from salbench.plots import FIGURES, load_inputs, png_bytes, render_report
from salbench.plots.base import pyplot


@cli
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data", help="root of the stage outputs")
    ap.add_argument("--figures", default="data/plots/figures")
    ap.add_argument("--report", default="data/report")
    args = ap.parse_args()

    params = load_params(args.params)
    p = section(params, "plot")
    check_keys(p, ("figures", "dpi"), "plot")
    names = list(p.get("figures") or FIGURES.names())
    for name in names:
        FIGURES.get(name)
    attribute, train = section(params, "attribute"), section(params, "train")
    inputs = load_inputs(Path(args.data), list(attribute["tasks"]), list(train["models"]), depict="depict" in names,
                         vqa_tasks=list(train.get("vqa_tasks") or []), vqa_models=list(train.get("vqa_models") or {}),
                         split=attribute.get("split", "test"))
    verdicts = read_json(Path(args.data) / "findings" / "findings.json", "findings")
    plt, dpi = pyplot(), int(p.get("dpi", 110))
    pngs, skipped = {}, {}
    with atomic_dir(args.figures) as out:
        for name in names:
            reason = FIGURES.get(name).skip(inputs)
            if reason:
                skipped[name] = reason
                print(f"[plot] skipped {name}: {reason}")
                continue
            fig = FIGURES.get(name).draw(inputs)
            pngs[name] = png_bytes(fig, dpi)
            plt.close(fig)
            (out / f"{name}.png").write_bytes(pngs[name])
    Path(args.report).mkdir(parents=True, exist_ok=True)
    with atomic_file(Path(args.report) / "index.html") as f:
        f.write(render_report(inputs, pngs, findings_html(verdicts["findings"], verdicts["controls"]), skipped))
    print(f"[plot] {len(pngs)} figures, report {Path(args.report) / 'index.html'}")


if __name__ == "__main__":
    main()
