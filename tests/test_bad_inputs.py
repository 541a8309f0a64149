"""Bad input: one line, the right key, no traceback, never "ok". The table of config values that
must be refused before training (the data sets' own table is tests/test_bad_data.py; checkpoint
files: tests/test_bad_checkpoints.py; command-line typos: tests/test_config_safety.py)."""

from __future__ import annotations

import pytest
import torch

from conftest import run_train_py
from reglab.errors import ConfigError
from reglab.run import train

BAD_VALUES = [
    ("monitor_mode=up", "monitor_mode"),
    ("monitor=train/loss", "monitor"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.layout=sparse", "data.layout"),
    ("data.val_fraction=1.5", "data.val_fraction"),
    ("model.init=orthogonal", "model.init"),
    ("model.activation=relux", "model.activation"),
    ("model.activation=layer_norm", "model.activation"),
    ("model.norm=relu", "model.norm"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.dropout=-0.1", "model.dropout"),
    ("model.width=0", "model.width"),
    ("model.depth=-1", "model.depth"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("optimizer=sgd optimizer.momentum=-0.5", "optimizer.momentum"),
    ("+optimizer.foo=1", "optimizer"),
    ("scheduler=step scheduler.step_size=0", "scheduler.step_size"),
    ("scheduler=plateau scheduler.factor=2", "scheduler.factor"),
    ("early_stopping.patience=-1", "early_stopping.patience"),
    ("early_stopping.min_delta=-0.1", "early_stopping.min_delta"),
    ("trainer.precision=bogus", "trainer.precision"),
    ("trainer.strategy=bogus", "trainer.strategy"),
    ("trainer.devices=0", "trainer.devices"),
    ("trainer.accelerator=gpu", "trainer.accelerator"),  # this test machine has no GPU
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val"),
    ("trainer.num_sanity_val_steps=-5", "trainer.num_sanity_val_steps"),
    ("trainer.limit_train_batches=-1", "trainer.limit_train_batches"),
    ("regularization=l1 regularization.strength=nan", "regularization.strength"),
    ("regularization=l2 regularization.strength=inf", "regularization.strength"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay"),
    ("optimizer.lr=nan", "optimizer.lr"),
    ("optimizer=sgd optimizer.nesterov=true optimizer.momentum=0", "optimizer.nesterov"),
    ("+optimizer.betas=[0.9,1.5]", "optimizer.betas[1]"),
    ("scheduler=step scheduler.gamma=-1", "scheduler.gamma"),
    ("early_stopping.min_delta=nan", "early_stopping.min_delta"),
    ("monitor=val/acc monitor_mode=min", "monitor_mode"),
    ("monitor=val/bogus", "monitor"),
    ("plugins=[no_such_module]", "plugins[0]"),
    ("dropout=constant dropout.p=1.0", "dropout.p"),
    ("batchnorm=freeze batchnorm.switch_epoch=-1", "batchnorm.switch_epoch"),
    ("augmentation=noise augmentation.ops.0.noise.std=-1", "augmentation.ops[0].noise.std"),
    ("regularization=l1 regularization.kind=lasso", "regularization.kind"),
    # Added with the trust issue: values Lightning, torch or NumPy take and misuse.
    ("seed=-1", "seed"),
    ("seed=4294967296", "seed"),
    ("seed=abc", "seed"),
    ("seed=1.5", "seed"),
    ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("trainer.max_epochs=-2", "trainer.max_epochs"),
    ("trainer.min_epochs=-1", "trainer.min_epochs"),
    ("trainer.min_epochs=5 trainer.max_epochs=2", "trainer.min_epochs"),
    ("trainer.max_steps=-5", "trainer.max_steps"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches"),
    ("trainer.limit_train_batches=abc", "trainer.limit_train_batches"),
    ("trainer.limit_val_batches=0", "trainer.limit_val_batches"),
    ("trainer.limit_val_batches=0.0", "trainer.limit_val_batches"),
    ("trainer.limit_test_batches=0", "trainer.limit_test_batches"),
    ("trainer.check_val_every_n_epoch=5 trainer.max_epochs=2", "trainer.check_val_every_n_epoch"),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval"),
    ("trainer.val_check_interval=-0.5", "trainer.val_check_interval"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval"),
    ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps"),
    ("trainer.num_nodes=0", "trainer.num_nodes"),
    ("trainer.gradient_clip_algorithm=foo", "trainer.gradient_clip_algorithm"),
    ("trainer.gradient_clip_val=nan", "trainer.gradient_clip_val"),
    ("trainer.precision=17", "trainer.precision"),
    ("optimizer.lr=abc", "optimizer.lr"),
    ("optimizer.lr=inf", "optimizer.lr"),
    ("optimizer.weight_decay=nan", "optimizer.weight_decay"),
    ("regularization=l1 regularization.strength=-1", "regularization.strength"),
    ("regularization=l1 regularization.strength=abc", "regularization.strength"),
    ("regularization=elastic_net regularization.l1_ratio=1.5", "regularization.l1_ratio"),
    ("regularization=l1 regularization.method=bogus", "regularization.method"),
    ("early_stopping.patience=abc", "early_stopping.patience"),
    ("early_stopping.min_delta=inf", "early_stopping.min_delta"),
    ("optimized_metric=bogus", "optimized_metric"),
    ("optimized_metric=test/bogus", "optimized_metric"),
    ("optimized_metric=best/test/acc", "optimized_metric"),
    ("optimized_metric=final/val/mc_acc", "optimized_metric"),  # needs dropout=mc
    ("+model.head=false", "model.head"),  # the body ends at width 256, the data has 10 classes
    ("+model.head=abc", "model.head"),
    ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path"),
]


@pytest.mark.parametrize(("override", "key"), BAD_VALUES, ids=[row[0] for row in BAD_VALUES])
def test_bad_values_raise_config_error_naming_the_key(make_cfg, tmp_path, override, key):
    if "gpu" in override and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", "trainer.max_epochs=2", *override.split()))
    assert error.value.key == key
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # refused before training


@pytest.mark.parametrize(
    "override",
    [
        "trainer.max_epochs=-1 trainer.max_steps=30",  # -1: no epoch limit
        "trainer.limit_train_batches=0.5 trainer.limit_val_batches=3",
        "trainer.check_val_every_n_epoch=2 trainer.max_epochs=2",
        "trainer.val_check_interval=0.5",
        "optimized_metric=final/train/loss",
        "optimized_metric=test/acc",
        "seed=4294967295",
    ],
)
def test_values_at_the_edge_are_accepted(make_cfg, override):
    assert (
        train(make_cfg("model=mlp", "model.width=16", "logger=none", *override.split())) is not None
    )


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["trainer.max_epochs=abc"], "trainer.max_epochs"),
        (["optimized_metric=test/bogus"], "optimized_metric"),
        (["seed=-1"], "seed"),
    ],
)
@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
def test_train_py_prints_one_line_and_exits_2(tmp_path, args, key):
    result = run_train_py(args, tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("reglab:")]
    assert len(lines) == 1 and lines[0].startswith(f"reglab: error: {key}: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))
