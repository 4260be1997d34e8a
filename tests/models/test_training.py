"""Deterministic training, augmentation, label randomisation, config validation."""
from __future__ import annotations

import math

import pytest
import torch

from salbench.models import TrainConfig, accuracy, augment, build_model, fit, random_labels, set_deterministic
from salbench.models.training import _schedule
from salbench.params import ParamsError

CPU = torch.device("cpu")


def test_augment_off_is_identity_and_flips_are_per_image() -> None:
    x = torch.rand(8, 3, 6, 5)
    assert torch.equal(augment(x, torch.Generator().manual_seed(0), flip=False, shift=0), x)
    out = augment(x, torch.Generator().manual_seed(0), flip=True, shift=0)
    flipped = [bool(torch.equal(o, xi.flip(2))) for o, xi in zip(out, x, strict=True)]
    kept = [bool(torch.equal(o, xi)) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and 0 < sum(flipped) < 8


def test_shift_is_an_edge_replicated_translation_within_range() -> None:
    s = 2
    x = torch.rand(16, 3, 7, 9)
    out = augment(x, torch.Generator().manual_seed(1), flip=False, shift=s)
    pad = torch.nn.functional.pad(x, (s,) * 4, mode="replicate")
    found = set()
    for i in range(len(x)):  # brute force over every allowed offset, independently of the implementation
        hits = [(dy, dx) for dy in range(2 * s + 1) for dx in range(2 * s + 1)
                if torch.equal(out[i], pad[i, :, dy:dy + 7, dx:dx + 9])]
        assert hits, f"image {i} is not a translation by at most {s} px"
        found.add(hits[0])
    assert len(found) > 3  # offsets really vary per image


def test_random_labels_are_a_seeded_permutation_of_a_subset() -> None:
    labels = torch.arange(200) % 8
    idx, perm = random_labels(labels, 64, seed=3)
    assert len(idx) == 64 and torch.equal(idx, idx.unique())  # sorted, distinct
    assert torch.equal(perm.sort().values, labels[idx].sort().values)  # the same label multiset
    assert (perm == labels[idx]).float().mean() < 0.5  # detached from the images (chance is 1/8)
    again = random_labels(labels, 64, seed=3)
    assert torch.equal(again[0], idx) and torch.equal(again[1], perm)
    assert not torch.equal(random_labels(labels, 64, seed=4)[1], perm)
    all_idx, _ = random_labels(labels, 0, seed=3)
    assert torch.equal(all_idx, torch.arange(200))


def test_schedule_warms_up_linearly_then_decays_to_zero() -> None:
    f = _schedule(TrainConfig(epochs=4, warmup_epochs=1), steps_per_epoch=10)
    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0) and f(25) == pytest.approx(0.5)  # cosine over the 30 steps after warm-up
    assert f(39) == pytest.approx(0.5 * (1 + math.cos(math.pi * 29 / 30)))


@pytest.mark.parametrize("name", ["resnet-small", "vit-tiny"])
def test_training_is_bit_for_bit_deterministic(name: str, fake_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = fake_batch
    cfg = TrainConfig(epochs=2, batch_size=8, shift=2)
    states = []
    for _ in range(2):
        set_deterministic(0, CPU)
        model = build_model(name, 4, 32)
        fit(model, images, labels, cfg, seed=0)
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    set_deterministic(0, CPU)
    init = build_model(name, 4, 32).state_dict()
    assert any(not torch.equal(init[k], states[0][k]) for k in init)  # training did change the weights


def test_fit_learns_and_reports_history(fake_task, fake_batch) -> None:
    from salbench.render import load_split

    train, test = load_split(fake_task, "train"), load_split(fake_task, "test")
    x, y = torch.from_numpy(train["images"]), torch.from_numpy(train["label"])
    set_deterministic(0, CPU)
    model = build_model("resnet-small", 4, 32)
    seen = []
    hist = fit(model, x, y, TrainConfig(epochs=8, batch_size=16, lr=1e-2, shift=2), seed=0,
               on_epoch=lambda e, st, m: seen.append((e, m.training)))
    assert [h["epoch"] for h in hist] == [e for e, _ in seen] == list(range(1, 9))
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert not model.training
    assert accuracy(model, torch.from_numpy(test["images"]), torch.from_numpy(test["label"])) >= 0.9


def test_stop_at_train_accuracy_stops_early(fake_batch) -> None:
    images, labels = fake_batch
    set_deterministic(0, CPU)
    model = build_model("resnet-small", 4, 32)
    cfg = TrainConfig(epochs=60, batch_size=8, lr=3e-3, flip=False, stop_at_train_accuracy=1.0)
    hist = fit(model, images, labels, cfg, seed=0)
    assert hist[-1]["fit_accuracy"] == 1.0 and len(hist) < 60
    assert all(h["fit_accuracy"] < 1.0 for h in hist[:-1])
    assert accuracy(model, images, labels) == 1.0


def test_multilabel_fit_overfits_a_tiny_batch(fake_batch) -> None:
    """N×K 0/1 labels train with per-label binary cross-entropy; accuracy is then the share of labels right."""
    images, labels = fake_batch
    multi = torch.stack([labels == 0, labels % 2 == 1, labels >= 2], 1)  # 3 overlapping "concepts"
    set_deterministic(0, CPU)
    model = build_model("resnet-small", 3, 32)
    cfg = TrainConfig(epochs=60, batch_size=8, lr=3e-3, flip=False, stop_at_train_accuracy=1.0)
    hist = fit(model, images, multi, cfg, seed=0)
    assert hist[-1]["fit_accuracy"] == 1.0 and hist[-1]["loss"] < hist[0]["loss"]
    assert accuracy(model, images, multi) == 1.0
    logits = model(images.permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(logits > 0, multi)
    assert accuracy(model, images, ~multi) == 0.0  # per-label: every label wrong


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ParamsError, match="unknown key train.models.x.epoch .*did you mean 'epochs'"):
        TrainConfig.from_params({"epoch": 3}, "train.models.x")
    with pytest.raises(ParamsError, match=r"checkpoint_epochs \[5\] lie outside 1..epochs=4"):
        TrainConfig.from_params({"epochs": 4, "checkpoint_epochs": [1, 5]}, "train.models.x")
    assert TrainConfig.from_params({"checkpoint_epochs": [1, 2]}, "w").checkpoint_epochs == (1, 2)
    model = build_model("resnet-small", 4, 32)
    with pytest.raises(ValueError, match=r"images are \(64, 64\) px but the model takes 32 px"):
        fit(model, torch.zeros(4, 64, 64, 3, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), TrainConfig(), 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["resnet-small", "vit-tiny"])
def test_cuda_training_follows_the_cpu_run(name: str, fake_batch, tmp_path) -> None:
    """The same code path on CUDA: the same batches and augmentations, so nearly the same weights."""
    from salbench.models import load_checkpoint, save_checkpoint

    images, labels = fake_batch
    cfg = TrainConfig(epochs=2, batch_size=8, shift=2)
    models = {}
    for device in ("cpu", "cuda"):
        set_deterministic(0, device)
        models[device] = build_model(name, 4, 32).to(device)
        fit(models[device], images, labels, cfg, seed=0)
    cpu, cuda = models["cpu"].state_dict(), models["cuda"].state_dict()
    for k in cpu:
        torch.testing.assert_close(cuda[k].cpu(), cpu[k], rtol=1e-3, atol=1e-3)
    save_checkpoint(tmp_path / "c", models["cuda"], {"task": "fake", "classes": list("abcd"), "accuracy": {},
                                                      "params_hash": "", "seed": 0, "versions": {}})
    loaded, _ = load_checkpoint(tmp_path / "c", "cpu")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), models["cuda"].eval()(x.cuda()).cpu(), rtol=1e-4, atol=1e-4)


def test_fit_steps_runs_any_batch_step_and_stops_on_its_fit_accuracy():
    """The shared epoch loop: every sample once per epoch (ragged batch dropped), stats from the step's
    loss and hits, and the stop once fit_accuracy() reaches cfg.stop_at_train_accuracy."""
    from salbench.models.training import fit_steps

    model = torch.nn.Linear(1, 1)
    model.register_buffer("mean", torch.zeros(1))
    seen: list[torch.Tensor] = []

    def step(idx: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(idx)
        return model.weight.sum() * 0 + 2.0, (idx % 2 == 0).float()

    fits = iter([0.5, 0.9])
    hist = fit_steps(model, model, 10, step, lambda: next(fits),
                     TrainConfig(epochs=5, batch_size=4, stop_at_train_accuracy=0.8), seed=0)
    assert [h["epoch"] for h in hist] == [1, 2] and [h["fit_accuracy"] for h in hist] == [0.5, 0.9]
    assert all(h["loss"] == 2.0 for h in hist)
    assert len(seen) == 4 and all(len(i) == 4 for i in seen)  # 10 // 4 = 2 batches per epoch
    first = torch.cat(seen[:2])
    assert len(first.unique()) == 8 and hist[0]["train_accuracy"] == (first % 2 == 0).float().mean().item()
