"""VQA training on a tiny synthetic task: the loss falls, runs are deterministic, per-family accuracy and gates."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from salbench.models import (QuestionModel, Questions, TrainConfig, answer_accuracy, below_gates,
                             build_question_model, fit_questions, set_deterministic)
from salbench.models.vqa_training import grouped_order

PALETTE = np.array([(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 220, 40)], dtype=np.uint8)
FILM = dict(stem=(8, 16), blocks=2, embed_dim=8, question_dim=16, head=16, f=(16,))


def synthetic(n_images: int, seed: int) -> tuple[torch.Tensor, Questions]:
    """uint8 n×16×16×3 images, a colour patch in each half; two questions per image: token 1 = "colour of
    the left patch?" (family 0), token 2 = "... right patch?" (family 1); answer = the colour's index."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, len(PALETTE), size=(n_images, 2))
    images = np.full((n_images, 16, 16, 3), 90, dtype=np.uint8)
    images[:, 4:12, 1:7] = PALETTE[colours[:, 0]][:, None, None]
    images[:, 4:12, 9:15] = PALETTE[colours[:, 1]][:, None, None]
    side = np.tile([0, 1], n_images)
    q = Questions(image_index=torch.arange(n_images).repeat_interleave(2),
                  tokens=torch.from_numpy(np.stack([side + 1, np.zeros_like(side)], 1)).long(),
                  answer=torch.from_numpy(colours.reshape(-1)).long(), family=torch.from_numpy(side).long())
    return torch.from_numpy(images), q


def train(epochs: int, seed: int = 0, group: int = 1) -> tuple[QuestionModel, list[dict[str, float]]]:
    images, q = synthetic(48, 0)
    set_deterministic(seed)
    model = build_question_model("film", len(PALETTE), 3, 16, **FILM)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=0.01, weight_decay=0.0, flip=False, shift=1,
                      warmup_epochs=0.2)
    return model, fit_questions(model, images, q, cfg, seed, group=group)


@pytest.mark.parametrize("group", [1, 2])
def test_loss_falls_and_runs_are_deterministic(group: int) -> None:
    model, history = train(4, group=group)
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    again, history_again = train(4, group=group)
    assert history == history_again
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_grouped_training_runs_the_image_features_once_per_image() -> None:
    images, q = synthetic(48, 0)
    model = build_question_model("film", len(PALETTE), 3, 16, **FILM)
    seen = []
    model.cnn.register_forward_hook(lambda mod, inp, out: seen.append(len(out)) if mod.training else None)
    fit_questions(model, images, q, TrainConfig(epochs=1, batch_size=16, flip=False), 0, group=2)
    assert seen == [8] * 6  # 96 questions, 2 per image: batches of 16 questions about 8 images each
    seen.clear()
    fit_questions(model, images, q, TrainConfig(epochs=1, batch_size=16, flip=False), 0)
    assert seen == [16] * 6
    with pytest.raises(ValueError, match="group must be >= 1"):
        fit_questions(model, images, q, TrainConfig(epochs=1, flip=False), 0, group=0)


def test_grouped_order_keeps_each_images_questions_in_runs() -> None:
    image_index = torch.arange(30).repeat_interleave(4)[torch.randperm(120, generator=torch.Generator().manual_seed(0))]
    order = grouped_order(image_index, 4, torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == list(range(120))
    runs = image_index[order].view(30, 4)  # 4 questions per image, runs of 4: each image's questions together
    assert (runs == runs[:, :1]).all() and sorted(runs[:, 0].tolist()) == list(range(30))
    assert runs[:, 0].tolist() != sorted(runs[:, 0].tolist())  # the runs come in random order
    six = torch.arange(20).repeat_interleave(6)  # 6 questions per image: a run of 4 and one of 2
    where = torch.argsort(grouped_order(six, 4, torch.Generator().manual_seed(1)))  # position of each question
    for image in range(20):
        pos = torch.sort(where[six == image]).values
        blocks = torch.tensor_split(pos, torch.nonzero(torch.diff(pos) > 1).squeeze(1) + 1)
        assert sorted(len(b) for b in blocks) in ([2, 4], [6])  # [6]: its two runs happened to be adjacent
    assert torch.equal(order, grouped_order(image_index, 4, torch.Generator().manual_seed(1)))
    assert not torch.equal(order, grouped_order(image_index, 4, torch.Generator().manual_seed(2)))


def test_flips_are_refused() -> None:
    images, q = synthetic(4, 0)
    model = build_question_model("film", 4, 3, 16, **FILM)
    with pytest.raises(ValueError, match="left and right"):
        fit_questions(model, images, q, TrainConfig(epochs=1, flip=True), 0)


class Oracle(QuestionModel):
    """Answers the colour of the image's top-left pixel's channel argmax, for every question (a fixed rule)."""

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        left = images[:, :, 8, 3]  # the left patch's colour, whatever the question
        return -(left[:, None, :] * 255 - torch.from_numpy(PALETTE).float()[None]).abs().sum(2)


def test_answer_accuracy_per_family_and_gates() -> None:
    images, q = synthetic(20, 3)
    acc = answer_accuracy(Oracle(len(PALETTE), 3), images, q, ["left", "right"], batch_size=7)
    right = q.answer[1::2]
    same = (q.answer[0::2] == right).float().mean().item()  # the oracle is right on "right" iff both colours agree
    assert acc["left"] == 1.0 and acc["right"] == pytest.approx(same) and 0 < same < 1
    assert acc["all"] == pytest.approx((1 + same) / 2)
    sub = answer_accuracy(Oracle(len(PALETTE), 3), images, q.subset(torch.arange(0, 40, 2)), ["left", "right"])
    assert sub == {"all": 1.0, "left": 1.0}  # a family without questions is left out
    assert below_gates(acc, 0.5) == {}
    assert below_gates(acc, {"all": 0.5, "right": 0.99}) == {"right": (acc["right"], 0.99)}
    assert below_gates(sub, {"right": 0.1}) == {"right": (0.0, 0.1)}
