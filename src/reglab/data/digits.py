"""scikit-learn's bundled 8x8 digits (1797 samples, 10 classes): the default data set.

Pixel intensities are whole numbers 0..16: `layout: tokens` gives them as 64 tokens of a
vocabulary of 17, `noise_std` (`target: denoise`) is in these units too (4.0: a quarter of the
intensity range).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from sklearn.datasets import load_digits

from reglab.data.images import ImageDataModule

INTENSITIES = 17  # load_digits counts the set pixels of 4x4 blocks: 0..16


@cache
def _bundled_digits() -> tuple[np.ndarray, np.ndarray]:
    # Parsed once per process (a tenth of a short run's set-up): every job of a basic-launcher
    # sweep reads the same file. Read-only, so no run can change what the next one sees.
    digits = load_digits()
    images, labels = digits.images, digits.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


class DigitsDataModule(ImageDataModule):
    """Digits as 1x8x8 images, flat 64-vectors, 8 rows of 8 pixels, or 64 tokens (see `layout`)."""

    num_tokens = INTENSITIES

    def __init__(
        self, layout: str = "image", target: str = "label", noise_std: float = 4.0, **kwargs
    ) -> None:
        super().__init__(layout=layout, target=target, noise_std=noise_std, **kwargs)

    def load_images(self) -> tuple[np.ndarray, np.ndarray]:
        """All 1797 digits as (N, 8, 8) intensities 0..16, and their labels (read-only)."""
        return _bundled_digits()

    def pixels(self, images: np.ndarray) -> np.ndarray:
        """The intensities as float32."""
        return images.astype(np.float32)

    def tokens(self, images: np.ndarray) -> np.ndarray:
        """The intensities themselves: whole numbers 0..16."""
        return images.astype(np.int64)
