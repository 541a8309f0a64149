"""Batch augmentation: training batches only, the mixing maths, Beta-distributed lambda, errors."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import quiet_trainer, read_metrics
from reglab.callbacks import BatchAugmentation
from reglab.callbacks.batch_augmentation import cutmix, mixup
from reglab.data import DigitsDataModule
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.run import train


def _rows(t: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in t.reshape(len(t), -1)}


def test_only_training_batches_are_augmented():
    data = DigitsDataModule()
    seen: dict[str, list[torch.Tensor]] = {"train": [], "val": []}

    class Spy(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["train"].append(batch[0])

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if not trainer.sanity_checking:
                seen["val"].append(batch[0])

    module = RegLabModule({"layers": ["flatten"]}, [1, 8, 8], 10)
    trainer = quiet_trainer(
        max_epochs=1,
        callbacks=[BatchAugmentation(noise_std=0.5), Spy()],
    )
    trainer.fit(module, datamodule=data)
    train_rows, val_rows = (_rows(torch.cat(seen[s])) for s in ("train", "val"))
    assert not train_rows & _rows(data.splits["train"].x)  # every training sample was changed
    assert val_rows == _rows(data.splits["val"].x)  # validation saw the data untouched


def test_mixup_is_the_convex_combination():
    x, y = torch.randn(6, 3), torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    mx, my = mixup(x, y, 0.7, perm)
    torch.testing.assert_close(mx, 0.7 * x + 0.3 * x[perm])
    torch.testing.assert_close(my, 0.7 * y + 0.3 * y[perm])
    torch.testing.assert_close(my.sum(1), torch.ones(6))


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area():
    torch.manual_seed(3)
    x, y = torch.zeros(4, 1, 10, 10), torch.eye(4)
    x[1] = 1.0
    perm = torch.tensor([1, 0, 3, 2])
    mx, my = cutmix(x, y, 0.75, perm)
    pasted = mx[0].mean().item()  # sample 0 is zeros with a box of ones from sample 1
    assert 0 < pasted < 1
    torch.testing.assert_close(my[0], torch.tensor([1 - pasted, pasted, 0.0, 0.0]))
    torch.testing.assert_close(my.sum(1), torch.ones(4))


def test_lambda_follows_beta_not_uniform():
    torch.manual_seed(0)
    augmentation = BatchAugmentation(mixup_alpha=0.2)
    samples = torch.tensor([augmentation.sample_lambda() for _ in range(4000)])
    extreme = ((samples < 0.1) | (samples > 0.9)).float().mean().item()
    assert extreme > 0.55  # Beta(0.2, 0.2) puts ~64 % there; a uniform draw puts 20 %
    assert samples.mean().item() == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("option", ["image", "image_strong", "mixup", "cutmix"])
def test_image_options_train_and_log_a_grid(make_cfg, tmp_path, option):
    train(make_cfg("model=cnn", f"augmentation={option}", "trainer.max_epochs=2"))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["test"]["test/acc"] > 0.3
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Tags()["images"] == ["augmentation/train_batch"]
    assert len(events.Images("augmentation/train_batch")) == 1  # once per run


def test_noise_on_regression(make_cfg, tmp_path):
    train(make_cfg("model=mlp", "data=regression", "augmentation=noise", "trainer.max_epochs=2"))
    assert read_metrics(tmp_path / "run")["test"]["test/r2"] > 0.5


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.layout=flat", "augmentation=image"], "augmentation"),
        (["data=moons", "augmentation=cutmix"], "augmentation"),
        (["data=regression", "augmentation=mixup"], "augmentation"),
        (["augmentation=image", "augmentation.flip=1.5"], "augmentation.flip"),
        (["augmentation=noise", "augmentation.noise_std=-1"], "augmentation.noise_std"),
    ],
)
def test_augmentation_that_does_not_fit_fails_before_training(make_cfg, tmp_path, overrides, key):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", *overrides))
    assert error.value.key == key
    assert not (tmp_path / "run" / "metrics.json").exists()
