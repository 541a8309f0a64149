"""Generated data sets: two moons, the seed note's 1-D function fit, and a noisy linear regression."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons, make_regression

from reglab import checks
from reglab.data.base import TensorDataModule
from reglab.errors import ConfigError

FUNCTIONS = {
    "sin": lambda x: np.sin(x),
    # Deep Learning with PyTorch, ch. 5-6: Celsius from an uncalibrated thermometer reading.
    "thermometer": lambda x: (x - 32.0) * 5.0 / 9.0,
    "cubic": lambda x: x**3 - 2 * x,
}


class MoonsDataModule(TensorDataModule):
    """Two interleaving half-moons, 2 features, 2 classes."""

    task = "classification"

    def __init__(self, n_samples: int = 1000, noise: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_samples, self.noise = n_samples, noise

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """make_moons drawn with the data seed."""
        return make_moons(self.n_samples, noise=self.noise, random_state=self.data_seed)


class FunctionDataModule(TensorDataModule):
    """y = f(x) + noise on x ~ U(low, high): the 1-D regression of the seed note."""

    task = "regression"

    def __init__(
        self,
        function: str = "sin",
        n_samples: int = 1000,
        noise: float = 0.05,
        low: float = -3.0,
        high: float = 3.0,
        **kwargs,
    ) -> None:
        checks.choice("function", function, list(FUNCTIONS))
        if not low < high:
            raise ConfigError("low", f"must be below high, got low={low}, high={high}")
        super().__init__(**kwargs)
        self.function, self.n_samples, self.noise = function, n_samples, noise
        self.low, self.high = low, high

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Samples of the chosen function with Gaussian noise scaled to its spread."""
        rng = np.random.default_rng(self.data_seed)
        x = rng.uniform(self.low, self.high, size=(self.n_samples, 1))
        y = FUNCTIONS[self.function](x)
        y = y + self.noise * y.std() * rng.standard_normal(y.shape)
        return x.astype(np.float32), y.astype(np.float32)


class RegressionDataModule(TensorDataModule):
    """A noisy linear regression with informative and uninformative features (sklearn)."""

    task = "regression"

    def __init__(
        self,
        n_samples: int = 1000,
        n_features: int = 20,
        n_informative: int = 5,
        noise: float = 10.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.n_samples, self.n_features = n_samples, n_features
        self.n_informative, self.noise = n_informative, noise

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """make_regression drawn with the data seed."""
        x, y = make_regression(
            self.n_samples,
            self.n_features,
            n_informative=self.n_informative,
            noise=self.noise,
            random_state=self.data_seed,
        )
        return x.astype(np.float32), y.astype(np.float32)
