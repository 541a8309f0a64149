"""The adding problem: a long-range regression where recurrence matters (Hochreiter & Schmidhuber
1997; Le, Jaitly & Hinton 2015).

Each sample is a sequence of `length` steps with 2 features: a value drawn from U(0, 1) and a
marker that is 1 at exactly two steps, one in each half of the sequence (the first half is steps
0 .. length // 2 - 1), else 0. The target is the sum of the two marked values. A net must carry
the first marked value across up to `length` steps.

The trivial baseline, predicting the mean sum 1, has MSE Var(U + U') = 2/12 = 1/6 ~ 0.167 before
target standardization, and 1.0 after it (the default, `standardize_target: true`): a model that
learned the task ends far below 1 in the test MSE reglab reports. Inputs are not standardized by
default in conf/data/adding.yaml (values and markers are already in [0, 1]); with
`standardize: true` each of the two features gets one mean and std over all samples and steps.
"""

from __future__ import annotations

import numpy as np

from reglab import checks
from reglab.data.base import MAX_VALUES, TensorDataModule, count
from reglab.errors import ConfigError
from reglab.tasks import REGRESSION


class AddingDataModule(TensorDataModule):
    """(N, length, 2) sequences of values and two markers; the target: the sum of marked values."""

    task = REGRESSION

    def __init__(self, length: int = 50, n_samples: int = 5000, **kwargs) -> None:
        # Two steps at least: one marker in each half.
        checks.integer("length", length, 2)
        count("n_samples", n_samples)
        if n_samples * length * 2 > MAX_VALUES:
            raise ConfigError(
                "n_samples",
                f"n_samples x length x 2 = {n_samples * length * 2} values; at most {MAX_VALUES} "
                "fit in memory",
            )
        super().__init__(**kwargs)
        self.length, self.n_samples = length, n_samples

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Sequences and their targets, drawn with the data seed."""
        rng = np.random.default_rng(self.data_seed)
        n, length, half = self.n_samples, self.length, self.length // 2
        values = rng.uniform(0.0, 1.0, size=(n, length))
        rows = np.arange(n)
        first, second = rng.integers(0, half, n), rng.integers(half, length, n)
        markers = np.zeros((n, length))
        markers[rows, first] = markers[rows, second] = 1.0
        x = np.stack([values, markers], axis=-1).astype(np.float32)
        # The sum of the float32 values the net sees, not of their float64 originals.
        y = x[rows, first, 0].astype(np.float64) + x[rows, second, 0]
        return x, y.astype(np.float32)

    def input_moments(self, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One mean and std per feature over all samples and steps (not per step)."""
        # float64: float32 sums over many steps drift by 1e-4 here
        mean = x_train.mean(axis=(0, 1), keepdims=True, dtype=np.float64)
        std = x_train.std(axis=(0, 1), keepdims=True, dtype=np.float64)
        return mean, np.where(std > 1e-8, std, 1.0)
