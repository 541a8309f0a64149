"""A new penalty kind is one class and one YAML file: a toy group lasso, registered from here alone.

The class follows `reglab.regularization.Penalty` and is registered in `PENALTIES`; its YAML file
(written by the test into its own config folder, added through `hydra.searchpath`) inherits the
shared knobs from `regularization/base.yaml`. Nothing else in reglab is touched.
"""

from __future__ import annotations

import pytest
import torch

from conftest import SMALL_RUN, run_records, run_train_in_process
from reglab.callbacks import WeightPenalty
from reglab.regularization import PENALTIES, Penalty, Threshold, make_penalty

TINY = 1e-30  # guards the division by a row's norm; rows of norm 0 are handled apart


def _rows(param: torch.Tensor) -> torch.Tensor:
    """`param` as a (rows, rest) view: a weight matrix's rows, one row per output unit."""
    return param.view(param.shape[0], -1)


class GroupLasso:
    """R(w) = sum over the rows of each weight matrix of the row's L2 norm (a row is a group)."""

    has_l1_part = True  # all of R is non-smooth: the proximal method applies it whole

    def value(self, params: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([_rows(p).norm(dim=1).sum() for p in params]).sum()

    @torch.no_grad()
    def add_gradient(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        strength: float,
        smooth_only: bool = False,
    ) -> None:
        if smooth_only:  # no smooth part
            return
        for param, grad in zip(params, grads, strict=True):
            rows = _rows(param)
            norms = rows.norm(dim=1, keepdim=True)
            # row / ||row||; the subgradient 0 for a row of zeros (as autograd's norm).
            unit = torch.where(norms > 0, rows / norms.clamp_min(TINY), 0.0)
            _rows(grad).add_(unit, alpha=strength)

    @torch.no_grad()
    def proximal_step(self, params: list[torch.Tensor], threshold: Threshold) -> None:
        """Block soft-thresholding: row <- row * max(0, 1 - t / ||row||)."""
        for index, param in enumerate(params):
            if isinstance(threshold, float | int):
                t: float | torch.Tensor = float(threshold)
            else:  # per-coordinate thresholds (Adam): one per row, their mean
                t = _rows(threshold[index]).mean(dim=1, keepdim=True)
            rows = _rows(param)
            norms = rows.norm(dim=1, keepdim=True)
            rows.mul_((1 - t / norms.clamp_min(TINY)).clamp_min(0.0))


YAML = """\
# Group lasso over the rows of each weight matrix (a toy kind registered by a test).
defaults:
  - base
_target_: reglab.callbacks.WeightPenalty
kind: group_lasso
"""


OPTION = (
    "regularization",
    "group_lasso",
    YAML,
)  # conftest's conf_dir writes it into a config folder


@pytest.fixture
def group_lasso(register) -> None:
    register(PENALTIES, "group_lasso", GroupLasso)


def _run_args(conf_dir: str) -> list[str]:
    return [conf_dir, *SMALL_RUN, "optimizer=sgd", "trainer.max_epochs=2"]


# --- the protocol is enough: value and gradient against autograd ----------------------------------


def test_group_lasso_follows_the_protocol_and_matches_autograd(group_lasso):
    penalty = make_penalty("group_lasso", {"l1_ratio": 0.5})  # an option it does not take
    assert isinstance(penalty, Penalty)
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(5, 4, generator=generator, dtype=torch.float64) for _ in range(2)]
    params.append(torch.randn(3, 2, 2, generator=generator, dtype=torch.float64))  # a conv kernel
    params[0][1] = 0.0  # a row of zeros: subgradient 0
    expected = sum(row.norm() for p in params for row in p.reshape(p.shape[0], -1))
    assert penalty.value(params).item() == pytest.approx(expected.item(), rel=1e-12)

    leaves = [p.clone().requires_grad_() for p in params]
    (0.7 * penalty.value(leaves)).backward()
    grads = [torch.zeros_like(p) for p in params]
    penalty.add_gradient(params, grads, 0.7)
    for got, leaf in zip(grads, leaves, strict=True):
        torch.testing.assert_close(got, leaf.grad, rtol=0, atol=1e-12)
    assert grads[0][1].eq(0).all()
    penalty.add_gradient(params, grads, 0.7, smooth_only=True)  # nothing smooth to add
    for got, leaf in zip(grads, leaves, strict=True):
        torch.testing.assert_close(got, leaf.grad, rtol=0, atol=1e-12)


def test_group_lasso_proximal_step_is_block_soft_thresholding(group_lasso):
    weight = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]], dtype=torch.float64)
    make_penalty("group_lasso", {}).proximal_step([weight], 1.0)
    # Norms 5, 0.5, 0 -> rows scaled by 1 - 1/5, zeroed, left at zero.
    torch.testing.assert_close(
        weight, torch.tensor([[2.4, 3.2], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    )


def test_the_callback_takes_the_new_kind_with_the_proximal_method(group_lasso):
    callback = WeightPenalty(kind="group_lasso", method="proximal", l1_ratio=None, strength=0.1)
    assert isinstance(callback.penalty, GroupLasso)


# --- through the CLI config: one run, and a sweep with the built-in kinds -------------------------


def test_a_run_with_the_new_option_zeroes_whole_rows(group_lasso, conf_dir, tmp_path):
    code = run_train_in_process(
        [
            *_run_args(conf_dir),
            "regularization=group_lasso",
            "regularization.method=proximal",
            "regularization.strength=0.06",  # threshold: 0.06 · lr/(1 − momentum 0.9)
            # The first layer only: its rows are input features' detectors, some of them dispensable
            # (a whole layer of zero rows would stop the signal and kill every row).
            "regularization.include=[net.block_1.*weight]",
            "callbacks=default",  # the best checkpoint, to look at the rows
        ],
        cwd=tmp_path,
    )
    assert code == 0
    (metrics,) = run_records(tmp_path)
    assert metrics["status"] == "ok"
    assert metrics["final"]["reg/zero_fraction"] >= 0.2
    state = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]
    first = state["net.block_1.linear.weight"]
    zero_rows = (first == 0).all(dim=1)
    # Groups vanish whole: a row is all zeros or has no zero at all (L1 zeroes single weights).
    assert zero_rows.any() and not zero_rows.all()
    assert ((first == 0).any(dim=1) == zero_rows).all()


def test_a_sweep_over_the_built_in_and_the_new_kind(group_lasso, conf_dir, tmp_path):
    code = run_train_in_process(
        [
            "-m",
            *_run_args(conf_dir),
            "regularization=l1,group_lasso",
            "regularization.method=proximal",
            "regularization.strength=1e-3",
            "callbacks=none",
        ],
        cwd=tmp_path,
    )
    assert code == 0
    records = run_records(tmp_path)
    assert len(records) == 2
    assert all(record["status"] == "ok" for record in records)
    assert all("reg/penalty" in record["final"] for record in records)
    kinds = sorted(o for r in records for o in r["overrides"] if o.startswith("regularization="))
    assert kinds == ["regularization=group_lasso", "regularization=l1"]
