"""Batch augmentation: training batches only, the mixing maths, Beta-distributed lambda, errors.

Augmentation on sequences (N, T, F) and token ids (N, T): noise and mixup act on float
sequences; image ops and cutmix on sequences, and every op on token ids, are refused before
training with one line naming the op and the data.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import compose_config, quiet_trainer, read_metrics, run_train_py
from reglab.augment import MIXES, cutmix, mixup
from reglab.callbacks import BatchAugmentation
from reglab.data import DigitsDataModule
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.run import run_one, train


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
    augmentation = BatchAugmentation(ops=[{"noise": {"std": 0.5}}])
    data.train_batch_transform = augmentation  # as reglab.run hands it over
    trainer = quiet_trainer(max_epochs=1, callbacks=[augmentation, Spy()])
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
    mixing = MIXES.get("mixup").build((3,), alpha=0.2)
    samples = torch.tensor([mixing.sample_lambda() for _ in range(4000)])
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
    assert events.Tags()["images"] == ["watch/augmentation"]
    assert len(events.Images("watch/augmentation")) == 1  # once per run


def test_noise_on_regression(make_cfg, tmp_path):
    train(make_cfg("model=mlp", "data=regression", "augmentation=noise", "trainer.max_epochs=2"))
    assert read_metrics(tmp_path / "run")["test"]["test/r2"] > 0.5


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["data.layout=flat", "augmentation=image"], "augmentation.ops[0]"),
        (["data=moons", "augmentation=cutmix"], "augmentation.mix"),
        (["data=regression", "augmentation=mixup"], "augmentation.mix"),
        (
            ["augmentation=image", "augmentation.ops=[{flip: {p: 1.5}}]"],
            "augmentation.ops[0].flip.p",
        ),
        (
            ["augmentation=noise", "augmentation.ops.0.noise.std=-1"],
            "augmentation.ops[0].noise.std",
        ),
        (
            ["augmentation=image", "augmentation.ops=[{noise: {}}, {crop: {pad: 1}}]"],
            "augmentation.ops[1].crop",
        ),
        (["augmentation=image", "augmentation.ops=[{spin: {}}]"], "augmentation.ops[0]"),
        (["augmentation=mixup", "augmentation.mix.mixup.alpha=0"], "augmentation.mix.mixup.alpha"),
    ],
)
def test_augmentation_that_does_not_fit_fails_before_training(make_cfg, tmp_path, overrides, key):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", *overrides))
    assert error.value.key == key
    assert not (tmp_path / "run" / "metrics.json").exists()


class _Model(L.LightningModule):
    """Just what BatchAugmentation.check reads: hparams input_shape/num_outputs and task."""

    def __init__(self, input_shape: list[int], num_outputs: int = 3, task: str = "classification"):
        super().__init__()
        self.save_hyperparameters()
        self.task = task


def test_ops_run_in_the_listed_order_then_the_mix():
    augmentation = BatchAugmentation(
        ops=[{"rotation": {"degrees": 10}}, {"crop": {"padding": 2}}, {"noise": {"std": 0.1}}],
        mix={"mixup": {"alpha": 0.2}},
    )
    augmentation.check(_Model([1, 8, 8]))
    kinds = [type(m).__name__ for m in augmentation.pipeline]
    assert kinds == ["RandomRotation", "RandomCrop", "GaussianNoise"]
    crop = augmentation.pipeline[1].flags
    assert (crop["size"], crop["padding"]) == ((8, 8), 2)  # crop size from the input shape
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    mx, my = augmentation((x, y))
    assert mx.shape == x.shape and my.shape == (5, 3)
    torch.testing.assert_close(my.sum(1), torch.ones(5))  # soft targets, one unit of mass each


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"ops": [{"rotation": {"degrees": 10}}, {"crop": {"pad": 1}}]}, "ops[1].crop"),
        ({"ops": [{"spin": {}}]}, "ops[0]"),
        ({"ops": [{"flip": {}, "crop": {}}]}, "ops[0]"),
        ({"ops": {"flip": {}}}, "ops"),
        ({"mix": {"blend": {"alpha": 1}}}, "mix"),
        ({"mix": {"cutmix": {"beta": 1}}}, "mix.cutmix"),
    ],
)
def test_a_bad_op_is_refused_at_construction_by_its_place(kwargs, key):
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(**kwargs)
    assert error.value.key == key


@pytest.mark.parametrize(
    ("kwargs", "model", "key"),
    [
        ({"ops": [{"noise": {}}, {"erasing": {}}]}, _Model([64]), "ops[1]"),
        ({"mix": {"cutmix": {}}}, _Model([64]), "mix"),
        ({"mix": {"mixup": {}}}, _Model([4], 1, "regression"), "mix"),
        ({"ops": [{"rotation": {"degrees": 200}}]}, _Model([1, 8, 8]), "ops[0].rotation.degrees"),
    ],
)
def test_check_refuses_ops_that_do_not_fit_the_model(kwargs, model, key):
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(**kwargs).check(model)
    assert error.value.key == key


def test_noise_alone_works_on_flat_data():
    augmentation = BatchAugmentation(ops=[{"noise": {"std": 0.5}}])
    augmentation.check(_Model([4], 1, "regression"))
    x, y = torch.zeros(6, 4), torch.zeros(6, 1)
    mx, my = augmentation((x, y))
    assert (mx != 0).all() and my is y


# --- sequences and tokens -------------------------------------------------------------------------


class _SequenceModel(L.LightningModule):
    """What BatchAugmentation.check reads: hparams input_shape/num_outputs/input_dtype and task."""

    def __init__(self, input_shape: list[int], input_dtype: str = "float32", num_outputs: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.task = "classification"


SEQUENCES = _SequenceModel([8, 8])
TOKENS = _SequenceModel([64], "int64")


def test_noise_acts_on_float_sequences():
    augmentation = BatchAugmentation(ops=[{"noise": {"std": 0.5}}])
    augmentation.check(SEQUENCES)
    x, y = torch.zeros(256, 8, 8), torch.zeros(256, dtype=torch.long)
    torch.manual_seed(0)
    mx, my = augmentation((x, y))
    assert mx.shape == x.shape and my is y
    assert mx.std().item() == pytest.approx(0.5, rel=0.05)
    assert mx.mean().item() == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_mixup_acts_on_float_sequences(mode):
    augmentation = BatchAugmentation(mix={"mixup": {"alpha": 1.0, "mode": mode}})
    augmentation.check(SEQUENCES)
    x, y = torch.randn(7, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    torch.manual_seed(1)
    draw = augmentation.mixing.draw(x)
    torch.manual_seed(1)
    mx, my = augmentation((x, y))
    lam, partner = draw.lam.view(-1, 1, 1), draw.partner
    torch.testing.assert_close(mx, lam * x + (1 - lam) * x[partner])
    onehot = torch.eye(3)[y]
    torch.testing.assert_close(my, lam[:, :, 0] * onehot + (1 - lam[:, :, 0]) * onehot[partner])


IMAGE_OPS = ["flip", "rotation", "crop", "erasing"]


@pytest.mark.parametrize("name", IMAGE_OPS)
def test_image_ops_on_sequences_are_refused_naming_the_op_and_shape(name):
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(ops=[{"noise": {}}, {name: {}}]).check(SEQUENCES)
    assert error.value.key == "ops[1]"
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"ops[1]: {name} needs images (C, H, W)")
    assert "sequences (T, F) = (8, 8)" in message


@pytest.mark.parametrize("name", ["cutmix", "mixup_cutmix"])
def test_cutmix_on_sequences_is_refused(name):
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(mix={name: {}}).check(SEQUENCES)
    assert error.value.key == "mix"
    assert f"{name} needs images" in str(error.value)
    assert "sequences (T, F) = (8, 8)" in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "key", "name"),
    [
        ({"ops": [{"noise": {"std": 0.1}}]}, "ops[0]", "noise"),
        ({"ops": [{"rotation": {}}]}, "ops[0]", "rotation"),
        ({"mix": {"mixup": {}}}, "mix", "mixup"),
        ({"mix": {"cutmix": {}}}, "mix", "cutmix"),
        ({"mix": {"mixup_cutmix": {}}}, "mix", "mixup_cutmix"),
    ],
)
def test_any_op_or_mixing_on_token_ids_is_refused(kwargs, key, name):
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(**kwargs).check(TOKENS)
    assert error.value.key == key
    message = str(error.value)
    assert "\n" not in message
    assert f"{name} changes input values and cannot act on token ids" in message
    assert "int64 token ids of shape (64,)" in message


def test_nothing_to_do_on_token_ids_is_fine():
    augmentation = BatchAugmentation()
    augmentation.check(TOKENS)
    x, y = torch.randint(17, (4, 64)), torch.tensor([0, 1, 2, 0])
    mx, my = augmentation((x, y))
    assert torch.equal(mx, x) and my is y


# --- sequences and tokens: through the config -----------------------------------------------------

REFUSED = [
    (["data.layout=sequence", "model=lstm_net", "augmentation=image"], "augmentation.ops[0]"),
    (["data.layout=sequence", "model=lstm_net", "augmentation=cutmix"], "augmentation.mix"),
    (["data.layout=tokens", "model=transformer_net", "augmentation=noise"], "augmentation.ops[0]"),
    (["data.layout=tokens", "model=transformer_net", "augmentation=mixup"], "augmentation.mix"),
]


@pytest.mark.parametrize(("overrides", "key"), REFUSED, ids=[" ".join(r[0]) for r in REFUSED])
def test_the_config_refuses_before_training(tmp_path, overrides, key):
    with pytest.raises(ConfigError) as error:
        train(compose_config(["data=digits", *overrides], tmp_path / "run"))
    assert error.value.key == key
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not list((tmp_path / "run").rglob("*.ckpt"))


class _BatchSpy(L.Callback):
    """The training batches as the model receives them (after augmentation)."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((batch[0].detach().cpu(), batch[1].detach().cpu()))


def test_noise_and_mixup_on_sequences_train_through_the_config(tmp_path):
    spy = _BatchSpy()
    cfg = compose_config(
        [
            "data=digits",
            "data.layout=sequence",
            "model=mlp",
            "model.width=32",
            "augmentation=mixup",
            "augmentation.ops=[{noise: {std: 0.1}}]",
            "augmentation.mix.mixup.mode=elem",
            "augmentation.mix.mixup.alpha=1.0",
            "trainer.max_epochs=1",
            "logger=none",
        ],
        tmp_path / "run",
    )
    run_one(cfg, extra_callbacks=[spy])
    xs, ys = zip(*spy.batches, strict=True)
    assert all(x.shape[1:] == (8, 8) and x.dtype == torch.float32 for x in xs)
    targets = torch.cat(ys)
    assert targets.shape[1] == 10  # soft targets
    torch.testing.assert_close(targets.sum(1), torch.ones(len(targets)))
    # prob 1: every sample mixed, with a partner of another class 9 times in 10
    assert (targets.amax(1) < 1).float().mean() > 0.8


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_train_py_refuses_image_ops_on_sequences_in_one_line(tmp_path):
    result = run_train_py(
        ["data.layout=sequence", "model=mlp", "augmentation=image", "logger=none"], tmp_path
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("reglab:")]
    assert lines == [
        "reglab: error: augmentation.ops[0]: rotation needs images (C, H, W); the inputs are "
        "sequences (T, F) = (8, 8): use augmentation=noise, mixup or none (or data.layout=image)"
    ], result.stderr
    assert "Traceback" not in result.stderr
