"""Parameter profiles: every profile override names a real params.yaml key."""
from __future__ import annotations

import pytest

from helpers import ROOT
from salbench.params import ParamsError, load_params
from salbench.profile import load_profile, merge, set_params_args, write_profile


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")))
def test_profile_keys_exist_in_params(name: str) -> None:
    over = load_profile(name, ROOT)
    merged = merge(load_params(ROOT / "params.yaml"), over)
    assert merged != load_params(ROOT / "params.yaml")


def test_set_params_args_and_errors() -> None:
    over = {"render": {"splits": {"train": 5}, "colors": ["red", "blue"], "resolution": 64}}
    assert set_params_args(over) == [
        "-S", "render.splits.train=5", "-S", "render.colors=[\"red\",\"blue\"]", "-S", "render.resolution=64"]
    # A mapping over a null params value (tasks.<name>.world: null) is set whole, in DVC's override grammar.
    base = {"tasks": {"presence": {"rule": "x", "world": None}}}
    over = {"tasks": {"presence": {"world": {"max_objects": 5, "zoom": 1.5, "colors": ["red"]}}}}
    assert set_params_args(over, base) == ["-S", 'tasks.presence.world={max_objects:5,zoom:1.5,colors:["red"]}']
    with pytest.raises(ParamsError, match="params.yaml does not have"):
        merge({"render": {"seed": 0}}, {"render": {"sed": 1}})
    with pytest.raises(ParamsError, match="known profiles"):
        load_profile("no-such-profile", ROOT)


def test_write_merges_in_place_and_keeps_comments(tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("# top comment\nrender:\n  seed: 0      # the seed\n  splits: {train: 10, test: 5}\n"
                      "train:\n  device: cpu  # cpu | cuda\n  pretrained: null\n  epochs: 3\n  batch: 8\n")
    write_profile(params, {"render": {"splits": {"train": 99}}, "train": {"device": "auto", "epochs": 5, "batch": 8}},
                  "gpu")
    text = params.read_text()
    assert "# top comment" in text and "  seed: 0      # the seed\n" in text and "  pretrained: null\n" in text
    # a value the profile changes says so (its comment describes the default); an unchanged one is left alone
    assert "  splits: {train: 99, test: 5}\n" in text and "  batch: 8\n" in text
    assert "  device: auto # [profile gpu; default \"cpu\"] cpu | cuda\n" in text
    assert "  epochs: 5    # [profile gpu; default 3]\n" in text
    assert load_params(params) == {"render": {"seed": 0, "splits": {"train": 99, "test": 5}},
                                   "train": {"device": "auto", "pretrained": None, "epochs": 5, "batch": 8}}
    with pytest.raises(ParamsError, match="params.yaml does not have"):
        write_profile(params, {"render": {"sed": 1}})
    assert load_params(params)["render"]["seed"] == 0


def test_every_profile_applies_through_dvc_set_params(tmp_path) -> None:
    """The `-S` arguments `python -m salbench.profile <name>` prints are accepted by DVC's override parser and give
    the merged params (what `dvc exp run` would run)."""
    from dvc.utils.hydra import apply_overrides

    base = load_params(ROOT / "params.yaml")
    for name in sorted(p.stem for p in (ROOT / "profiles").glob("*.yaml")):
        over = load_profile(name, ROOT)
        params = tmp_path / f"{name}.yaml"
        params.write_text((ROOT / "params.yaml").read_text())
        args = set_params_args(over, base)
        apply_overrides(str(params), args[1::2])
        assert load_params(params) == merge(base, over), name
