"""Gray images in four layouts, with class labels or clean images (denoising) as targets.

The base of the digits and IDX data modules. `layout` shapes the (N, H, W) images for a family of
nets: `image` (N, 1, H, W) for conv nets, `flat` (N, H*W) for MLPs, `sequence` (N, H, W): the
rows read top to bottom as H steps of W features (the sequential-MNIST form, for recurrent nets),
and `tokens` (N, H*W): the pixels as int64 tokens of a documented vocabulary (for embeddings and
transformers), never standardized.

`target: denoise` turns classification into regression: the inputs are the images plus Gaussian
noise of std `noise_std` (in the data set's pixel units, drawn with `data_seed`), the targets the
clean images, in the same layout. Inputs and targets are standardized with the SAME statistics,
those of the clean training images (one mean and std over all pixels), so that the MSE of
returning the noisy input unchanged, `noisy_input_mse`, is the baseline a denoiser must beat.
`standardize` switches that shared map on or off; `standardize_target` is not used for denoising.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from reglab import checks
from reglab.data.base import TensorDataModule
from reglab.errors import ConfigError
from reglab.tasks import CLASSIFICATION, REGRESSION

LAYOUTS = ("image", "flat", "sequence", "tokens")
TARGETS = ("label", "denoise")
FLOAT_LAYOUTS = tuple(layout for layout in LAYOUTS if layout != "tokens")

ImagePair = tuple[np.ndarray, np.ndarray]


class ImageDataModule(TensorDataModule):
    """Images (N, H, W) and labels from `load_images`, shaped by `layout`, targets by `target`.

    Subclasses implement `load_images`, `pixels` (float pixel values) and `tokens` (int64 tokens
    in [0, `num_tokens`)) and set `num_tokens`.
    """

    num_tokens: int

    def __init__(
        self,
        layout: str = "image",
        target: str = "label",
        noise_std: float = 1.0,
        **kwargs,
    ) -> None:
        checks.choice("layout", layout, LAYOUTS)
        checks.choice("target", target, TARGETS)
        checks.number("noise_std", noise_std, 0.0, low_open=True)
        if target == "denoise" and layout == "tokens":
            raise ConfigError(
                "target",
                f"denoise needs a float layout ({', '.join(FLOAT_LAYOUTS)}), not layout tokens",
            )
        # The task decides stratified splits and which knobs apply (label_noise: labels only).
        self.task = REGRESSION if target == "denoise" else CLASSIFICATION
        self.layout, self.target, self.noise_std = layout, target, noise_std
        super().__init__(**kwargs)

    # --- what subclasses provide -------------------------------------------------------------
    def load_images(self) -> ImagePair | dict[str, ImagePair]:
        """All (images (N, H, W), labels), or a dict with 'train' and 'test' pairs."""
        raise NotImplementedError

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """The images as float32 pixel values (the units of `noise_std`)."""
        raise NotImplementedError

    def tokens(self, images: np.ndarray) -> np.ndarray:
        """The images as int64 tokens in [0, num_tokens)."""
        raise NotImplementedError

    # --- the layouts and targets -------------------------------------------------------------
    @property
    def vocab_size(self) -> int | None:
        """`num_tokens` for `layout: tokens`, else None."""
        return self.num_tokens if self.layout == "tokens" else None

    def load_arrays(self) -> ImagePair | dict[str, ImagePair]:
        """The loaded images arranged by layout; with noise added for denoising."""
        loaded = self.load_images()
        # One generator over the parts in order: the noise depends on data_seed only.
        rng = np.random.default_rng(self.data_seed)
        if isinstance(loaded, dict):
            return {name: self._arrange(*pair, rng) for name, pair in loaded.items()}
        return self._arrange(*loaded, rng)

    def _arrange(
        self, images: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> ImagePair:
        n = len(images)
        if self.layout == "tokens":
            return self.tokens(images).reshape(n, -1), labels
        clean = self.pixels(images)
        shape = {"image": (n, 1, *clean.shape[1:]), "flat": (n, -1), "sequence": clean.shape}
        x = clean.reshape(shape[self.layout])
        if self.target == "label":
            return x, labels
        noise = self.noise_std * rng.standard_normal(x.shape)
        return (x + noise).astype(np.float32), x

    def input_moments(self, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mean and std for all pixels of the (one-channel) images; per feature when `flat`.

        Rows of an image share them as the pixels of its channel do: `sequence` inputs are
        exactly the rows of the standardized `image` inputs.
        """
        if self.layout == "flat":
            return super().input_moments(x_train)
        return pixel_moments(x_train)

    def standardized(
        self, parts: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Denoising: noisy inputs and clean targets mapped alike, by the clean training images."""
        if self.target != "denoise":
            return super().standardized(parts)
        if not self.standardize:
            return parts
        mean, std = pixel_moments(parts["train"][1])
        return {k: ((x - mean) / std, (y - mean) / std) for k, (x, y) in parts.items()}

    @property
    def noisy_input_mse(self) -> dict[str, float] | None:
        """For denoising, {"val": mse, "test": mse} of returning the noisy input unchanged.

        In the units of the targets the model is scored in (standardized when `standardize`).
        """
        if self.target != "denoise":
            return None
        return {
            name: float(F.mse_loss(self.splits[name].x.double(), self.splits[name].y.double()))
            for name in ("val", "test")
        }


def pixel_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One mean and std over every value of `a` (a constant array gets std 1)."""
    mean, std = a.mean(dtype=np.float64), a.std(dtype=np.float64)
    return mean, std if std > 1e-8 else np.ones_like(std)
