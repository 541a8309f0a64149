"""Dropout and eval-mode control: schedules, MC dropout, BatchNorm freezing, the audit."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from conftest import compose_config, quiet_trainer, read_metrics
from reglab.callbacks import DropoutSchedule, EvalModeAudit, FreezeBatchNorm, MCDropout
from reglab.config import plain
from reglab.data import DigitsDataModule
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.nn.modes import dropout_modules, mc_predict
from reglab.run import run_one, train

# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"schedule": "constant", "p": 0.3}, [0.3, 0.3, 0.3, 0.3, 0.3, 0.3]),
        (
            {"schedule": "linear", "p_start": 0.0, "p_end": 0.5, "epochs": 6},
            [0, 0.1, 0.2, 0.3, 0.4, 0.5],
        ),
        (
            {"schedule": "step", "p": 0.4, "step_size": 2, "gamma": 0.5},
            [0.4, 0.4, 0.2, 0.2, 0.1, 0.1],
        ),
        ({"schedule": "early", "p": 0.3, "switch_epoch": 2}, [0.3, 0.3, 0, 0, 0, 0]),
        ({"schedule": "late", "p": 0.3, "switch_epoch": 4}, [0, 0, 0, 0, 0.3, 0.3]),
    ],
    ids=lambda v: v["schedule"] if isinstance(v, dict) else None,
)
def test_schedule_values(kwargs, expected):
    schedule = DropoutSchedule(**kwargs)
    assert [schedule.p_at(epoch) for epoch in range(6)] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"p": 1.0}, "p"),
        ({"p": -0.1}, "p"),
        ({"p_end": 1.2}, "p_end"),
        ({"schedule": "cosine"}, "schedule"),
        ({"switch_epoch": -1}, "switch_epoch"),
        ({"epochs": 0}, "epochs"),
        ({"gamma": 1.5}, "gamma"),
        ({"swich_epoch": 3}, "swich_epoch"),  # a typo: no schedule takes it
    ],
)
def test_bad_schedule_values(kwargs, key):
    with pytest.raises(ConfigError) as error:
        DropoutSchedule(**kwargs)
    assert error.value.key == key


def test_schedule_sets_every_kind_of_dropout_layer_each_epoch(tmp_path):
    spec = {
        "layers": [
            {"conv3d": {"out_channels": 2, "kernel_size": 1}},
            "dropout3d",
            "flatten",
            {"linear": {"out_features": 8}},
            "dropout",
            "selu",
            "alpha_dropout",
        ]
    }
    module = RegLabModule(spec, [1, 2, 2, 2], 3)
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen.append({type(m).__name__: m.p for m in dropout_modules(pl_module)})

    from reglab.data import VolumesDataModule

    trainer = quiet_trainer(
        max_epochs=4,
        callbacks=[DropoutSchedule("linear", p_start=0.0, p_end=0.3, epochs=4), Record()],
    )
    trainer.fit(module, datamodule=VolumesDataModule(n_samples=60, size=2))
    assert [set(row) for row in seen] == [{"Dropout3d", "Dropout", "AlphaDropout"}] * 4
    for epoch, row in enumerate(seen):
        assert all(p == pytest.approx(0.1 * epoch) for p in row.values())


def test_schedule_in_a_run_logs_p(tmp_path):
    cfg = compose_config(
        [
            "model=mlp",
            "dropout=schedule",
            "dropout.schedule=early",
            "dropout.switch_epoch=2",
            "trainer.max_epochs=3",
        ],
        tmp_path / "run",
    )
    train(cfg)
    history = read_metrics(tmp_path / "run")["history"]
    assert [row["dropout/p"] for row in history] == pytest.approx([0.5, 0.5, 0.0])


def test_schedule_without_dropout_layers_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="no dropout layer"):
        train(make_cfg("model=fit_tanh", "data=function", "dropout=schedule"))


# --- MC dropout ----------------------------------------------------------------------------------


def _trained(model: str, tmp_path) -> tuple[RegLabModule, DigitsDataModule]:
    cfg = compose_config(
        [f"model={model}", "trainer.max_epochs=2", "logger=none"], tmp_path / model
    )
    train(cfg)
    module = RegLabModule.load_from_checkpoint(read_metrics(tmp_path / model)["best_checkpoint"])
    return module, DigitsDataModule()


@pytest.mark.parametrize(("model", "layer"), [("selu_net", nn.AlphaDropout), ("cnn", nn.Dropout2d)])
def test_mc_passes_differ_in_test_and_batchnorm_stats_stay(tmp_path, model, layer):
    module, data = _trained(model, tmp_path)
    assert any(isinstance(m, layer) for m in module.modules())
    buffers = {
        k: v.clone() for k, v in module.state_dict().items() if "running" in k or "tracked" in k
    }
    modes_before = [m.training for m in module.modules()]
    trainer = quiet_trainer()
    plain = trainer.test(module, datamodule=data, verbose=False)[0]
    trainer = quiet_trainer(callbacks=[MCDropout(10)])
    with_mc = trainer.test(module, datamodule=data, verbose=False)[0]
    assert with_mc["test/mc_spread"] > 1e-4  # the passes differ
    assert 0 < with_mc["test/mc_entropy"] <= torch.log(torch.tensor(10.0)).item()
    assert with_mc["test/acc"] == plain["test/acc"]  # the deterministic metric is untouched
    for name, value in buffers.items():
        assert torch.equal(module.state_dict()[name], value), name
    assert [m.training for m in module.modules()] == modes_before  # MC restored every mode

    x = data.splits["test"].x[:16]
    passes = mc_predict(module.net, x, 3)
    assert not torch.allclose(passes[0], passes[1])


def test_mc_predict_is_the_mean_of_dropout_on_passes_and_trainer_predict_is_deterministic(
    tmp_path,
):
    module, data = _trained("cnn", tmp_path)
    plain_predictions = torch.cat(quiet_trainer().predict(module, datamodule=data))
    # trainer.predict is deterministic, with or without the MC-dropout callback.
    with_mc = torch.cat(quiet_trainer(callbacks=[MCDropout(8)]).predict(module, datamodule=data))
    torch.testing.assert_close(with_mc, plain_predictions)
    data.setup("predict")
    first_batch = next(iter(data.predict_dataloader()))[0]
    module.eval()
    torch.manual_seed(0)
    averaged = mc_predict(module.net, first_batch, 8).mean(0)
    assert not any(m.training for m in module.modules())  # mc_predict restored every mode
    assert averaged.shape == plain_predictions[: len(first_batch)].shape
    torch.testing.assert_close(averaged.sum(1), torch.ones(len(averaged)))
    assert (averaged - plain_predictions[: len(first_batch)]).abs().max() > 1e-3  # dropout was on
    # Same seed, same passes: the MC prediction is exactly the mean of manual dropout-on passes.
    torch.manual_seed(0)
    for layer in dropout_modules(module.net):
        layer.train()
    with torch.no_grad():
        manual = torch.stack([module.net(first_batch).softmax(-1) for _ in range(8)]).mean(0)
    module.eval()
    torch.testing.assert_close(averaged, manual)
    again = torch.cat(quiet_trainer().predict(module, datamodule=data))
    torch.testing.assert_close(again, plain_predictions)  # deterministic afterwards


def test_mc_in_a_run_logs_val_and_test(make_cfg, tmp_path):
    train(make_cfg("model=mlp", "dropout=mc", "dropout.samples=4", "trainer.max_epochs=2"))
    metrics = read_metrics(tmp_path / "run")
    assert {"val/mc_acc", "val/mc_entropy"} <= set(metrics["final"])
    assert {"test/mc_acc", "test/mc_loss", "test/mc_entropy", "test/mc_spread"} <= set(
        metrics["test"]
    )


def test_mc_samples_at_the_model_dropout_p_in_training_and_evaluation(make_cfg, tmp_path):
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.extend(m.p for m in dropout_modules(pl_module))

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen.extend(m.p for m in dropout_modules(pl_module))

    cfg = make_cfg("model=mlp", "model.dropout=0.3", "dropout=mc")
    cfg.trainer.max_epochs = 1
    run_one(cfg, extra_callbacks=[Record()])
    assert seen and all(p == 0.3 for p in seen)
    assert read_metrics(tmp_path / "run")["test"]["test/mc_spread"] > 0  # p = 0 would give 0


def test_bad_mc_values(make_cfg):
    with pytest.raises(ConfigError, match="samples"):
        MCDropout(samples=1)
    with pytest.raises(ConfigError, match=r"stages\[1\]"):
        MCDropout(stages=["val", "predict"])  # trainer.predict is deterministic; see mc_predict
    with pytest.raises(TypeError):
        MCDropout(p=0.3)  # MC samples at the model's p (model.dropout); dropout.p is a schedule's
    with pytest.raises(ConfigError, match="dropout: MC dropout needs a model with dropout"):
        train(make_cfg("model=fit_tanh", "data=function", "dropout=mc"))
    with pytest.raises(ConfigError, match="classification"):
        train(make_cfg("model=mlp", "data=regression", "dropout=mc"))


# --- BatchNorm freezing ---------------------------------------------------------------------------


@pytest.mark.parametrize("freeze_affine", [False, True])
def test_freeze_bn_stops_running_stats_and_survives_validation(make_cfg, freeze_affine):
    cfg = make_cfg("model=mlp", "model.norm=batch_norm1d")
    module = RegLabModule(plain(cfg.model), [64], 10)
    snapshots, modes = [], []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            bn = pl_module.net.block_1.batch_norm1d
            snapshots.append((bn.running_mean.clone(), bn.weight.detach().clone()))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append((trainer.current_epoch, pl_module.net.block_1.batch_norm1d.training))

    trainer = quiet_trainer(
        max_epochs=4,
        callbacks=[FreezeBatchNorm(switch_epoch=2, freeze_affine=freeze_affine), Record()],
    )
    trainer.fit(module, datamodule=DigitsDataModule(layout="flat"))
    assert not torch.equal(snapshots[0][0], snapshots[1][0])  # moving before the freeze
    assert torch.equal(snapshots[1][0], snapshots[2][0]) and torch.equal(
        snapshots[2][0], snapshots[3][0]
    )
    assert all(training == (epoch < 2) for epoch, training in modes)
    assert torch.equal(snapshots[1][1], snapshots[3][1]) == freeze_affine


def test_freeze_bn_needs_batchnorm(make_cfg):
    with pytest.raises(ConfigError, match="BatchNorm"):
        train(make_cfg("model=selu_net", "batchnorm=freeze"))
    with pytest.raises(ConfigError) as error:
        FreezeBatchNorm(switch_epoch=-1)
    assert error.value.key == "switch_epoch"


# --- the audit -------------------------------------------------------------------------------------


def test_audit_catches_dropout_left_on_in_validation():
    class ForgetsEval(L.Callback):
        def on_validation_epoch_start(self, trainer, pl_module):
            pl_module.train()  # a buggy hook: dropout on during validation

    module = RegLabModule(
        {"layers": ["flatten", {"linear": {"out_features": 8}}, "dropout"]}, [64], 10
    )
    trainer = quiet_trainer(
        max_epochs=1,
        callbacks=[ForgetsEval(), EvalModeAudit()],
    )
    with pytest.raises(
        RuntimeError,
        match=r"validation ran with modules in train mode .*: \(root\), flatten, linear, dropout",
    ):
        trainer.fit(module, datamodule=DigitsDataModule(layout="flat"))


# --- the overfitting fixture: dropout narrows the gap ------------------------------------------------


@pytest.mark.slow  # about 20 s or more; CI runs the slow tests
@pytest.mark.parametrize("seed", [0, 1])
def test_dropout_narrows_the_train_val_gap_under_label_noise(tmp_path, seed):
    finals = {}
    for p in (0.0, 0.5):
        run_dir = tmp_path / f"p{p}"
        cfg = compose_config(
            [
                "model=mlp",
                "model.width=512",
                f"model.dropout={p}",
                "data.label_noise=0.3",
                "early_stopping=none",
                "trainer.max_epochs=60",
                "logger=none",
                f"seed={seed}",
            ],
            run_dir,
        )
        train(cfg)
        finals[p] = read_metrics(run_dir)["final"]
    gap = {p: f["train/acc"] - f["val/acc"] for p, f in finals.items()}
    assert gap[0.5] < gap[0.0] - 0.05, gap
    assert finals[0.5]["val/acc"] > finals[0.0]["val/acc"] + 0.01, finals
