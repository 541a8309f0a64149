"""Watches per-layer activation statistics and weight norms; driven by `callbacks` (default on).

It does not change training. At the start of training (the net as initialized) and every
`every_n_epochs` epochs after validation, it runs a fixed batch of validation inputs (as the data
gives them: token ids stay integers) through the net in eval mode with forward hooks on every leaf
layer and on the layers that compute with their children's weights without calling them
(`WHOLE_LAYERS`: attention, a transformer encoder layer). It records each layer's output mean and
variance over all its elements (batch, steps and features of a sequence output; the first tensor
of a layer that returns a tuple, as nn.LSTM's `(output, (h, c))`) and each weight's Frobenius
norm, in `self.records` and as TensorBoard scalars (`watch/activation_mean/<layer>`,
`watch/activation_var/<layer>`, `watch/weight_norm/<name>`). This is how the SELU fixed point
(mean 0, variance 1 from layer to layer) and a penalty's shrinkage become visible. The scalars
share the training curves' x-axis (the step of an epoch's last batch; the net as initialized is
step 0), and their `watch/` group sorts after the curves' groups, so TensorBoard shows them last
(`reglab.tensorboard`). Checkpoints carry the records, so a resumed run continues them (the
resumed weights are not measured as initialization).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from typing_extensions import override

from reglab import checks
from reglab.nn.modes import kept_modes

# Layers measured as a whole besides the leaves: MultiheadAttention uses its out_proj's weights
# without calling it, and a TransformerEncoderLayer in eval mode takes a fused path that calls none
# of its children (a forward hook on the layer turns that path off, so they are measured too).
WHOLE_LAYERS: tuple[type[nn.Module], ...] = (nn.MultiheadAttention, nn.TransformerEncoderLayer)


def measured_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer without children and every `WHOLE_LAYERS` module, in module
    order (forward order for a Sequential)."""
    return [
        (name, m)
        for name, m in net.named_modules()
        if name and (not list(m.children()) or isinstance(m, WHOLE_LAYERS))
    ]


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer passes on: its output, or the first tensor in a tuple it returns."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


class ActivationMonitor(L.Callback):
    """Records activation mean/variance per layer and weight norms (see module docstring)."""

    def __init__(self, every_n_epochs: int = 5, max_samples: int = 512) -> None:
        self.every_n_epochs = checks.integer("every_n_epochs", every_n_epochs, minimum=1)
        self.max_samples = checks.integer("max_samples", max_samples, minimum=1)
        self.records: list[dict[str, Any]] = []
        # Whether the net as initialized was measured: a resumed run must not measure its
        # resumed weights as "initialization".
        self.measured_init = False
        self._inputs: torch.Tensor | None = None

    def _fixed_inputs(self, trainer: L.Trainer) -> torch.Tensor | None:
        if self._inputs is None and trainer.datamodule is not None:
            chunks, count = [], 0
            for x, _ in trainer.datamodule.val_dataloader():
                chunks.append(x)
                count += len(x)
                if count >= self.max_samples:
                    break
            self._inputs = torch.cat(chunks)[: self.max_samples] if chunks else None
        return self._inputs

    @torch.no_grad()
    def measure(self, net: nn.Module, x: torch.Tensor) -> dict[str, dict[str, float]]:
        """Output mean/variance of every measured layer and the norm of every weight, for inputs x."""
        stats: dict[str, dict[str, float]] = {"mean": {}, "var": {}, "weight_norm": {}}

        def hook(name: str):
            def record(module: nn.Module, inputs: Any, output: Any) -> None:
                tensor = first_tensor(output)
                if tensor is not None:
                    stats["mean"][name] = tensor.float().mean().item()
                    stats["var"][name] = tensor.float().var().item()

            return record

        handles = [m.register_forward_hook(hook(name)) for name, m in measured_layers(net)]
        try:
            with kept_modes(net):
                net.eval()
                net(x)
        finally:
            for handle in handles:
                handle.remove()
        for name, parameter in net.named_parameters():
            if parameter.ndim > 1:
                stats["weight_norm"][name] = parameter.norm().item()
        return stats

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        x = self._fixed_inputs(trainer)
        if x is None:
            return
        net = getattr(pl_module, "net", pl_module)
        # convert_input: the dtype of the precision setting (float64 for 64-true, ...) for float
        # inputs; integer inputs (token ids) stay as they are.
        stats = self.measure(net, trainer.precision_plugin.convert_input(x.to(pl_module.device)))
        # An epoch measured again (a resume that repeats it) replaces its record.
        self.records = [r for r in self.records if r["epoch"] != epoch] + [
            {"epoch": epoch, **stats}
        ]
        if trainer.is_global_zero:
            # One x-axis with train/ and val/: Lightning logs an epoch's metrics at the step of
            # its last batch, global_step - 1. The net as initialized is step 0.
            step = 0 if epoch < 0 else max(trainer.global_step - 1, 0)
            write_scalars(trainer, tensorboard_tags(stats), step)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.measured_init:  # the net as initialized, recorded as epoch -1
            self._record(trainer, pl_module, epoch=-1)
            self.measured_init = True

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._record(trainer, pl_module, epoch=trainer.current_epoch)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records, "measured_init": self.measured_init}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict["records"])
        self.measured_init = state_dict["measured_init"]


def tensorboard_tags(stats: dict[str, dict[str, float]]) -> dict[str, float]:
    """The TensorBoard tags of one measurement (see the module docstring)."""
    tags = {f"watch/activation_mean/{name}": value for name, value in stats["mean"].items()}
    tags |= {f"watch/activation_var/{name}": value for name, value in stats["var"].items()}
    tags |= {f"watch/weight_norm/{name}": value for name, value in stats["weight_norm"].items()}
    return tags


def write_scalars(trainer: L.Trainer, scalars: dict[str, float], step: int) -> None:
    """`scalars` at `step` to every TensorBoard logger of the trainer."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            for tag, value in scalars.items():
                logger.experiment.add_scalar(tag, value, step)
