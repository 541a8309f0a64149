"""Weight penalties reach the optimum an outside solver finds (scikit-learn's LogisticRegression).

The model is reglab's linear softmax model (`model=mlp model.depth=0`: the Linear head on flat
inputs), trained full batch in float64 on 1000 standardized digits (64 features, 10 classes).
Its objective is the mean cross-entropy + lambda * R(weight), the bias unpenalized.
scikit-learn minimizes C * sum of losses + ||w||_1 (saga) or C * sum of losses + ||w||^2 / 2
(lbfgs), its intercept unpenalized too: the same optimum at C = 1 / (lambda * n) for L1 and
C = 1 / (2 * lambda * n) for L2 (reglab's L2 has no 1/2). Both solutions are scored with one
objective function written here, not with reglab's penalty code.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sklearn
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from packaging.version import Version
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset

from conftest import compose_config, quiet_trainer
from reglab.callbacks import WeightPenalty
from reglab.module import RegLabModule

STRENGTH = 0.01  # lambda; about 80 % of the lasso's weights are zero
N_TRAIN = 1000
MAX_GAP = 1e-3  # relative objective gap to scikit-learn's optimum
MIN_ZERO_AGREEMENT = 0.98  # fraction of weights that are zero in both solutions or in neither


class FullBatch(Dataset):
    """The whole training set as one batch, `steps` times (one epoch = `steps` optimizer steps)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        self.x, self.y, self.steps = x, y, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


# Small matrices: one torch thread is several times faster than two fighting for the CPU.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """1000 digits, each feature standardized (constant pixels left at 0)."""
    x, y = load_digits(return_X_y=True)
    x, y = x[:N_TRAIN], y[:N_TRAIN]
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0), y


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict:
    """The configs `model=mlp model.depth=0 data.layout=flat optimizer=sgd` selects."""
    cfg = compose_config(
        ["model=mlp", "model.depth=0", "data.layout=flat", "optimizer=sgd"],
        tmp_path_factory.mktemp("run"),
    )
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "sgd": OmegaConf.to_container(cfg.optimizer, resolve=True),
    }


def objective(x, y, weight, bias, kind: str) -> float:
    """Mean cross-entropy + STRENGTH * R(weight): sum |w| (l1) or sum w^2 (l2)."""
    x, y, weight, bias = (torch.as_tensor(a, dtype=torch.float64) for a in (x, y, weight, bias))
    penalty = weight.abs().sum() if kind == "l1" else weight.pow(2).sum()
    return float(F.cross_entropy(x @ weight.T + bias, y.long()) + STRENGTH * penalty)


def sklearn_optimum(x, y, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's (coef, intercept) for the same objective."""
    n = len(x)
    if kind == "l1":
        solver, c, tol, ratio = "saga", 1.0 / (STRENGTH * n), 1e-5, 1.0
    else:
        solver, c, tol, ratio = "lbfgs", 1.0 / (2.0 * STRENGTH * n), 1e-10, 0.0
    # scikit-learn 1.8 deprecates `penalty` for `l1_ratio`; older versions need `penalty`.
    if Version(sklearn.__version__) >= Version("1.8"):
        mix = {"l1_ratio": ratio}
    else:
        mix = {"penalty": kind}
    # One BLAS/OpenMP thread: on a busy machine lbfgs is 100x slower with thread oversubscription.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        model = LogisticRegression(solver=solver, C=c, tol=tol, max_iter=100_000, **mix)
        model.fit(x, y)
    return model.coef_, model.intercept_


@pytest.fixture(scope="module")
def optima(digits) -> dict:
    x, y = digits
    return {kind: sklearn_optimum(x, y, kind) for kind in ("l1", "l2")}


def fit_reglab(digits, presets, optimizer: dict, penalty: dict, steps: int):
    """Train the linear model with WeightPenalty(**penalty); its (weight, bias, reg/strength)."""
    x, y = (torch.as_tensor(a) for a in digits)
    torch.manual_seed(0)
    module = RegLabModule(presets["model"], [x.shape[1]], 10, optimizer=optimizer)
    trainer = quiet_trainer(
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[WeightPenalty(strength=STRENGTH, **penalty)],
        accelerator="cpu",
        devices=1,
        precision="64-true",
    )
    # 100 steps an epoch: few epoch ends (cheap), and few stored outputs per epoch.
    trainer.fit(module, train_dataloaders=DataLoader(FullBatch(x, y, 100), batch_size=None))
    head = module.net.head
    logged = float(trainer.callback_metrics["reg/strength"])
    return head.weight.detach().numpy(), head.bias.detach().numpy(), logged


def sgd(**settings) -> dict:
    return {"_target_": "torch.optim.SGD", **settings}


ADAM = {"_target_": "torch.optim.Adam", "lr": 0.01}

# (optimizer, steps): each converges well within MAX_GAP in `steps` full-batch steps.
L1_SETTINGS = {
    "plain_sgd": (sgd(lr=1.0), 600),
    "sgd_preset": ("preset", 1200),  # conf/optimizer/sgd.yaml: lr 0.05, momentum 0.9
    "nesterov": (sgd(lr=0.1, momentum=0.9, nesterov=True), 800),
    "dampening": (sgd(lr=0.2, momentum=0.9, dampening=0.5), 600),
    "adam_adaptive": (ADAM, 1000),
}


@pytest.mark.parametrize("setting", sorted(L1_SETTINGS))
def test_proximal_l1_reaches_the_lasso(setting, digits, presets, optima):
    optimizer, steps = L1_SETTINGS[setting]
    optimizer = presets["sgd"] if optimizer == "preset" else optimizer
    weight, bias, logged = fit_reglab(
        digits, presets, optimizer, {"kind": "l1", "method": "proximal"}, steps
    )
    coef, intercept = optima["l1"]
    ours, reference = (
        objective(*digits, w, b, "l1") for w, b in ((weight, bias), (coef, intercept))
    )
    gap = (ours - reference) / reference
    agreement = ((weight == 0) == (coef == 0)).mean()
    assert abs(gap) < MAX_GAP, f"objective {ours} vs scikit-learn's {reference}"
    assert agreement >= MIN_ZERO_AGREEMENT, f"zero patterns agree on {agreement:.1%}"
    assert 0.5 < (coef == 0).mean() < 0.95  # a sparse optimum, but not an empty one
    assert logged == pytest.approx(STRENGTH, rel=1e-6)  # lambda, not the threshold (float32 log)


L2_SETTINGS = {"sgd": (sgd(lr=1.0), 400), "adam": (ADAM, 500)}


@pytest.mark.parametrize("setting", sorted(L2_SETTINGS))
def test_l2_gradient_reaches_the_ridge_optimum(setting, digits, presets, optima):
    optimizer, steps = L2_SETTINGS[setting]
    weight, bias, _ = fit_reglab(
        digits, presets, optimizer, {"kind": "l2", "method": "gradient"}, steps
    )
    coef, intercept = optima["l2"]
    ours, reference = (
        objective(*digits, w, b, "l2") for w, b in ((weight, bias), (coef, intercept))
    )
    assert abs(ours - reference) / reference < MAX_GAP, f"{ours} vs scikit-learn's {reference}"
    np.testing.assert_allclose(weight, coef, atol=0.02)
