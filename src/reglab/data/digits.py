"""scikit-learn's bundled 8x8 digits (1797 samples, 10 classes): the default data set."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from reglab import checks
from reglab.data.base import TensorDataModule

LAYOUTS = ("image", "flat")


class DigitsDataModule(TensorDataModule):
    """Digits as 1x8x8 images (`layout: image`) or flat 64-vectors (`layout: flat`)."""

    task = "classification"

    def __init__(self, layout: str = "image", **kwargs) -> None:
        checks.choice("layout", layout, LAYOUTS)
        super().__init__(**kwargs)
        self.layout = layout

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All 1797 digits, shaped by the layout."""
        digits = load_digits()
        x = digits.data.astype(np.float32)
        if self.layout == "image":
            x = x.reshape(-1, 1, 8, 8)
        return x, digits.target.astype(np.int64)
