"""Augments training batches on their device; driven by the `augmentation` group.

Only training batches are touched (through the data module's `on_after_batch_transfer`, after
the batch reached its device); validation and test see the data as it is. Per-sample image ops come
from kornia: horizontal flip, rotation, random crop after zero padding, random erasing. Gaussian
noise works on any data. Mixup and CutMix are written here because kornia draws lambda uniformly:
as in the papers, lambda ~ Beta(alpha, alpha), one per batch, and targets become soft (one-hot
mixtures; the loss takes probabilities). Randomness comes from torch's seeded global generator,
on the batch's device. A grid of augmented training images goes to TensorBoard once per run.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from reglab import checks
from reglab.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> Batch:
    """lam * (x, y) + (1 - lam) * (x[perm], y[perm]); y as probabilities."""
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def cutmix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> Batch:
    """Paste a box of x[perm] covering about 1 - lam of the image; y mixed by the exact area."""
    height, width = x.shape[-2:]
    cut = (1 - lam) ** 0.5
    box_h, box_w = round(height * cut), round(width * cut)
    cy, cx = int(torch.randint(height, (1,))), int(torch.randint(width, (1,)))
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h - box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w - box_w // 2, width)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (height * width)
    return mixed, kept * y + (1 - kept) * y[perm]


class BatchAugmentation(L.Callback):
    """Training-batch augmentation (see module docstring for the ops and their order)."""

    def __init__(
        self,
        flip: float = 0.0,
        rotation: float = 0.0,
        crop_padding: int = 0,
        erasing: float = 0.0,
        noise_std: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        log_images: bool = True,
    ) -> None:
        self.flip = checks.probability("augmentation.flip", flip)
        self.rotation = checks.number("augmentation.rotation", rotation, 0.0, 180.0)
        self.crop_padding = checks.integer("augmentation.crop_padding", crop_padding)
        self.erasing = checks.probability("augmentation.erasing", erasing)
        self.noise_std = checks.number("augmentation.noise_std", noise_std, 0.0)
        self.mixup_alpha = checks.number("augmentation.mixup_alpha", mixup_alpha, 0.0)
        self.cutmix_alpha = checks.number("augmentation.cutmix_alpha", cutmix_alpha, 0.0)
        if self.mixup_alpha and self.cutmix_alpha:
            raise ConfigError("augmentation.cutmix_alpha", "use mixup or cutmix, not both")
        self.log_images = log_images
        self.image_ops: nn.Module | None = None
        self._logged = False

    def _uses_image_ops(self) -> bool:
        return bool(
            self.flip or self.rotation or self.crop_padding or self.erasing or self.cutmix_alpha
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Check the ops fit the data, build the kornia pipeline, hook into the module."""
        shape = tuple(pl_module.hparams.get("input_shape", ()))
        task = getattr(pl_module, "task", "classification")
        if self._uses_image_ops() and len(shape) != 3:
            raise ConfigError(
                "augmentation",
                "flip/rotation/crop/erasing/cutmix need images (C, H, W); the data has shape "
                f"{shape}: use augmentation=noise, mixup or none (or data.layout=image)",
            )
        if (self.mixup_alpha or self.cutmix_alpha) and task != "classification":
            raise ConfigError(
                "augmentation",
                f"mixup and cutmix mix class labels, the data's task is {task}: "
                "use augmentation=noise or none",
            )
        self.image_ops = self._build_image_ops(shape) if self._uses_image_ops() else None
        self.num_classes = pl_module.hparams.get("num_outputs")
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "train_batch_transform"):
            raise ConfigError("augmentation", "needs one of reglab's data modules (conf/data)")
        datamodule.train_batch_transform = self

    def _build_image_ops(self, shape: tuple[int, ...]) -> nn.Module:
        import kornia.augmentation as K

        ops: list[nn.Module] = []
        if self.flip:
            ops.append(K.RandomHorizontalFlip(p=self.flip))
        if self.rotation:
            ops.append(K.RandomRotation(degrees=self.rotation, p=1.0))
        if self.crop_padding:
            ops.append(K.RandomCrop(tuple(shape[1:]), padding=self.crop_padding, p=1.0))
        if self.erasing:
            ops.append(K.RandomErasing(p=self.erasing))
        return nn.Sequential(*ops)

    def sample_lambda(self) -> float:
        """lambda ~ Beta(alpha, alpha), as in the mixup and CutMix papers (kornia: uniform)."""
        alpha = self.mixup_alpha or self.cutmix_alpha
        return float(torch.distributions.Beta(alpha, alpha).sample())

    @torch.no_grad()
    def __call__(self, batch: Batch, trainer: L.Trainer) -> Batch:
        """The augmented training batch (called by the data module for training batches only)."""
        x, y = batch
        if self.image_ops is not None and len(self.image_ops):
            x = self.image_ops(x)
        if self.noise_std:
            x = x + self.noise_std * torch.randn_like(x)
        if self.mixup_alpha or self.cutmix_alpha:
            lam = self.sample_lambda()
            perm = torch.randperm(len(x), device=x.device)
            soft = F.one_hot(y, self.num_classes).to(x.dtype) if not y.is_floating_point() else y
            if self.mixup_alpha:
                x, y = mixup(x, soft, lam, perm)
            else:
                x, y = cutmix(x, soft, lam, perm)
        if not self._logged and self.log_images and x.ndim == 4:
            self._log_grid(trainer, x)
        return x, y

    def _log_grid(self, trainer: L.Trainer, x: torch.Tensor) -> None:
        self._logged = True
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                images = x[:32].detach().float().cpu()
                low = images.amin(dim=(1, 2, 3), keepdim=True)
                high = images.amax(dim=(1, 2, 3), keepdim=True)
                images = (images - low) / (high - low).clamp_min(1e-8)
                logger.experiment.add_images(
                    "augmentation/train_batch", images, trainer.global_step
                )
