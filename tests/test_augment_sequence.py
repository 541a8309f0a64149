"""Augmentation on sequences (N, T, F) and token ids (N, T): noise and mixup act on float
sequences; image ops and cutmix on sequences, and every op on token ids, are refused before
training with one line naming the op and the data."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from conftest import compose_config, run_train_py
from reglab.callbacks import BatchAugmentation
from reglab.errors import ConfigError
from reglab.run import run_one, train


class _Model(L.LightningModule):
    """What BatchAugmentation.check reads: hparams input_shape/num_outputs/input_dtype and task."""

    def __init__(self, input_shape: list[int], input_dtype: str = "float32", num_outputs: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.task = "classification"


SEQUENCES = _Model([8, 8])
TOKENS = _Model([64], "int64")


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


# --- through the config ----------------------------------------------------------------------------

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
