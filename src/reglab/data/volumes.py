"""Small synthetic volumes for Conv3d: which axis does a bright bar run along?"""

from __future__ import annotations

import numpy as np

from reglab.data.base import TensorDataModule


class VolumesDataModule(TensorDataModule):
    """1 x S x S x S volumes with a bar along x, y or z (3 classes) at a random place, in noise."""

    task = "classification"

    def __init__(
        self,
        n_samples: int = 600,
        size: int = 8,
        noise: float = 0.5,
        amplitude: float = 2.0,
        **kwargs,
    ) -> None:
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
