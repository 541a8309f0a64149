"""A table from a CSV or Parquet file with a target column (data=tabular).

`path` is a `.csv` file (read with the csv module: the first row names the columns, fields split
at `delimiter`) or a `.parquet` file (read with pyarrow, which is optional: `pip install pyarrow`,
or `pip install reglab[parquet]`). `target` names the column to predict; every other column is a
feature, in file order:

- a numeric column (every value a number) is standardized with the training split's mean and
  std (`standardize`);
- a categorical column (a value that is not a number, or a column listed in `categorical`) is
  one-hot encoded over the categories the training split holds, sorted; a category seen only at
  validation or test (or a missing one, with `fill_missing`) encodes as all zeros.

`task: auto` reads a target of text, or of whole numbers with at most `AUTO_MAX_CLASSES` distinct
values, as class labels and any other numbers as a real-valued target; the task's name forces
either. Class ids are the target's distinct values sorted (numbers by value, text as text),
named in `class_names`. A regression target is standardized as the other synthetic ones
(`standardize_target`).

Missing values (an empty field, NA, N/A, NaN, null, None or ?, in any case; null in Parquet) are
refused with one line naming the column and the line (row) unless `fill_missing: true`: then a
numeric feature gets its training mean, a categorical one all zeros. A missing target is always
refused. The table has no official test split: the base draws seeded test and validation splits
(stratified for classes) from its rows; the encoders are fitted on the training rows only.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reglab import checks
from reglab.data.base import TensorDataModule
from reglab.errors import ConfigError
from reglab.tasks import CLASSIFICATION, REGRESSION

AUTO = "auto"
TASK_CHOICES = (AUTO, CLASSIFICATION, REGRESSION)
AUTO_MAX_CLASSES = 20  # task auto: whole-number targets with at most this many values are classes
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


@dataclass(frozen=True)
class Table:
    """The columns of a file (each value a str or number, None where missing) and where row i is."""

    columns: dict[str, list[Any]]
    where: Callable[[int], str]

    @property
    def rows(self) -> int:
        """The number of rows."""
        return len(next(iter(self.columns.values()))) if self.columns else 0


def read_csv(path: Path, delimiter: str) -> Table:
    """A CSV file with a header row; blank lines are skipped, every other row has every field."""
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            rows = []
            for row in reader:
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError("path", f"{path} cannot be read as CSV ({error})") from None
    if not header:
        raise ConfigError("path", f"{path} is empty: its first line must name the columns")
    header = [name.strip() for name in header]
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(header):
            raise ConfigError(
                "path", f"line {line} of {path} has {len(row)} fields, the header {len(header)}"
            )
    fields = list(zip(*rows, strict=True)) if rows else [()] * len(header)
    columns = {
        name: [None if v.strip().lower() in MISSING else v.strip() for v in values]
        for name, values in zip(header, fields, strict=True)
    }
    _check_header(header, path)
    return Table(columns, lambda i: f"line {lines[i]} of {path}")


def read_parquet(path: Path, delimiter: str) -> Table:
    """A Parquet file, read with pyarrow (optional); NaN counts as missing."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "path",
            f"{path} is a Parquet file; reading it needs pyarrow: pip install pyarrow (the "
            "reglab[parquet] extra)",
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as error:  # noqa: BLE001 (pyarrow's errors: ArrowInvalid, OSError, ...)
        raise ConfigError("path", f"{path} cannot be read as Parquet ({error})") from None
    _check_header(table.column_names, path)
    columns = {
        name: [None if _is_nan(v) else v for v in table.column(name).to_pylist()]
        for name in table.column_names
    }
    return Table(columns, lambda i: f"row {i + 1} of {path}")


READERS = {".csv": read_csv, ".parquet": read_parquet, ".pq": read_parquet}


def _check_header(names: Sequence[str], path: Path) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError("path", f"{path} names the column {name!r} twice")
        seen.add(name)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _number_name(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def numbers(values: list[Any]) -> np.ndarray | None:
    """The values as float64 (NaN where missing), or None when one is not a number."""
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            out[i] = float(value)
        except ValueError:
            return None
    return out


class TabularDataModule(TensorDataModule):
    """A table's feature columns (numeric standardized, categorical one-hot) and target column."""

    def __init__(
        self,
        path: str | None = None,
        target: str | None = None,
        task: str = AUTO,
        categorical: Sequence[str] | None = None,
        fill_missing: bool = False,
        delimiter: str = ",",
        **kwargs,
    ) -> None:
        if not isinstance(path, str) or not path:
            raise ConfigError("path", f"set it to a .csv or .parquet file, got {path!r}")
        self.path = Path(path).expanduser()
        reader = READERS.get(self.path.suffix.lower())
        if reader is None:
            raise ConfigError("path", f"{path}: must end in {', '.join(READERS)}")
        if not self.path.is_file():
            raise ConfigError("path", f"{self.path} is not a file")
        checks.choice("task", task, TASK_CHOICES)
        self.fill_missing = checks.boolean("fill_missing", fill_missing)
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ConfigError("delimiter", f"must be one character, got {delimiter!r}")
        if categorical is None or isinstance(categorical, str):
            categorical = [] if categorical is None else [categorical]
        table = reader(self.path, delimiter)
        if not isinstance(target, str) or target not in table.columns:
            hint = checks.closest(str(target), table.columns)
            raise ConfigError("target", f"{target!r} is not a column of {self.path}{hint}")
        features = [name for name in table.columns if name != target]
        unknown = [name for name in categorical if name not in features]
        if unknown:
            raise ConfigError(
                "categorical",
                f"{unknown[0]!r} is not a feature column of {self.path}"
                f"{checks.closest(str(unknown[0]), features)}",
            )
        if not features:
            raise ConfigError("target", f"{self.path} has no column besides {target!r}")
        if table.rows == 0:
            raise ConfigError("path", f"{self.path} has no rows")
        self.table, self.target, self.features = table, target, features
        self.numeric = {
            name: values
            for name in features
            if name not in categorical and (values := numbers(table.columns[name])) is not None
        }
        self._check_values()
        self.task, self.labels, self.class_names = self._encode_target(task)
        super().__init__(**kwargs)

    def _check_values(self) -> None:
        """Refuse non-finite numbers, and missing values unless `fill_missing` (never a target)."""
        for name in (self.target, *self.features):
            values = self.table.columns[name]
            parsed = numbers(values) if name == self.target else self.numeric.get(name)
            infinite = np.flatnonzero(np.isinf(parsed)) if parsed is not None else []
            if len(infinite):
                raise ConfigError(
                    "path",
                    f"column {name!r} holds {values[infinite[0]]!r} in "
                    f"{self.table.where(int(infinite[0]))}: not a finite number",
                )
            if name != self.target and self.fill_missing:
                continue
            missing = next((i for i, v in enumerate(values) if v is None), None)
            if missing is not None:
                fix = (
                    "remove the row"
                    if name == self.target
                    else "fill it in, or set data.fill_missing=true"
                )
                raise ConfigError(
                    "path",
                    f"column {name!r} has no value in {self.table.where(missing)}: {fix}",
                )

    def _encode_target(self, task: str) -> tuple[str, np.ndarray, list[str] | None]:
        """The task, the targets (class ids or float64) and the class names (None: regression)."""
        raw = self.table.columns[self.target]
        values = numbers(raw)
        if task == AUTO:
            whole = values is not None and bool(np.all(values == np.round(values)))
            few = values is not None and len(np.unique(values)) <= AUTO_MAX_CLASSES
            task = CLASSIFICATION if values is None or (whole and few) else REGRESSION
        if task == REGRESSION:
            if values is None:
                bad = next(i for i, v in enumerate(raw) if numbers([v]) is None)
                raise ConfigError(
                    "target",
                    f"column {self.target!r} holds {raw[bad]!r} in {self.table.where(bad)}: "
                    f"a real-valued target (task {REGRESSION}) needs numbers",
                )
            return task, values, None
        keys = values if values is not None else np.array([str(v) for v in raw], dtype=object)
        classes, labels = np.unique(keys, return_inverse=True)
        names = [str(c) if values is None else _number_name(float(c)) for c in classes]
        return task, labels.astype(np.int64), names

    # --- the splits ---------------------------------------------------------------------------
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The row numbers and targets: the base splits rows, `standardized` encodes them."""
        return np.arange(self.table.rows), self.labels

    def standardized(
        self, parts: dict[str, tuple[np.ndarray, np.ndarray]]
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each split's rows encoded with encoders fitted on the training rows; then the base
        standardizes a regression target."""
        train = parts["train"][0]
        encoders = [self._encoder(name, train) for name in self.features]
        self.encoded_names = [label for _, labels in encoders for label in labels]
        encoded = {
            split: (np.column_stack([encode(rows) for encode, _ in encoders]), y)
            for split, (rows, y) in parts.items()
        }
        return super().standardized(encoded)

    @property
    def feature_names(self) -> list[str]:
        """The name of each input column (`color=red` for a one-hot one), fitted with the splits."""
        _ = self.splits
        return self.encoded_names

    def input_moments(self, x_train: np.ndarray) -> tuple[float, float]:
        """(0, 1): the encoders already scaled the numeric columns; one-hot columns stay 0/1."""
        return 0.0, 1.0

    def _encoder(
        self, name: str, train: np.ndarray
    ) -> tuple[Callable[[np.ndarray], np.ndarray], list[str]]:
        """rows -> the column's encoded values (rows, width), and the encoded columns' names."""
        values = self.numeric.get(name)
        if values is not None:
            seen = values[train][~np.isnan(values[train])]
            fill = float(seen.mean()) if len(seen) else 0.0
            mean, std = (fill, float(seen.std())) if self.standardize and len(seen) else (0.0, 1.0)
            std = std if std > 1e-8 else 1.0
            filled = np.where(np.isnan(values), fill, values)
            return lambda rows: ((filled[rows] - mean) / std)[:, None], [name]
        cells = [None if v is None else str(v) for v in self.table.columns[name]]
        categories = sorted({cells[i] for i in train} - {None})
        index = {category: j for j, category in enumerate(categories)}
        codes = np.array([index.get(c, -1) for c in cells])  # -1: unseen in training, or missing

        def one_hot(rows: np.ndarray) -> np.ndarray:
            out = np.zeros((len(rows), len(categories)))
            known = codes[rows] >= 0
            out[np.flatnonzero(known), codes[rows][known]] = 1.0
            return out

        return one_hot, [f"{name}={category}" for category in categories]
