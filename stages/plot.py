"""DVC stage `plot`: the papers' figures from the results tables, and the HTML report.

Reads the results tables data/results/<task>/<model>.csv (every number; schema: salbench.results) and the
example arrays data/evaluate/<task>/<model>/ for every task of `attribute` and model of `train`,
data/concepts/permutation/results.json (DEPICT) and data/findings/findings.json (the verdicts, stage
findings: the top of the report).
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
    tasks, models = section(params, "attribute")["tasks"], section(params, "train")["models"]
    inputs = load_inputs(Path(args.data), list(tasks), list(models), depict="depict" in names)
    verdicts = read_json(Path(args.data) / "findings" / "findings.json", "findings")
    plt, dpi = pyplot(), int(p.get("dpi", 110))
    pngs = {}
    with atomic_dir(args.figures) as out:
        for name in names:
            fig = FIGURES.get(name).draw(inputs)
            pngs[name] = png_bytes(fig, dpi)
            plt.close(fig)
            (out / f"{name}.png").write_bytes(pngs[name])
    Path(args.report).mkdir(parents=True, exist_ok=True)
    with atomic_file(Path(args.report) / "index.html") as f:
        f.write(render_report(inputs, pngs, findings_html(verdicts["findings"], verdicts["controls"])))
    print(f"[plot] {len(pngs)} figures, report {Path(args.report) / 'index.html'}")


if __name__ == "__main__":
    main()
