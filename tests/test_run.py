"""End-to-end runs composed in-process: what `python train.py ...` does, minus the subprocess."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import read_metrics
from reglab.config import plain
from reglab.errors import ConfigError, TrainingDiverged
from reglab.module import RegLabModule
from reglab.run import train


def test_selu_net_default_run_reaches_95_percent_and_writes_everything(make_cfg, tmp_path):
    cfg = make_cfg()  # the default: model=selu_net on digits
    objective = train(cfg)
    run_dir = tmp_path / "run"
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "ok"
    assert metrics["test"]["test/acc"] >= 0.95
    assert metrics["epochs_run"] == len(metrics["history"]) <= cfg.trainer.max_epochs
    if (
        metrics["stopped_epoch"] is not None
    ):  # early stopping (early_stopping=val_loss, the default)
        assert metrics["epochs_run"] == metrics["stopped_epoch"]  # epochs count from 1
        assert metrics["stopped_epoch"] - metrics["best_epoch"] == cfg.early_stopping.patience
    assert metrics["best_val/loss"] == metrics["best"]["val/loss"]
    assert objective == pytest.approx(metrics["best"]["val/loss"])
    best_losses = [row["val/loss"] for row in metrics["history"]]
    assert metrics["best"]["val/loss"] == min(best_losses)
    assert metrics["best_epoch"] == best_losses.index(min(best_losses)) + 1
    assert Path(metrics["best_checkpoint"]).is_file()
    assert Path(metrics["best_checkpoint"]).name == f"epoch_{metrics['best_epoch']:03d}.ckpt"
    assert metrics["versions"]["torch"] == torch.__version__
    assert len(metrics["config_digest"]) == 64

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    # train/ and val/ are written as Train/ and Val/ so that TensorBoard shows them first.
    for tag in ("Train/loss", "Train/acc", "Val/loss", "Val/acc", "test/loss", "test/acc"):
        assert tag in scalars, f"{tag} missing from TensorBoard: {sorted(scalars)}"
    assert len(events.Scalars("Val/loss")) == metrics["epochs_run"]


def test_test_metrics_come_from_the_best_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("model=mlp", "trainer.max_epochs=6", "optimizer.lr=0.01")
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    module = RegLabModule.load_from_checkpoint(metrics["best_checkpoint"], weights_only=True)
    module.eval()
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    test = datamodule.splits["test"]
    with torch.no_grad():
        logits = module(test.x)
    accuracy = (logits.argmax(1) == test.y).float().mean().item()
    loss = torch.nn.functional.cross_entropy(logits, test.y).item()
    assert metrics["test"]["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test"]["test/loss"] == pytest.approx(loss, rel=1e-5)


def test_fit_tanh_fits_the_function(make_cfg, tmp_path):
    train(make_cfg("model=fit_tanh", "data=function"))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["test"]["test/r2"] >= 0.95
    assert {"test/mse", "test/mae", "test/r2"} <= set(metrics["test"])


def test_same_seed_same_numbers_on_cpu(tmp_path):
    from conftest import compose_config

    runs = []
    for name in ("a", "b"):
        cfg = compose_config(["model=mlp", "trainer.max_epochs=2", "logger=none"], tmp_path / name)
        train(cfg)
        runs.append(read_metrics(tmp_path / name))
    assert runs[0]["history"] == runs[1]["history"]
    assert runs[0]["test"] == runs[1]["test"]
    assert runs[0]["config_digest"] == runs[1]["config_digest"]


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=cnn"],
        ["model=mlp", "model.activation=mish", "model.norm=layer_norm"],
        ["model=mlp", "model.activation=swish", "model.norm=batch_norm1d", "optimizer=sgd"],
        ["model=gated", "optimizer=adamw", "scheduler=cosine"],
        ["model=conv3d", "data=volumes", "scheduler=step"],
        ["model=mlp", "data=moons", "scheduler=plateau", "logger=csv"],
        # The model summary and activation monitor feed the net inputs of the net's own dtype.
        ["model=cnn", "trainer.precision=64-true", "dropout=mc", "dropout.samples=2"],
        ["model=mlp", "trainer.precision=bf16-mixed", "trainer.accumulate_grad_batches=2"],
        ["model=mlp", "data=regression", "callbacks=none", "logger=none"],
    ],
    ids=lambda o: " ".join(o),
)
def test_models_data_and_optimizers_run_end_to_end(make_cfg, tmp_path, overrides):
    train(make_cfg(*overrides, "trainer.max_epochs=2"))
    metrics = read_metrics(tmp_path / "run")
    assert metrics["epochs_run"] == 2
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics["test"].values())
    if "data=regression" in overrides:
        # callbacks=none: Lightning's default checkpoint keeps the last epoch; test uses it.
        assert Path(metrics["best_checkpoint"]).name.startswith("epoch=1-")


def test_mlp_knobs_change_the_net(make_cfg):
    cfg = make_cfg("model=mlp", "model.activation=mish", "model.norm=layer_norm", "model.depth=3")
    module = RegLabModule(plain(cfg.model), [1, 8, 8], 10)
    kinds = [type(m).__name__ for m in module.net.modules()]
    assert kinds.count("Mish") == 3 and kinds.count("LayerNorm") == 3
    assert kinds.count("Dropout") == 3


def test_weight_decay_spares_biases_and_norm_parameters(make_cfg):
    cfg = make_cfg("model=mlp", "model.norm=batch_norm1d", "optimizer=adamw")
    module = RegLabModule(plain(cfg.model), [64], 10, optimizer=plain(cfg.optimizer))
    optimizer = module.configure_optimizers()
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, parameter in module.net.named_parameters():
        assert (id(parameter) in decayed) == (parameter.ndim > 1), name
    assert optimizer.param_groups[0]["weight_decay"] == cfg.optimizer.weight_decay


@pytest.mark.parametrize(
    ("optimizer", "default_lr"), [("adam", 1e-3), ("adamw", 1e-3), ("sgd", 0.05)]
)
def test_model_suggested_lr_is_used_unless_overridden(make_cfg, optimizer, default_lr):
    assert make_cfg("model=fit_tanh", f"optimizer={optimizer}").optimizer.lr == 1e-2
    assert make_cfg("model=selu_net", f"optimizer={optimizer}").optimizer.lr == default_lr
    overridden = make_cfg("model=fit_tanh", f"optimizer={optimizer}", "optimizer.lr=0.5")
    assert overridden.optimizer.lr == 0.5
    module = RegLabModule(
        plain(overridden.model), [1], 1, "regression", plain(overridden.optimizer)
    )
    assert module.configure_optimizers().param_groups[0]["lr"] == 0.5


def test_fast_dev_run_keeps_no_outputs(make_cfg, tmp_path):
    cfg = make_cfg("debug=fdr")
    train(cfg)
    assert not (tmp_path / "run").exists()


def test_debug_profiler_writes_its_reports_into_the_run_folder(make_cfg, tmp_path):
    train(make_cfg("debug=profiler", "model=mlp", "model.width=16"))
    report = (tmp_path / "run" / "fit-profiler.txt").read_text()
    assert report.startswith("FIT Profiler Report") and "run_training_epoch" in report
    assert "TEST Profiler Report" in (tmp_path / "run" / "test-profiler.txt").read_text()
    assert read_metrics(tmp_path / "run")["epochs_run"] == 1


def test_what_lightning_warns_about_the_model_summary_is_noted_in_its_file(
    make_cfg, tmp_path, caplog
):
    cfg = make_cfg("trainer.precision=bf16-mixed", "model=mlp", "model.width=16")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # a warning shown earlier in this process shows again
        train(cfg)  # a run routes warnings into logging (captureWarnings): caplog sees them
    assert not [r for r in caplog.records if "model summary" in r.getMessage()]
    summary = (tmp_path / "run" / "model_summary.txt").read_text()
    assert "Trainable params" in summary
    assert "note: Precision bf16-mixed is not supported by the model summary" in summary


def test_the_header_gives_drawn_values_in_four_significant_digits(make_cfg, tmp_path):
    from reglab.build import build_data_and_model
    from reglab.summary import header

    cfg = make_cfg(
        "model=mlp",
        "optimizer.lr=0.00040246996870051696",
        "regularization=l2",
        "regularization.strength=0.0001757746859548628",
    )
    lines = header(cfg, *reversed(build_data_and_model(cfg)))
    assert " lr 0.0004025, seed 42" in lines[0]
    assert " (strength 0.0001758)" in lines[1]
    assert lines[2] == f"reglab: run folder {tmp_path / 'run'}"


@pytest.mark.parametrize("early_stopping", ["val_loss", "none"])
def test_a_diverged_run_fails_and_writes_no_metrics(make_cfg, tmp_path, early_stopping):
    cfg = make_cfg(
        "model=mlp", "optimizer=sgd", "optimizer.lr=1e6", f"early_stopping={early_stopping}"
    )
    cfg.trainer.max_epochs = 3
    with pytest.raises(TrainingDiverged, match=r"diverged at epoch 1 \(train/loss = nan"):
        train(cfg)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_optimized_metric_lookup(make_cfg, tmp_path):
    value = train(make_cfg("model=mlp", "trainer.max_epochs=1", "optimized_metric=test/acc"))
    assert value == read_metrics(tmp_path / "run")["test"]["test/acc"]
    with pytest.raises(ConfigError, match="optimized_metric"):
        train(make_cfg("model=mlp", "trainer.max_epochs=1", "optimized_metric=best/val/nope"))


def test_metrics_json_is_plain_json(make_cfg, tmp_path):
    train(make_cfg("model=mlp", "trainer.max_epochs=1", "logger=none"))
    text = (tmp_path / "run" / "metrics.json").read_text()
    assert json.loads(text)["final"]["epoch"] == 1  # the first epoch
    assert not (tmp_path / "run" / "metrics.json.tmp").exists()


def test_tensorboard_graph_and_per_step_loss_are_opt_in(make_cfg, tmp_path):
    cfg = make_cfg(
        "model=mlp",
        "trainer.max_epochs=1",
        "logger.tensorboard.log_graph=true",
        "log_every_step=true",
    )
    train(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    steps = events.Scalars("Train/loss_step")
    assert len(steps) >= 1
    assert events.Tags()["graph"] is True
    assert any(node.name.startswith("RegLabModule") for node in events.Graph().node)


def test_resume_from_checkpoint_continues_exactly(tmp_path):
    from conftest import compose_config

    common = ["model=mlp", "model.dropout=0.0", "logger=none"]
    straight = compose_config([*common, "trainer.max_epochs=4"], tmp_path / "straight")
    train(straight)
    first = compose_config(
        [*common, "trainer.max_epochs=2", "callbacks.model_checkpoint.save_last=true"],
        tmp_path / "first",
    )
    train(first)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = compose_config(
        [*common, "trainer.max_epochs=4", f"ckpt_path={last}"], tmp_path / "resumed"
    )
    train(resumed)
    expected = read_metrics(tmp_path / "straight")["history"]
    got = read_metrics(tmp_path / "resumed")["history"]
    assert [row["epoch"] for row in got] == [1, 2, 3, 4]
    # The checkpoint of epoch 1 was written before Lightning published its train metrics: the
    # history takes them from the module, so every row is whole.
    for want, have in zip(expected, got, strict=True):
        assert set(have) == set(want)
        assert have == pytest.approx(want, rel=1e-5), have["epoch"]
