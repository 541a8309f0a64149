"""data=breast_cancer, iris and wine: scikit-learn's bundled UCI tables, embedded (no download).

Each gives the table's samples, features and classes; test and validation splits are stratified
and seeded from all samples; features are standardized with the training split's statistics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from conftest import compose_config
from reglab.data import TableDataModule
from reglab.errors import ConfigError
from reglab.run import run_one

# table: (samples, features, classes), scikit-learn's loader
TABLES = {
    "breast_cancer": ((569, 30, 2), load_breast_cancer),
    "iris": ((150, 4, 3), load_iris),
    "wine": ((178, 13, 3), load_wine),
}


@pytest.mark.parametrize("table", sorted(TABLES))
def test_each_table_is_the_bundled_one(make_cfg, table):
    (samples, features, classes), load = TABLES[table]
    cfg = make_cfg(f"data={table}").data
    assert cfg.table == table
    module = TableDataModule(table=table)
    splits = module.splits
    assert sum(len(s.x) for s in splits.values()) == samples
    assert module.input_shape == (features,) and module.num_classes == classes
    assert len(splits["test"].x) == round(0.2 * samples)
    x = splits["train"].x.numpy()  # standardized per feature with its own statistics
    assert np.allclose(x.mean(0), 0, atol=1e-4) and np.allclose(x.std(0), 1, atol=1e-4)
    assert sorted(np.unique(load().target).tolist()) == list(range(classes))


def test_the_splits_are_stratified_and_seeded():
    first, again = TableDataModule(table="iris").splits, TableDataModule(table="iris").splits
    other = TableDataModule(table="iris", split_seed=1).splits
    assert torch.equal(first["test"].x, again["test"].x)
    assert not torch.equal(first["test"].x, other["test"].x)
    assert torch.bincount(first["test"].y).tolist() == [10, 10, 10]  # 50 of each species


def test_a_table_run_trains_in_process(tmp_path):
    small = ["model=mlp", "model.width=8", "trainer.max_epochs=1", "logger=none"]
    run_one(compose_config(["data=wine", *small], tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.json").exists()


def test_an_unknown_table_is_one_error():
    with pytest.raises(ConfigError) as error:
        TableDataModule(table="titanic")
    assert error.value.key == "table" and "breast_cancer, iris, wine" in error.value.message
