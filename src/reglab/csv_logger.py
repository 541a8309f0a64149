"""Lightning's CSVLogger, continued when a run resumes into its folder (`logger=csv`).

Lightning's CSV writer deletes an existing metrics.csv when it starts (lightning 2.6.6), so a run
resumed into its folder lost the rows of every epoch before the interruption. This writer keeps
them: the earlier file's rows of the epochs before the first epoch this run logs (later ones are
run again and logged anew), then this run's rows. The earlier file is moved aside, not deleted,
until this run writes its first rows, so a run killed before that loses none of it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

ASIDE = ".earlier"  # metrics.csv.earlier: the earlier rows while this run has written none


class ContinuedExperimentWriter(ExperimentWriter):
    """Lightning's writer, starting from the rows an earlier attempt left in metrics.csv."""

    def __init__(self, log_dir: str) -> None:
        current = Path(log_dir) / self.NAME_METRICS_FILE
        self._aside = current.with_name(current.name + ASIDE)
        # Both there: a run killed while it wrote its first rows; the aside file is complete.
        if current.is_file() and not self._aside.is_file():
            current.replace(self._aside)
        self._earlier = _read_rows(self._aside) if self._aside.is_file() else None
        super().__init__(log_dir)  # finds no metrics.csv to delete

    def save(self) -> None:
        """Write the rows logged since the last save, after the earlier rows kept."""
        if self._earlier is not None and self.metrics:
            self.metrics[:0] = _before(self._earlier, self.metrics[0])
            self._earlier = None
            Path(self.metrics_file_path).unlink(missing_ok=True)
            super().save()
            self._aside.unlink(missing_ok=True)
            return
        super().save()

    def keep_earlier(self) -> None:
        """A run that logged nothing: the earlier rows stay as they were."""
        if self._earlier is not None and self._aside.is_file():
            self._aside.replace(self.metrics_file_path)
            self._earlier = None


class ContinuedCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv keeps an interrupted attempt's earlier epochs on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuedExperimentWriter:  # noqa: D102 - Lightning's, own writer
        # As Lightning's CSVLogger.experiment (lightning 2.6.6), with the continued writer;
        # tests/test_csv_resume.py checks the whole history after a resume.
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuedExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    def finalize(self, status: str) -> None:  # noqa: D102 - Lightning's
        super().finalize(status)
        if self._experiment is not None:
            self._experiment.keep_earlier()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as file:
        return [
            {k: _number(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(file)
        ]


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _before(rows: list[dict[str, Any]], first: dict[str, Any]) -> list[dict[str, Any]]:
    """The earlier rows of epochs before `first`'s (of steps before it, for a row without one)."""
    epoch, step = first.get("epoch"), first.get("step")
    kept = []
    for row in rows:
        if epoch is not None and isinstance(row.get("epoch"), int | float):
            if row["epoch"] < epoch:
                kept.append(row)
        elif step is not None and isinstance(row.get("step"), int | float) and row["step"] < step:
            kept.append(row)
    return kept
