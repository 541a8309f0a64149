"""Regularization controls in real runs on digits: sparsity, shrinkage, logging, bad values."""

from __future__ import annotations

import pytest
import torch

from conftest import read_metrics
from reglab.errors import ConfigError
from reglab.run import train


def _weights(metrics: dict) -> torch.Tensor:
    state = torch.load(metrics["best_checkpoint"], weights_only=True)["state_dict"]
    return torch.cat(
        [v.reshape(-1) for k, v in state.items() if k.startswith("net.") and v.ndim > 1]
    )


@pytest.mark.parametrize(
    ("method", "optimizer", "strength"),
    [
        ("proximal", "sgd", 1e-3),  # threshold with the momentum factor: the lasso at λ itself
        ("gradient", "sgd", 1e-2),
        ("proximal", "adam", 1e-3),  # adaptive threshold (the default) in Adam's metric
        ("gradient", "adam", 1e-3),
    ],
)
def test_proximal_l1_reaches_exact_zeros_the_subgradient_never_does(
    make_cfg, tmp_path, method, optimizer, strength
):
    cfg = make_cfg(
        "model=mlp",
        f"optimizer={optimizer}",
        "regularization=l1",
        f"regularization.strength={strength}",
        f"regularization.method={method}",
        "logger=none",
    )
    train(cfg)
    metrics = read_metrics(tmp_path / "run")
    zeros = (_weights(metrics) == 0).float().mean().item()
    if method == "proximal":
        assert zeros >= 0.5
        assert metrics["test"]["test/acc"] >= 0.9
        assert metrics["final"]["reg/zero_fraction"] >= 0.5
    else:
        assert zeros == 0.0
        assert metrics["final"]["reg/zero_fraction"] == 0.0


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_l2_norm_of_final_weights_falls_as_strength_grows(tmp_path):
    from conftest import compose_config

    norms = []
    for strength in (0.0, 1e-4, 1e-3, 1e-2):
        run_dir = tmp_path / f"l2_{strength}"
        cfg = compose_config(
            [
                "model=mlp",
                "regularization=l2",
                f"regularization.strength={strength}",
                "trainer.max_epochs=10",
                "logger=none",
            ],
            run_dir,
        )
        train(cfg)
        norms.append(read_metrics(run_dir)["final"]["reg/l2_norm"])
    assert norms == sorted(norms, reverse=True) and len(set(norms)) == 4, norms


def test_penalty_logs_are_consistent(make_cfg, tmp_path):
    train(make_cfg("model=mlp", "regularization=elastic_net", "trainer.max_epochs=2"))
    final = read_metrics(tmp_path / "run")["final"]
    for key in ("penalty", "data_loss", "objective", "l1_norm", "l2_norm", "zero_fraction"):
        assert f"reg/{key}" in final, key
    assert final["reg/objective"] == pytest.approx(final["reg/data_loss"] + final["reg/penalty"])
    expected = 1e-4 * (0.5 * final["reg/l1_norm"] + 0.5 * final["reg/l2_norm"] ** 2)
    assert final["reg/penalty"] == pytest.approx(expected, rel=1e-4)
    assert final["reg/data_loss"] == pytest.approx(final["train/loss"], rel=1e-5)


def test_warmup_ramps_the_strength(make_cfg, tmp_path):
    train(
        make_cfg(
            "model=mlp",
            "regularization=l2",
            "regularization.warmup_epochs=4",
            "trainer.max_epochs=3",
        )
    )
    history = read_metrics(tmp_path / "run")["history"]
    assert [row["reg/strength"] for row in history] == pytest.approx([0.0, 0.25e-4, 0.5e-4])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("regularization.strength=-1", "regularization.strength"),
        ("regularization.l1_ratio=1.5", "regularization.l1_ratio"),
        ("regularization.l1_ratio=null", "regularization.l1_ratio"),
        ("regularization.kind=lasso", "regularization.kind"),
        ("regularization.method=lbfgs", "regularization.method"),
        ("regularization.include=[nothing]", "regularization.include"),
    ],
)
def test_bad_penalty_values_fail_before_training(make_cfg, tmp_path, override, key):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", "regularization=elastic_net", override))
    assert error.value.key == key
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("option", ["none", "l1", "l2", "elastic_net"])
def test_every_regularization_option_takes_every_knob_so_sweeps_over_kinds_compose(
    make_cfg, option
):
    from hydra.utils import instantiate

    knobs = {
        "strength": 1e-3,
        "l1_ratio": 0.5,
        "method": "gradient",
        "warmup_epochs": 2,
        "proximal_threshold": "lr",
    }
    cfg = make_cfg(
        f"regularization={option}", *(f"regularization.{k}={v}" for k, v in knobs.items())
    )
    assert {k: cfg.regularization[k] for k in knobs} == knobs
    if option == "none":
        assert "_target_" not in cfg.regularization  # no callback: the knobs are inert
    else:
        penalty = instantiate(cfg.regularization)
        expected_ratio = {"l1": 1.0, "l2": 0.0, "elastic_net": 0.5}[option]
        assert penalty.penalty.l1_ratio == expected_ratio
        assert penalty.strength == 1e-3 and penalty.warmup_epochs == 2
