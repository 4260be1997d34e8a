"""The results table's schema: columns and dtypes, conventions per metric kind, deterministic bytes, and clear
errors for a table that does not follow it."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from salbench.errors import SalbenchError
from salbench.results import (COLUMNS, CONTROLS, Lookup, ResultsError, parse_variant, read_results, role, variant,
                              variants_with, write_results)

sys.path.insert(0, str(Path(__file__).parent / "plots"))
from plot_synthetic import rows as synthetic_rows  # noqa: E402

HEADER = ("task,model,family,method,role,metric,variant,statistic,step,step_label,mean,ci_low,ci_high,n,"
          "n_undefined")


def test_columns_dtypes_and_round_trip(tmp_path):
    rows = synthetic_rows("t", "m", "cnn")
    write_results(tmp_path / "r.csv", rows)
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == HEADER
    table = read_results(tmp_path / "r.csv")
    assert list(table.columns) == list(COLUMNS) and len(table) == len(rows)
    for column, (kind, _) in COLUMNS.items():
        dtype = table[column].dtype
        assert (pd.api.types.is_string_dtype(dtype) if kind is str else pd.api.types.is_float_dtype(dtype)
                if kind is float else pd.api.types.is_integer_dtype(dtype)), column
    acc = table[table["metric"] == "accuracy"].iloc[0]
    strings = ("method", "role", "variant", "statistic", "step_label")
    assert [acc[c] for c in strings] == ["", "", "", "value", ""]
    assert math.isnan(acc["step"]) and acc["mean"] == 0.875 and acc["n"] == 8  # '' stays '', NaN only in floats


def test_bytes_are_deterministic_and_sorted(tmp_path):
    rows = synthetic_rows("t", "m", "cnn")
    write_results(tmp_path / "a.csv", rows)
    write_results(tmp_path / "b.csv", list(reversed(rows)))
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    table = read_results(tmp_path / "a.csv")
    assert list(table["method"]) == sorted(table["method"])  # sorted by the key columns, method second to model
    curve = table[(table["method"] == "gradient") & (table["metric"] == "perturbation_curve")]
    assert list(curve["step"]) == [0.0, 0.5, 1.0] * 2
    value = rows[1]["mean"]
    assert repr(float(value)) in (tmp_path / "a.csv").read_text()  # floats round-trip exactly


def test_conventions_per_metric_kind(tmp_path):
    write_results(tmp_path / "r.csv", synthetic_rows("t", "m", "vit"))
    t = read_results(tmp_path / "r.csv")
    kinds = {m: set(zip(g["variant"], g["statistic"])) for m, g in t[t["step"].isna()].groupby("metric")}
    assert ("pooling=l2_sq", "value") in kinds["mass_accuracy"] and ("", "value") in kinds["pointing_game"]
    assert kinds["aopc"] == {("order=morf", "value"), ("order=lerf", "value")}
    assert ("split=all", "cose") in kinds["cose"] and ("split=geometric", "S") in kinds["cose"]
    assert ("saliency=meta", "value") in kinds["class_sensitivity"]
    assert ("pooling=l1,saliency=plain", "value") in kinds["mass_accuracy"]
    assert kinds["data_randomization"] == {("", "spearman_abs"), ("", "ssim")}
    cascade = t[t["metric"] == "cascading_randomization"]
    assert cascade["step"].min() == 1 and set(cascade["step_label"]) >= {"net.fc", "net.conv1"}
    layers = t[t["variant"] == "layer_study=1,pooling=l1"]
    assert set(layers["method"]) == {"gradcam", "normgrad"} and layers["step"].notna().all()
    assert set(t.loc[t["method"].isin(CONTROLS), "role"]) == {"control"}


def test_variant_and_role_helpers():
    assert variant({"saliency": "meta", "pooling": "l1"}) == "pooling=l1,saliency=meta" and variant({}) == ""
    assert parse_variant("layer_study=1,pooling=l1") == {"layer_study": "1", "pooling": "l1"}
    assert parse_variant("") == {}
    assert [role(m) for m in ("", "gradcam", "random", "edge", "gt_mask", "gt_blur")] == [
        "", "method", "control", "control", "control", "control"]


def test_a_table_off_the_schema_is_a_clear_error(tmp_path):
    rows = synthetic_rows("t", "m", "cnn")
    with pytest.raises(ResultsError, match="missing \\['n_undefined'\\]"):
        write_results(tmp_path / "r.csv", [{k: v for k, v in rows[0].items() if k != "n_undefined"}])
    with pytest.raises(ResultsError, match="share the key"):
        write_results(tmp_path / "r.csv", [rows[0], dict(rows[0])])
    with pytest.raises(ResultsError, match="role must be one of"):
        write_results(tmp_path / "r.csv", [{**rows[0], "role": "oracle"}])
    write_results(tmp_path / "r.csv", rows)
    text = (tmp_path / "r.csv").read_text()
    (tmp_path / "renamed.csv").write_text(text.replace("n_undefined", "undefined", 1))
    with pytest.raises(ResultsError, match="renamed.csv.*missing \\['n_undefined'\\], unexpected \\['undefined'\\]"):
        read_results(tmp_path / "renamed.csv")
    lines = text.splitlines()
    (tmp_path / "bad.csv").write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",many"]) + "\n")
    with pytest.raises(ResultsError, match="bad.csv: a value does not have its column's type"):
        read_results(tmp_path / "bad.csv")
    with pytest.raises(SalbenchError, match="dvc repro evaluate@t-missing"):
        read_results(tmp_path / "t" / "missing.csv")
    both = read_results([tmp_path / "r.csv", tmp_path / "r.csv"])
    assert len(both) == 2 * len(rows)


def test_lookup_finds_rows_by_key_and_selects_with_wildcards(tmp_path):
    write_results(tmp_path / "r.csv", synthetic_rows("t", "m", "cnn", poolings=["l1", "max_norm"]))
    table = read_results(tmp_path / "r.csv")
    lookup = Lookup(table)
    row = lookup.row("t", "m", "gradient", "mass_accuracy", "pooling=l1")
    assert row["mean"] == pytest.approx(1 / 6) and row["n"] == 7  # gradient: the 1st of 5 synthetic methods
    assert lookup.row("t", "m", "gradient", "mass_accuracy", "pooling=l2") is None
    assert lookup.row("t", "m", "gradient", "perturbation_curve", "order=morf", "score") is None  # a curve: no scalar
    curve = lookup.row("t", "m", "gradient", "perturbation_curve", "order=morf", "score", step=0.5)
    assert curve["mean"] == pytest.approx(0.9 - 0.5 / 6)
    assert set(lookup.select(metric="mass_accuracy", variant=None, method="gradient")["variant"]) == {
        "pooling=l1", "pooling=max_norm", "pooling=l1,saliency=meta", "pooling=l1,saliency=plain"}
    assert len(lookup.select()) == len(table)
    assert variants_with(table, "mass_accuracy", ["pooling"]) == ["pooling=l1", "pooling=max_norm"]
    assert variants_with(table, "mass_accuracy", ["saliency", "pooling"]) == ["pooling=l1,saliency=meta",
                                                                               "pooling=l1,saliency=plain"]
