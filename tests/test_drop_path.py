"""Stochastic depth (DropPath, Huang et al. 2016; timm's drop_path): in training whole samples of
the branch are zeroed with probability p and the rest scaled by 1 / (1 - p); eval is identity."""

from __future__ import annotations

import pytest
import torch

from reglab.errors import ConfigError
from reglab.nn.drop_path import DropPath


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_whole_samples_are_dropped_with_probability_p_and_the_rest_rescaled(p):
    torch.manual_seed(0)
    x = torch.rand(20000, 3, 4) + 0.5  # no zeros of its own
    out = DropPath(p)(x)
    dropped = (out == 0).flatten(1).all(dim=1)
    kept = (out != 0).flatten(1).all(dim=1)
    assert bool((dropped | kept).all())  # a sample is dropped whole or kept whole
    assert abs(float(dropped.float().mean()) - p) < 0.015
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    # The expectation is unchanged: E[out] = x.
    assert abs(float(out.mean() / x.mean()) - 1) < 0.02


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(8, 5)
    layer = DropPath(0.7).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(DropPath(0.0)(x), x)


def test_the_same_draw_as_timms_formula():
    # timm: mask = x.new_empty((N,) + (1,) * (ndim - 1)).bernoulli_(keep) / keep; x * mask
    x = torch.randn(16, 2, 3)
    torch.manual_seed(3)
    ours = DropPath(0.25)(x)
    torch.manual_seed(3)
    mask = x.new_empty((16, 1, 1)).bernoulli_(0.75) / 0.75
    torch.testing.assert_close(ours, x * mask)


@pytest.mark.parametrize("p", [1.0, -0.1, "x"])
def test_bad_rates_are_refused(p):
    with pytest.raises(ConfigError, match="^p"):
        DropPath(p)
