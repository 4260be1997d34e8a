"""The VQA render tasks: registration, the question shard format, and `dvc repro render@vqa-simple`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import ROOT, TINY_RENDER, run
from salbench.render import TASKS, World, build_task, load_scenes, load_split
from salbench.render.scene import yfov
from salbench.vqa import SceneFacts, execute
from salbench.vqa.dataset import gt_masks, load_questions, load_vocabulary
from salbench.vqa.program import from_json

SPLITS = {"train": 6, "val": 3, "test": 3}
QUESTIONS = 10  # vqa-complex questions asked per image in the rendered fixture, whatever the default


def test_vqa_tasks_are_registered_and_sample_any_objects() -> None:
    assert {"vqa-simple", "vqa-complex"} <= set(TASKS.names())
    world = World(colors=("red", "blue"), max_objects=4)
    task = build_task("vqa-complex", world, {"questions_per_image": 3})
    objs = task.sample_objects(np.random.default_rng(0), 0, "train")
    assert 3 <= len(objs) <= 4 and {o["color"] for o in objs} <= {"red", "blue"}
    assert task.classes == ["scene"] and task.relevant({"objects": objs}) == list(range(len(objs)))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("vqa")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["render"].update({**TINY_RENDER, "splits": SPLITS})
    params["tasks"]["vqa-complex"]["questions_per_image"] = QUESTIONS
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, str(ROOT / "stages/render.py"), "--task", "vqa-complex", "--params",
                    str(tmp / "params.yaml"), "--out", str(tmp / "out"), "--plots", str(tmp / "plots"),
                    "--metrics", str(tmp / "metrics.json")], check=True, capture_output=True)
    return tmp


def test_question_shard_format(rendered: Path) -> None:
    out, o = rendered / "out", TINY_RENDER["max_objects"]
    vocab = load_vocabulary(out)
    assert vocab["gt_kinds"] == ["unique", "unique_first_nonempty", "union", "all_objects"]
    assert vocab["tokens"][0] == "<pad>" and vocab["max_objects"] == o
    assert set(vocab["answer_counts"]) == set(SPLITS)
    scenes = load_scenes(out)
    for split, n in SPLITS.items():
        q = load_questions(out, split)
        nq = len(q["answer"])
        assert 3 * n <= nq <= QUESTIONS * n
        assert {k: (v.dtype, v.shape) for k, v in q.items()} == {
            "image_index": (np.int64, (nq,)), "tokens": (np.int64, (nq, vocab["max_tokens"])),
            "answer": (np.int64, (nq,)), "family": (np.int64, (nq,)),
            **{f"gt_{k}": (np.bool_, (nq, o)) for k in vocab["gt_kinds"]}}
        assert q["image_index"].min() >= 0 and q["image_index"].max() < n
        assert (q["tokens"][:, 0] > 0).all() and q["family"].max() < len(vocab["families"])
        texts = json.loads((out / f"{split}_questions.json").read_text())
        assert len(texts) == nq
        counts = sum(sum(c.values()) for c in vocab["answer_counts"][split].values())
        assert counts == nq
        # Answers re-derive from the stored programs and records; GT masks from the instance maps.
        for k in range(nq):
            rec = scenes[split][q["image_index"][k]]
            got = execute(from_json(texts[k]["program"]), SceneFacts.from_record(rec, vocab["margin"], vocab["separation"]))[-1]
            assert vocab["answers"][q["answer"][k]] == (("yes" if got else "no") if isinstance(got, bool) else str(got))
            assert not q["gt_all_objects"][k, len(rec["objects"]):].any()
            assert q["gt_all_objects"][k, : len(rec["objects"])].all()
        inst = load_split(out, split)["instance"]
        masks = gt_masks(inst, q, "union")
        for k in range(nq):
            objs = np.flatnonzero(q["gt_union"][k]) + 1
            np.testing.assert_array_equal(masks[k], np.isin(inst[q["image_index"][k]], objs))
    metrics = json.loads((rendered / "metrics.json").read_text())["questions"]
    assert metrics["test"]["n"] == len(load_questions(out, "test")["answer"])
    assert set(metrics["train"]["families"]) == set(vocab["families"])


@pytest.mark.slow
def test_dvc_repro_render_vqa_simple(pipeline_copy) -> None:
    tasks = yaml.safe_load((ROOT / "profiles/vqa.yaml").read_text())["render"]["tasks"]
    repo = pipeline_copy({"render": {**TINY_RENDER, "tasks": tasks}})
    run([sys.executable, "-m", "dvc", "repro", "render@vqa-simple"], repo)
    out = repo / "data/render/vqa-simple"
    q = load_questions(out, "train")
    assert len(q["answer"]) >= 3 * TINY_RENDER["splits"]["train"]
    assert load_vocabulary(out)["families"] == ["query_shape", "query_color", "query_material", "query_size"]
    assert "questions" in json.loads((repo / "data/metrics/render/vqa-simple.json").read_text())
    assert not (repo / "data/render/unique-query").exists()
    # The task renders in its own world (tasks.vqa-simple.world: 2-5 objects, zoom 1.5), recorded in the manifest.
    world = yaml.safe_load((ROOT / "params.yaml").read_text())["tasks"]["vqa-simple"]["world"]
    assert json.loads((out / "manifest.json").read_text())["provenance"]["params"]["task"]["world"] == world
    scenes = json.loads((out / "scenes.json").read_text())["train"]
    assert {len(r["objects"]) for r in scenes} <= set(range(world["min_objects"], world["max_objects"] + 1))
    assert {r["camera"]["yfov"] for r in scenes} == {yfov(world["zoom"])}
