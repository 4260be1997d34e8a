"""The DEPICT figures of the generate and permutation stages: the concept grid and the importance bars."""
from __future__ import annotations

import torch
from PIL import Image

from salbench.concepts.annotations import captions, changed_phrases
from salbench.concepts.plots import importance_figure, save_concept_grid, save_importance_figure


def test_changed_phrases_name_the_new_value_where_it_changed(task) -> None:
    before = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    after = before.clone()
    after[:, 0] = torch.tensor([False, True, True])
    assert changed_phrases(task, before, after, "red_cube") == ["no red cube", "a red cube", None]
    assert changed_phrases(task, before, after, "blue_sphere") == [None, None, None]


def test_concept_grid_has_a_row_per_image_and_a_column_per_concept(task, tmp_path) -> None:
    c = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)
    img = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    flipped = c.clone()
    flipped[:, 0] = ~flipped[:, 0]
    save_concept_grid(tmp_path / "grid.png", img, captions(task, c), img[:, :8, :8], {"red_cube": img[:, :8, :8],
                      "blue_sphere": img[:, :8, :8]}, {"red_cube": changed_phrases(task, c, flipped, "red_cube"),
                                                        "blue_sphere": [None, None]}, "title")
    w, h = Image.open(tmp_path / "grid.png").size
    assert (w, h) == (100 * (1.5 * 4 + 1.6), 100 * 1.75 * 2)  # 4 columns (real, g(c), 2 concepts), 2 rows


def test_importance_figure_greys_untrusted_generators(tmp_path) -> None:
    imp = {"red_cube": {"mean": 0.3, "std": 0.1}, "blue_sphere": {"mean": 0.1, "std": None}}
    gen = {"importance": imp, "trusted": True}
    rep = {"true": {"importance": {"red_cube": 0.3, "blue_sphere": 0.2}},
           "generators": {"renderer": gen, "diffusion": {**gen, "trusted": False,
                                                         "gaps": {"check1_f": 0.4, "check1_h_max": None}}}}
    import matplotlib.pyplot as plt

    fig = importance_figure({"f": rep})
    handles, labels = fig.axes[0].get_legend_handles_labels()
    assert labels == ["true (rule)", "renderer", "diffusion (untrusted: check1_f 0.40)"]
    assert handles[2].patches[0].get_hatch() == "///" and handles[1].patches[0].get_hatch() is None
    assert [t.get_text() for t in fig.legends[0].get_texts()] == labels  # one legend, below the panels
    plt.close(fig)
    save_importance_figure(tmp_path / "imp.png", {"f": rep})
    assert Image.open(tmp_path / "imp.png").size == (500, 390)
