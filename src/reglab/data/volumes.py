"""Small synthetic volumes for Conv3d: which axis does a bright bar run along?"""

from __future__ import annotations

import numpy as np

from reglab import checks
from reglab.data.base import MAX_VALUES, TensorDataModule, count
from reglab.errors import ConfigError
from reglab.tasks import CLASSIFICATION

MAX_SIZE = 256


class VolumesDataModule(TensorDataModule):
    """1 x S x S x S volumes with a bar along x, y or z (3 classes) at a random place, in noise."""

    task = CLASSIFICATION

    def __init__(
        self,
        n_samples: int = 600,
        size: int = 8,
        noise: float = 0.5,
        amplitude: float = 2.0,
        **kwargs,
    ) -> None:
        count("n_samples", n_samples)
        # One voxel a side makes the three bar directions the same volume: nothing to learn.
        checks.integer("size", size, 2, MAX_SIZE)
        checks.number("noise", noise, 0.0)
        checks.number("amplitude", amplitude)
        if n_samples * size**3 > MAX_VALUES:
            raise ConfigError(
                "n_samples",
                f"n_samples x size^3 = {n_samples * size**3} voxels; at most {MAX_VALUES} fit "
                "in memory",
            )
        super().__init__(**kwargs)
        self.n_samples, self.size, self.noise = n_samples, size, noise
        self.amplitude = amplitude

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Volumes and the axis index of their bar."""
        rng = np.random.default_rng(self.data_seed)
        s = self.size
        x = self.noise * rng.standard_normal((self.n_samples, 1, s, s, s)).astype(np.float32)
        y = rng.integers(0, 3, self.n_samples)
        i, j = rng.integers(0, s, (2, self.n_samples))
        for n in range(self.n_samples):
            index = [slice(None)] * 3
            others = [a for a in range(3) if a != y[n]]
            index[others[0]], index[others[1]] = i[n], j[n]
            x[n, 0][tuple(index)] += self.amplitude
        return x, y.astype(np.int64)
