"""The activation monitor, and the seed notes' SELU claim made a test."""

from __future__ import annotations

import lightning as L
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import quiet_trainer, read_metrics
from reglab.callbacks import ActivationMonitor
from reglab.data import DigitsDataModule
from reglab.module import RegLabModule
from reglab.run import train


def _stats_at_init(activation: str, init: str) -> dict:
    """Activation statistics of a 16-layer net at initialization, read through the monitor."""
    spec = {
        "init": init,
        "layers": [
            "flatten",
            {"repeat": 16, "block": [{"linear": {"out_features": 256}}, activation]},
        ],
    }
    L.seed_everything(0)
    module = RegLabModule(spec, [64], 10)
    monitor = ActivationMonitor(every_n_epochs=100)
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[monitor],
    )
    trainer.fit(module, datamodule=DigitsDataModule(layout="flat"))
    (at_init,) = [r for r in monitor.records if r["epoch"] == -1]
    return {
        name.split(".")[0]: (at_init["mean"][name], at_init["var"][name])
        for name in at_init["mean"]
        if name.endswith(activation)
    }


def test_selu_with_lecun_init_self_normalizes_and_relu_does_not():
    selu = _stats_at_init("selu", "lecun_normal")
    assert list(selu) == [f"block_{i}" for i in range(1, 17)]
    for index, (name, (mean, var)) in enumerate(selu.items(), start=1):
        if index >= 4:
            assert abs(mean) <= 0.1, (name, mean)
            assert 0.8 <= var <= 1.2, (name, var)
    relu = _stats_at_init("relu", "default")
    deep = [relu[f"block_{i}"] for i in range(4, 17)]
    assert any(abs(mean) > 0.1 or not 0.8 <= var <= 1.2 for mean, var in deep)


def test_monitor_writes_scalars_every_k_epochs(make_cfg, tmp_path):
    train(
        make_cfg(
            "model=mlp", "trainer.max_epochs=4", "callbacks.activation_monitor.every_n_epochs=2"
        )
    )
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "watch/activation_var/block_1.relu" in scalars
    assert "watch/weight_norm/block_1.linear.weight" in scalars
    steps = [event.step for event in events.Scalars("watch/weight_norm/head.weight")]
    epoch_ends = [event.step for event in events.Scalars("Train/loss")]  # the training curve's
    assert steps == [0, epoch_ends[1], epoch_ends[3]]  # at init, then after epochs 2 and 4
    norms = [event.value for event in events.Scalars("watch/weight_norm/head.weight")]
    assert norms[0] != norms[-1]
    assert read_metrics(tmp_path / "run")["status"] == "ok"


def test_bad_monitor_values():
    from reglab.errors import ConfigError

    with pytest.raises(ConfigError, match="every_n_epochs"):
        ActivationMonitor(every_n_epochs=0)
