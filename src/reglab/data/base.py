"""The base of every reglab data set: arrays in memory, seeded splits, train-only standardization.

Subclasses implement `load_arrays` and set `task` (a name of reglab.tasks, whose entry decides
stratified splits, label checks and target standardization); the base class splits,
standardizes, moves the tensors to the training device once in `setup`, and serves
`TensorBatchLoader` batches.

Token data (a subclass whose `vocab_size` is an int) keeps integer inputs: int64 tensors in
[0, vocab_size), never standardized, carried unchanged by every split and degradation knob.

Byte data (a subclass with `byte_inputs = True`: photos such as CIFAR and SVHN) keeps its uint8
inputs in memory and on the training device, a quarter of float32's size; its loaders turn each
batch into standardized float32 there, (byte - mean) / std with the training split's moments
(`standardize: false`: byte / 255), so the net and every callback see float inputs as usual.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import lightning as L
import numpy as np
import torch
from sklearn.model_selection import train_test_split

from reglab import checks
from reglab.data.loader import TensorBatchLoader
from reglab.errors import ConfigError
from reglab.tasks import CLASSIFICATION, Task, task_of

# The most values (samples x features) a generated data set may hold: 4 GB as float32.
MAX_VALUES = 10**9


@dataclass
class Split:
    """Inputs and targets of one split."""

    x: torch.Tensor
    y: torch.Tensor


class TensorDataModule(L.LightningDataModule):
    """In-memory LightningDataModule exposing the shapes and kinds of its inputs and targets.

    What the rest of reglab reads: `task`, `input_shape`, `input_dtype`, `vocab_size`,
    `target_shape`, `num_classes`, `num_outputs` and `noisy_input_mse`.
    """

    task: str = CLASSIFICATION
    #: uint8 inputs held as they are; each batch is standardized on its device (module docstring)
    byte_inputs: bool = False

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        data_seed: int = 0,
        standardize: bool = True,
        standardize_target: bool = True,
        shuffle_seed: int = 0,
        train_fraction: float = 1.0,
        label_noise: float = 0.0,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        checks.integer("batch_size", batch_size, minimum=1)
        for key, seed in (
            ("split_seed", split_seed),
            ("data_seed", data_seed),
            ("shuffle_seed", shuffle_seed),
        ):
            checks.seed(key, seed)
        checks.boolean("standardize", standardize)
        # false: the same training batches in the same order every epoch (debug=overfit)
        self.shuffle = checks.boolean("shuffle", shuffle)
        checks.boolean("standardize_target", standardize_target)
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            checks.number(key, value, 0.0, 1.0, low_open=True, high_open=True)
        checks.number("train_fraction", train_fraction, 0.0, 1.0, low_open=True)
        checks.probability("label_noise", label_noise)
        if label_noise and not self._task.class_labels:
            raise ConfigError("label_noise", "applies to classification data only")
        if val_fraction + test_fraction >= 1:
            raise ConfigError("val_fraction", "val_fraction + test_fraction must be < 1")
        self.batch_size = batch_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split_seed = split_seed
        # Generated data sets draw their samples with data_seed: the split is a separate choice.
        self.data_seed = data_seed
        self.standardize = standardize
        self.standardize_target = standardize_target
        self.shuffle_seed = shuffle_seed
        self.train_fraction, self.label_noise = train_fraction, label_noise
        self._loaders: dict[str, TensorBatchLoader] = {}
        # `batch -> batch` for training batches only (reglab.run hands over the augmentation).
        self.train_batch_transform: Callable[[Any], Any] | None = None

    # --- what subclasses provide -------------------------------------------------------------
    def load_arrays(
        self,
    ) -> tuple[np.ndarray, np.ndarray] | dict[str, tuple[np.ndarray, np.ndarray]]:
        """All samples as (x, y), or a dict with 'train' and 'test' when the source splits them."""
        raise NotImplementedError

    def input_moments(self, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std that standardize the inputs: per feature, or per channel for images."""
        return _moments(x_train)

    def standardized(
        self, parts: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The splits standardized with statistics of the training split (tokens stay as they are)."""
        if self.byte_inputs:  # the loaders standardize each batch on the device
            moments = self.input_moments(parts["train"][0]) if self.standardize else (0.0, 255.0)
            self.byte_moments = tuple(np.asarray(m, dtype=np.float32) for m in moments)
        elif self.standardize and self.vocab_size is None:
            mean, std = self.input_moments(parts["train"][0])
            parts = {k: ((x - mean) / std, y) for k, (x, y) in parts.items()}
        if self._task.standardize_targets and self.standardize_target:
            mean, std = _moments(parts["train"][1])
            parts = {k: (x, (y - mean) / std) for k, (x, y) in parts.items()}
        return parts

    # --- what the rest of reglab reads --------------------------------------------------------
    @property
    def _task(self) -> Task:
        return task_of(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (no batch dimension)."""
        return tuple(self.splits["train"].x.shape[1:])

    @property
    def vocab_size(self) -> int | None:
        """Number of distinct input tokens for token data (inputs in [0, vocab_size)), else None."""
        return None

    @property
    def input_dtype(self) -> torch.dtype:
        """torch.int64 for token inputs, torch.float32 otherwise."""
        return torch.float32 if self.vocab_size is None else torch.int64

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one target (no batch dimension): () for class labels, (k,) for k outputs."""
        return tuple(self.splits["train"].y.shape[1:])

    @property
    def noisy_input_mse(self) -> dict[str, float] | None:
        """MSE of returning the input unchanged, per evaluation split, for denoising data; else None."""
        return None

    @property
    def num_classes(self) -> int | None:
        """Number of classes for class labels (classification), None for other targets."""
        if not self._task.class_labels:
            return None
        return int(max(int(s.y.max()) for s in self.splits.values())) + 1

    @property
    def num_outputs(self) -> int:
        """Width of the net's output: classes, or the number of target values (of `target_shape`)."""
        return self._task.num_outputs(self.num_classes, self.target_shape)

    @cached_property
    def splits(self) -> dict[str, Split]:
        """Seeded train/val/test splits, standardized with statistics of the training split."""
        parts = self.standardized(self.split(self.load_arrays()))
        splits = {k: Split(*self._to_tensors(x, y)) for k, (x, y) in parts.items()}
        for name, split in splits.items():  # finite values too large for float32 become inf
            bad = int((~torch.isfinite(split.x)).sum()) + int((~torch.isfinite(split.y)).sum())
            if bad:
                raise ConfigError(
                    "", f"{bad} values of the {name} split overflow float32: rescale the data"
                )
        return splits

    def split(
        self, arrays: tuple[np.ndarray, np.ndarray] | dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """`arrays` (as `load_arrays` gives them) checked and split into seeded 'train', 'val' and
        'test' parts, the training part degraded (`train_fraction`, `label_noise`), unstandardized.

        The split depends on the number of samples, the targets and the seeds, never on the input
        values: a reader may split sample indices (streamed files, table rows) and read later.
        """
        raw = arrays if isinstance(arrays, dict) else {"all": arrays}
        for x, y in raw.values():  # refused here, not as "training diverged" after an epoch
            self._check_arrays(x, y)
        parts = self._split(raw)
        parts["train"] = self._degrade(*parts["train"])
        return parts

    def _check_arrays(self, x: np.ndarray, y: np.ndarray) -> None:
        """Refuse data no training can use: no samples, NaN/inf values, bad class labels."""
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0:
            raise ConfigError("", f"inputs {x.shape} and targets {y.shape} hold no samples axis")
        if len(x) != len(y):
            raise ConfigError("", f"{len(x)} inputs but {len(y)} targets")
        if len(x) == 0:
            raise ConfigError("", "the data set has no samples")
        for what, values in (("inputs", x), ("targets", y)):
            if values.dtype.kind not in "biuf":
                raise ConfigError("", f"{what} must be numbers, got dtype {values.dtype}")
            bad = int(np.count_nonzero(~np.isfinite(values)))
            if bad:
                raise ConfigError("", f"{what} contain {bad} NaN/inf values")
        vocab = self.vocab_size
        if vocab is not None and (np.any(x != np.round(x)) or x.min() < 0 or x.max() >= vocab):
            raise ConfigError(
                "",
                f"token inputs must be whole numbers in [0, {vocab}), found values in "
                f"[{x.min():g}, {x.max():g}]",
            )
        if self._task.class_labels:
            if np.any(y != np.round(y)):
                raise ConfigError("", "class labels must be whole numbers")
            if y.min() < 0:
                raise ConfigError("", f"class labels must be >= 0, found {y.min():g}")

    def _split(self, raw: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        stratify = self._task.class_labels
        if "all" in raw:
            x, y = raw["all"]
            self._check_split(y, self.test_fraction, "test_fraction", "test", "the data set")
            x_rest, x_test, y_rest, y_test = train_test_split(
                x,
                y,
                test_size=self.test_fraction,
                random_state=self.split_seed,
                stratify=y if stratify else None,
            )
        else:
            (x_rest, y_rest), (x_test, y_test) = raw["train"], raw["test"]
        val_share = (
            self.val_fraction / (1 - self.test_fraction) if "all" in raw else self.val_fraction
        )
        scale = 1 - self.test_fraction if "all" in raw else 1.0
        what = "the data left after the test split" if "all" in raw else "the training files"
        self._check_split(y_rest, val_share, "val_fraction", "validation", what, scale)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest,
            y_rest,
            test_size=val_share,
            random_state=self.split_seed,
            stratify=y_rest if stratify else None,
        )
        return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}

    def _degrade(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keep `train_fraction` of the training split; give `label_noise` of it random labels.

        Val and test stay clean: this is how one builds an overfitting fixture.
        """
        rng = np.random.default_rng([self.split_seed, 1])
        kept = max(1, round(self.train_fraction * len(x)))
        if kept < 2:  # the loader drops a last batch of one: no training step at all
            if len(x) >= 2:
                raise ConfigError(
                    "train_fraction",
                    f"{self.train_fraction:g} keeps {kept} of {len(x)} training samples; one "
                    f"training batch needs 2: raise train_fraction to at least {_round_up(2 / len(x))}",
                )
            raise ConfigError(
                "",
                f"the training split has {len(x)} sample; one training batch needs 2: "
                "use more data or lower val_fraction / test_fraction",
            )
        if self.train_fraction < 1:
            keep = rng.permutation(len(x))[:kept]
            x, y = x[np.sort(keep)], y[np.sort(keep)]
        if self.label_noise > 0:
            y = y.copy()
            noisy = rng.permutation(len(y))[: round(self.label_noise * len(y))]
            y[noisy] = rng.integers(0, int(y.max()) + 1, len(noisy))  # uniform over all classes
        return x, y

    def _check_split(
        self, y: np.ndarray, share: float, key: str, held_out: str, what: str, scale: float = 1.0
    ) -> None:
        """Refuse holding out `share` of `y` (as train_test_split counts) if a part comes out empty.

        A stratified split (classification) needs one sample of each class on both sides and two
        of each class to split. `scale` turns `share` back into the config's `key` value.
        """
        n = len(y)
        n_held, n_kept = math.ceil(share * n), math.floor((1 - share) * n)
        stratify = self._task.class_labels
        classes, counts = np.unique(y, return_counts=True) if stratify else ([], [])
        need = max(len(classes), 1)
        if stratify and min(counts) < 2:
            rare = classes[int(np.argmin(counts))]
            raise ConfigError(
                "",
                f"class {rare} has {min(counts)} sample in {what}; a stratified split needs at "
                "least 2 of each class",
            )
        per_class = f"one of each of the {need} classes" if stratify else "one sample"
        value = getattr(self, key)
        if n_held < need:
            raise ConfigError(
                key,
                f"{value:g} gives {n_held} {held_out} samples of {n} in {what}; the split needs "
                f"at least {per_class}: raise {key} to at least {_round_up(need / n * scale)}",
            )
        if n_kept < need:
            raise ConfigError(
                key,
                f"{value:g} leaves {n_kept} of {n} samples in {what} besides the {held_out} "
                f"split; it needs at least {per_class}: lower {key}",
            )

    def _to_tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.uint8 if self.byte_inputs else self.input_dtype
        xt = torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)
        if self._task.class_labels:
            return xt, torch.as_tensor(y, dtype=torch.long)
        yt = torch.as_tensor(np.ascontiguousarray(y), dtype=torch.float32)
        # One target per sample becomes (N, 1); image targets (denoising) keep their shape.
        return xt, yt.reshape(len(yt), -1) if yt.ndim < 3 else yt

    # --- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Move the splits to the training device once and build this rank's loaders."""
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        splits = self.splits  # (byte data: its moments come with the splits)
        inputs = self._byte_standardizer(device) if self.byte_inputs else None
        for name, split in splits.items():
            loader = self._loaders[name] = TensorBatchLoader(
                split.x.to(device),
                split.y.to(device),
                self.batch_size,
                shuffle=name == "train" and self.shuffle,
                seed=self.shuffle_seed,
                rank=rank,
                world_size=world,
                drop_singleton=name == "train",
                pad_shards=name == "train",
                inputs=inputs,
            )
            if name == "train" and len(loader) == 0:  # a shard of one sample is dropped
                raise ConfigError(
                    "",
                    f"the training split ({len(split.x)} samples) gives no batch on {world} "
                    "processes: use more data or fewer devices",
                )

    def _byte_standardizer(self, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        """uint8 batch -> float32 (byte - mean) / std, on `device` (where the bytes live)."""
        mean, std = (torch.as_tensor(m, device=device) for m in self.byte_moments)
        return lambda x: (x.float() - mean) / std

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches on their device; evaluation batches pass untouched."""
        # (The model summary also passes `example_input_array` through here: a bare tensor.)
        is_batch = isinstance(batch, (tuple, list))
        if self.train_batch_transform is not None and self.trainer.training and is_batch:
            return self.train_batch_transform(batch)
        return batch

    def train_dataloader(self) -> TensorBatchLoader:
        """Shuffled training batches."""
        return self._loader("train")

    def val_dataloader(self) -> TensorBatchLoader:
        """Validation batches in fixed order."""
        return self._loader("val")

    def test_dataloader(self) -> TensorBatchLoader:
        """Test batches in fixed order."""
        return self._loader("test")

    def predict_dataloader(self) -> TensorBatchLoader:
        """Prediction over the test split."""
        return self._loader("test")

    def _loader(self, name: str) -> TensorBatchLoader:
        if name not in self._loaders:
            self.setup()
        return self._loaders[name]


def _moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per feature (N, F), or per channel for images (N, C, H, W[, D]).

    Images get one mean/std per channel, as torchvision's Normalize: per-pixel statistics would
    give near-constant border pixels huge standardized values, which shifts and rotations then
    carry into the middle of the image. Constant features get std 1.
    """
    axes = (0,) if a.ndim <= 2 else (0, *range(2, a.ndim))
    mean = a.mean(axis=axes, keepdims=True)
    std = a.std(axis=axes, keepdims=True)
    return mean, np.where(std > 1e-8, std, 1.0)


def count(key: str, value: Any, maximum: int = MAX_VALUES) -> int:
    """A number of samples or features: an integer in [1, maximum]."""
    return checks.integer(key, value, 1, maximum)


def _round_up(value: float) -> str:
    """`value` rounded up to 2 significant digits, as a suggestion that is surely enough."""
    digits = 1 - math.floor(math.log10(value))
    return f"{math.ceil(value * 10**digits) / 10**digits:g}"
