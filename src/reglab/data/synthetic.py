"""Generated data sets: two moons, the seed note's 1-D function fit, and a noisy linear regression."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_moons, make_regression

from reglab import checks
from reglab.data.base import MAX_VALUES, TensorDataModule, count
from reglab.errors import ConfigError
from reglab.tasks import CLASSIFICATION, REGRESSION

FUNCTIONS = {
    "sin": lambda x: np.sin(x),
    # Deep Learning with PyTorch, ch. 5-6: Celsius from an uncalibrated thermometer reading.
    "thermometer": lambda x: (x - 32.0) * 5.0 / 9.0,
    "cubic": lambda x: x**3 - 2 * x,
}


class MoonsDataModule(TensorDataModule):
    """Two interleaving half-moons, 2 features, 2 classes."""

    task = CLASSIFICATION

    def __init__(self, n_samples: int = 1000, noise: float = 0.2, **kwargs) -> None:
        count("n_samples", n_samples, MAX_VALUES // 2)
        checks.number("noise", noise, 0.0)
        super().__init__(**kwargs)
        self.n_samples, self.noise = n_samples, noise

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """make_moons drawn with the data seed."""
        return make_moons(self.n_samples, noise=self.noise, random_state=self.data_seed)


class FunctionDataModule(TensorDataModule):
    """y = f(x) + noise on x ~ U(low, high): the 1-D regression of the seed note."""

    task = REGRESSION

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
        count("n_samples", n_samples)
        checks.number("noise", noise, 0.0)
        checks.number("low", low)
        checks.number("high", high)
        if not low < high:
            raise ConfigError("low", f"must be below high, got low={low}, high={high}")
        if not np.isfinite(float(high) - float(low)):  # NumPy cannot draw from such a range
            raise ConfigError("high", f"high - low overflows, got low={low}, high={high}")
        super().__init__(**kwargs)
        self.function, self.n_samples, self.noise = function, n_samples, noise
        self.low, self.high = low, high

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Samples of the chosen function with Gaussian noise scaled to its spread."""
        rng = np.random.default_rng(self.data_seed)
        x = rng.uniform(self.low, self.high, size=(self.n_samples, 1))
        # A range too wide for f in float32 gives inf: the data module refuses it after loading.
        with np.errstate(over="ignore", invalid="ignore"):
            y = FUNCTIONS[self.function](x)
            y = y + self.noise * y.std() * rng.standard_normal(y.shape)
            return x.astype(np.float32), y.astype(np.float32)


class RegressionDataModule(TensorDataModule):
    """A noisy linear regression with informative and uninformative features (sklearn)."""

    task = REGRESSION

    def __init__(
        self,
        n_samples: int = 1000,
        n_features: int = 20,
        n_informative: int = 5,
        noise: float = 10.0,
        **kwargs,
    ) -> None:
        count("n_samples", n_samples)
        count("n_features", n_features)
        checks.integer("n_informative", n_informative, 0, n_features)
        checks.number("noise", noise, 0.0)
        if n_samples * n_features > MAX_VALUES:
            raise ConfigError(
                "n_samples",
                f"n_samples x n_features = {n_samples * n_features} values; at most "
                f"{MAX_VALUES} fit in memory",
            )
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
        # make_regression squeezes y: one sample would come back as a scalar.
        return x.astype(np.float32), y.astype(np.float32).reshape(len(x))
