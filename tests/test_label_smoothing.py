"""Label smoothing (`label_smoothing=eps`): the loss is the cross-entropy against
(1 - eps) * target + eps / classes (Szegedy et al. 2016), for labels and mixup's soft targets."""

from __future__ import annotations

import pytest
import torch

from conftest import read_metrics
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.run import train

CLASSES = 5


def _module(eps: float) -> RegLabModule:
    model = {"layers": ["flatten"]}
    return RegLabModule(model, input_shape=[3], num_outputs=CLASSES, label_smoothing=eps)


def _paper_loss(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean over samples of -sum_c q_c log p_c with q = (1 - eps) * target + eps / C."""
    smoothed = (1 - eps) * target + eps / logits.shape[1]
    return -(smoothed * logits.log_softmax(dim=1)).sum(dim=1).mean()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_the_loss_is_cross_entropy_against_the_smoothed_labels(eps):
    torch.manual_seed(0)
    logits, labels = torch.randn(16, CLASSES), torch.randint(CLASSES, (16,))
    expected = _paper_loss(logits, torch.eye(CLASSES)[labels], eps)
    torch.testing.assert_close(_module(eps).loss(logits, labels), expected)


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_soft_targets_from_mixing_are_smoothed_the_same_way(eps):
    torch.manual_seed(1)
    logits = torch.randn(16, CLASSES)
    soft = torch.softmax(torch.randn(16, CLASSES), dim=1)  # e.g. mixup's convex combinations
    torch.testing.assert_close(_module(eps).loss(logits, soft), _paper_loss(logits, soft, eps))


def test_smoothing_raises_the_loss_of_a_confident_correct_prediction():
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0, 0.0]])
    label = torch.tensor([0])
    assert _module(0.2).loss(logits, label) > _module(0.0).loss(logits, label) + 1.0


def test_a_run_with_label_smoothing_trains_and_records_it(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=mlp",
        "label_smoothing=0.1",
        "augmentation=mixup",
        "trainer.max_epochs=3",
        "logger=none",
    )
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    assert metrics["test"]["test/acc"] > 0.8


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["label_smoothing=1.0"], "label_smoothing"),
        (["label_smoothing=-0.1"], "label_smoothing"),
        (["label_smoothing=abc"], "label_smoothing"),
        (["data=regression", "model=mlp", "label_smoothing=0.1"], "classification only"),
    ],
)
def test_bad_label_smoothing_is_refused_before_training(make_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        train(make_cfg(*overrides, "trainer.max_epochs=1"))
    assert str(error.value).startswith("label_smoothing")
    assert not (tmp_path / "run" / "metrics.json").exists()
