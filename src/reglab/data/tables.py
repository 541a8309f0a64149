"""scikit-learn's bundled UCI tables: data=breast_cancer, data=iris, data=wine (no download).

Read from the copies scikit-learn ships with it: numeric features, class labels.

| table | samples | features | classes | source |
| --- | --- | --- | --- | --- |
| breast_cancer | 569 | 30 | 2 | Wisconsin Diagnostic Breast Cancer (Street et al. 1993) |
| iris | 150 | 4 | 3 | Fisher 1936 |
| wine | 178 | 13 | 3 | Forina et al., UCI Wine |

These tables have no official test split: the base draws stratified, seeded test
(`test_fraction`) and validation (`val_fraction`) splits from all samples with `split_seed`, and
standardizes each feature with the training split's statistics.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from reglab import checks
from reglab.data.base import TensorDataModule

TABLES = {"breast_cancer": load_breast_cancer, "iris": load_iris, "wine": load_wine}


@cache
def bundled_table(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The features (float32) and labels (int64) of one bundled table, parsed once, read-only."""
    table = TABLES[name]()
    x, y = table.data.astype(np.float32), table.target.astype(np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


class TableDataModule(TensorDataModule):
    """One of scikit-learn's bundled classification tables (`table`), as (samples, features)."""

    def __init__(self, table: str = "iris", **kwargs) -> None:
        self.table = checks.choice("table", table, tuple(TABLES))
        super().__init__(**kwargs)

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All samples of the table; the base splits them."""
        return bundled_table(self.table)
