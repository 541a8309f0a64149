"""Augments training batches on their device; driven by the `augmentation` group.

The config lists per-sample ops, applied in order (`ops: [{rotation: {degrees: 10}}, {crop:
{padding: 1}}]`, names from `reglab.augment.OPS`: flip, rotation, crop, erasing, cutout, noise,
randaugment, trivialaugment), and at most one mixing op applied last (`mix: {mixup: {alpha: 0.2,
prob: 1.0, mode: batch}}`, from `reglab.augment.MIXES`: mixup, cutmix, mixup_cutmix, with timm's
prob / switch_prob / mode). Mixing turns labels into soft targets (one-hot mixtures; the loss
takes probabilities).

This callback is the transform: `reglab.run` hands it to the data module
(`datamodule.train_batch_transform`), which calls it on training batches after they reached their
device; validation and test see the data as it is. As a callback it refuses, before training,
any op on integer token ids, image ops (and cutmix) on features or sequences, and mixing on
regression. When training starts it gives the ops that act on pixel intensities (randaugment,
trivialaugment, crop with `fill: black`) the data module's pixel map (`reglab.augment.pixels`),
or refuses them on data that has none. It logs one picture per run to TensorBoard
(`watch/augmentation`, images only; a resumed run does not log it again): the first training
batch as it was on the left, as augmented on the right, upscaled so that 8x8 digits can be seen.
Its random numbers come from torch's global generator, which `reglab.callbacks.RandomState`
checkpoints: its own state is only whether the picture was logged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from typing_extensions import override

from reglab.augment import MIXES, OPS, InPixels, Mixing, Op, PixelMap
from reglab.callbacks.control import Control
from reglab.errors import ConfigError
from reglab.registry import Registry
from reglab.tasks import task_name, task_of

Batch = tuple[torch.Tensor, torch.Tensor]
# How many samples of the first training batch the picture shows (a 4 x 4 grid a side).
PICTURED = 16


@dataclass(frozen=True)
class Step:
    """One op of the config: where it sits (`ops[1]`, `mix`), its name, table entry and arguments."""

    key: str
    name: str
    entry: Op
    arguments: dict[str, Any]

    def build(self, input_shape: tuple[int, ...]) -> nn.Module:
        """The op's module for inputs of `input_shape`; a bad value is keyed `ops[1].rotation.degrees`."""
        try:
            return self.entry.build(input_shape, **self.arguments)
        except ConfigError as error:
            raise error.under(f"{self.key}.{self.name}") from None


def parse_step(key: str, spec: Any, table: Registry[Op]) -> Step:
    """A one-key mapping `{name: {argument: value}}` resolved through `table`."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(key, f"must be one op as {{name: {{argument: value}}}}, got {spec!r}")
    ((name, given),) = spec.items()
    entry = table.get(name, key)
    name = table.canonical(name)
    try:
        arguments = entry.arguments(given)
    except ConfigError as error:
        raise error.under(f"{key}.{name}") from None
    return Step(key, name, entry, arguments)


class BatchAugmentation(Control):
    """Training-batch augmentation: `ops` in order, then the optional `mix` (see module docstring)."""

    def __init__(
        self,
        ops: Sequence[Mapping[str, Any]] | None = None,
        mix: Mapping[str, Any] | None = None,
        log_images: bool = True,
    ) -> None:
        ops = [] if ops is None else ops
        if not isinstance(ops, Sequence) or isinstance(ops, str):
            raise ConfigError("ops", f"must be a list of ops, got {ops!r}")
        self.ops = [parse_step(f"ops[{i}]", spec, OPS) for i, spec in enumerate(ops)]
        self.mix = parse_step("mix", mix, MIXES) if mix else None
        self.log_images = bool(log_images)
        # Built by `check` for the model's input shape; applied by `__call__`.
        self.pipeline: nn.Module | None = None
        self.mixing: Mixing | None = None
        self.num_classes: int | None = None
        self.logged = False
        # The first training batch before augmentation, kept until its picture is logged.
        self.original: torch.Tensor | None = None

    @override
    def check(self, pl_module: L.LightningModule) -> None:
        """Refuse ops on token ids, image ops on non-image data and mixing on regression; build."""
        shape = tuple(pl_module.hparams.get("input_shape", ()))
        dtype = input_dtype(pl_module.hparams.get("input_dtype", "float32"))
        for step in [*self.ops, *([self.mix] if self.mix else [])]:
            if not dtype.is_floating_point and not step.entry.takes_tokens:
                raise ConfigError(
                    step.key,
                    f"{step.name} changes input values and cannot act on token ids; the inputs "
                    f"are {describe_inputs(shape, dtype)}: use augmentation=none "
                    "(or data.layout=sequence)",
                )
            if step.entry.needs_images and len(shape) != 3:
                raise ConfigError(
                    step.key,
                    f"{step.name} needs images (C, H, W); the inputs are "
                    f"{describe_inputs(shape, dtype)}: use augmentation=noise, mixup or none "
                    "(or data.layout=image)",
                )
        if self.mix and not task_of(pl_module).class_labels:
            raise ConfigError(
                "mix",
                f"{self.mix.name} mixes class labels, the data's task is {task_name(pl_module)}: "
                "use augmentation=noise or none",
            )
        self.pipeline = nn.Sequential(*(step.build(shape) for step in self.ops))
        self.mixing = self.mix.build(shape) if self.mix else None
        self.num_classes = pl_module.hparams.get("num_outputs")

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":  # training batches only: testing with other loaders needs no map
            self.bind_pixels(PixelMap.of(trainer.datamodule), prefix="augmentation.")

    def bind_pixels(self, pixels: PixelMap | None, prefix: str = "") -> None:
        """Give every op on intensities (`InPixels`) the data's pixel map; refuse them without one.

        Called when training starts, where the data module is first seen: the refusal names the
        op's config path (`prefix` + `ops[0].randaugment`).
        """
        if self.pipeline is None:
            raise RuntimeError("BatchAugmentation: call check(pl_module) (or fit with it) first")
        for step, module in zip(self.ops, self.pipeline, strict=True):
            for wrapper in (m for m in module.modules() if isinstance(m, InPixels)):
                if pixels is None:
                    raise ConfigError(
                        f"{prefix}{step.key}.{step.name}",
                        f"{step.name} acts on pixel intensities in [0, 1]; these inputs' pixel "
                        "range is unknown: use photos held as bytes (data=cifar10, cifar100, "
                        "svhn)" + (" or fill: zero" if step.name == "crop" else ""),
                    )
                wrapper.pixels = pixels

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Batch:
        """The augmented training batch (the data module calls this on training batches only)."""
        if self.pipeline is None:
            raise RuntimeError("BatchAugmentation: call check(pl_module) (or fit with it) first")
        x, y = batch
        if self.wants_picture(x) and self.original is None:
            self.original = x[:PICTURED].detach().clone()
        x = self.pipeline(x)
        if self.mixing is not None:
            soft = y if y.is_floating_point() else F.one_hot(y, self.num_classes).to(x.dtype)
            x, y = self.mixing(x, soft)
        return x, y

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The data module augmented this batch already (on_after_batch_transfer runs first).
        x = batch[0]
        if not self.wants_picture(x):
            return
        self.logged = True
        if trainer.is_global_zero:
            log_picture(trainer, self.original, x[:PICTURED])
        self.original = None

    def wants_picture(self, x: torch.Tensor) -> bool:
        """Whether the batch `x` is a batch of images and the run's picture is still to log."""
        return self.log_images and not self.logged and x.ndim == 4

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"logged": self.logged}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.logged = bool(state_dict.get("logged", False))


def input_dtype(value: str | torch.dtype) -> torch.dtype:
    """The module's `input_dtype` hyperparameter ("int64", "torch.float32" or a dtype) as a dtype."""
    if isinstance(value, torch.dtype):
        return value
    return getattr(torch, str(value).removeprefix("torch."))


def describe_inputs(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    """What a user calls inputs of this shape and dtype, with the shape (for one-line refusals)."""
    shown = str(tuple(shape))
    if not dtype.is_floating_point:
        return f"{str(dtype).removeprefix('torch.')} token ids of shape {shown}"
    if len(shape) == 3:
        return f"images (C, H, W) = {shown}"
    if len(shape) == 2:
        return f"sequences (T, F) = {shown}"
    return f"features of shape {shown}"


def log_picture(trainer: L.Trainer, original: torch.Tensor | None, augmented: torch.Tensor) -> None:
    """The original and augmented images side by side (`picture`), to every TensorBoard logger.

    Without the original (the batch did not pass through this callback) the augmented images alone.
    """
    panels = [augmented] if original is None else [original, augmented]
    image = picture(*(panel.detach().float().cpu() for panel in panels))
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_images("watch/augmentation", image[None], trainer.global_step)


def picture(*panels: torch.Tensor, columns: int = 4, size: int = 64, gap: int = 2) -> torch.Tensor:
    """Image batches (N, C, H, W) as panels side by side, one (C, H', W') image in [0, 1].

    Each panel is a grid of `columns` images a row, each upscaled (nearest neighbour, a whole
    factor) to at least `size` pixels, with `gap` white pixels between images and 4 * `gap`
    between panels. Sample i is scaled by the minimum and maximum over all panels' sample i, so
    the same value has the same grey on the left and on the right.
    """
    stacked = torch.stack(panels)  # (panels, N, C, H, W)
    low = stacked.amin(dim=(0, 2, 3, 4), keepdim=True)
    high = stacked.amax(dim=(0, 2, 3, 4), keepdim=True)
    stacked = (stacked - low) / (high - low).clamp_min(1e-8)
    height, width = stacked.shape[-2:]
    factor = max(1, math.ceil(size / max(height, width)))
    grids = [
        grid(panel.repeat_interleave(factor, -2).repeat_interleave(factor, -1), columns, gap)
        for panel in stacked
    ]
    separator = torch.ones(grids[0].shape[0], grids[0].shape[1], 4 * gap)
    parts = [grids[0]]
    for next_grid in grids[1:]:
        parts += [separator, next_grid]
    return torch.cat(parts, dim=-1)


def grid(images: torch.Tensor, columns: int, gap: int) -> torch.Tensor:
    """(N, C, H, W) images in rows of `columns`, `gap` white pixels apart: one (C, H', W') image."""
    count, channels, height, width = images.shape
    rows = math.ceil(count / columns)
    columns = min(columns, count)
    out = torch.ones(
        channels, rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap
    )
    for index, image in enumerate(images):
        top = (index // columns) * (height + gap)
        left = (index % columns) * (width + gap)
        out[:, top : top + height, left : left + width] = image
    return out
