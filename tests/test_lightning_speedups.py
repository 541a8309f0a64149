"""reglab.lightning_speedups: Lightning's logging skips only moves that move nothing, and logs the
same values; only a tested Lightning release is patched, and the off switch keeps Lightning's
method; RegLabModule's plain-attribute fast path keeps nn.Module's bookkeeping intact."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.connectors.logger_connector.result import _Metadata, _ResultMetric

from reglab import lightning_speedups
from reglab.module import RegLabModule


def _result_metric(value: float = 2.0) -> _ResultMetric:
    meta = _Metadata(fx="on_train_epoch_end", name="reg/x", on_step=False, on_epoch=True)
    metric = _ResultMetric(meta, is_tensor=True)
    metric.update(torch.tensor(value), batch_size=3)
    return metric


class _Logs(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("step_mean", loss, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("max_weight", self.layer.weight.max(), reduce_fx="max")
        self.log_dict({f"reg/k{k}": float(k) + self.current_epoch for k in range(3)})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit_logged() -> dict[str, float]:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(10, 3))
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Logs(), torch.utils.data.DataLoader(data, batch_size=4))
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def _lightning_to():
    return getattr(_ResultMetric, lightning_speedups.LIGHTNING_TO, _ResultMetric.to)


def test_apply_replaces_the_method_once_and_keeps_lightnings(monkeypatch):
    original = _lightning_to()
    monkeypatch.setattr(_ResultMetric, "to", original)
    monkeypatch.delattr(_ResultMetric, lightning_speedups.LIGHTNING_TO, raising=False)
    lightning_speedups.apply()
    patched = _ResultMetric.to
    lightning_speedups.apply()
    assert _ResultMetric.to is patched is not original
    assert getattr(_ResultMetric, lightning_speedups.LIGHTNING_TO) is original


@pytest.mark.parametrize(
    ("version", "switch"), [("2.7.0", None), ("2.5.3", None), ("2.6.6", "0"), ("2.6.0", "off")]
)
def test_another_lightning_release_or_the_off_switch_keeps_lightnings_method(
    monkeypatch, version, switch
):
    original = _lightning_to()
    monkeypatch.setattr(_ResultMetric, "to", original)
    monkeypatch.delattr(_ResultMetric, lightning_speedups.LIGHTNING_TO, raising=False)
    monkeypatch.setattr(lightning_speedups, "lightning_version", lambda: version)
    if switch is not None:
        monkeypatch.setenv(lightning_speedups.SWITCH, switch)
    lightning_speedups.apply()
    assert _ResultMetric.to is original
    assert not hasattr(_ResultMetric, lightning_speedups.LIGHTNING_TO)
    assert _fit_logged()["reg/k2"] == 4.0  # Lightning's own code logs as before


def test_a_tested_release_without_the_switch_is_patched(monkeypatch):
    original = _lightning_to()
    monkeypatch.setattr(_ResultMetric, "to", original)
    monkeypatch.delattr(_ResultMetric, lightning_speedups.LIGHTNING_TO, raising=False)
    monkeypatch.setattr(lightning_speedups, "lightning_version", lambda: "2.6.0")
    monkeypatch.setenv(lightning_speedups.SWITCH, "1")
    lightning_speedups.apply()
    assert _ResultMetric.to is not original


def test_logged_values_equal_lightnings_own(monkeypatch):
    original = _lightning_to()
    monkeypatch.setattr(_ResultMetric, "to", original)
    reference = _fit_logged()
    monkeypatch.setattr(
        _ResultMetric, "to", lightning_speedups.skipping_same_device_moves(original)
    )
    assert _fit_logged() == reference
    assert reference["reg/k2"] == 4.0 and reference["max_weight"] != 0.0
    assert set(reference) == {"step_mean", "max_weight", "reg/k0", "reg/k1", "reg/k2"}


def test_a_same_device_move_is_skipped_and_a_real_move_is_not(monkeypatch):
    calls = []
    original = _lightning_to()

    def counting_to(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(
        _ResultMetric, "to", lightning_speedups.skipping_same_device_moves(counting_to)
    )
    metric = _result_metric()
    assert metric.to(torch.device("cpu")) is metric and calls == []  # nothing to move
    assert metric.to("cpu") is metric and calls == []
    metric.to(torch.float64)  # not a device: Lightning's code
    assert calls == [(torch.float64,)]
    metric.to(torch.device("meta"))  # a real move: Lightning's code moves both tensors
    assert metric.value.device.type == "meta"
    assert metric.cumulated_batch_size.device.type == "meta"


def test_the_module_writes_lightnings_hook_name_as_a_plain_attribute(monkeypatch):
    module = RegLabModule(
        model={"layers": [{"linear": {"out_features": 4}}]}, input_shape=[3], num_outputs=2
    )
    through_module = []
    module_setattr = torch.nn.Module.__setattr__

    def recording_setattr(self, name, value):
        if self is module:
            through_module.append(name)
        module_setattr(self, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", recording_setattr)
    module._current_fx_name = "training_step"
    assert module._current_fx_name == "training_step"
    assert through_module == []  # written without nn.Module's checks
    # Anything else still goes through nn.Module: a submodule is registered.
    module.extra = torch.nn.Linear(2, 2)
    assert through_module == ["extra"]
    assert "extra" in module._modules and "extra" not in vars(module)
