"""`logger=csv` and a run resumed into its folder: csv/metrics.csv holds every epoch once (issue 19:
Lightning's CSVLogger deleted the rows of the epochs before the interruption)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest

from conftest import SMALL_RUN, read_metrics
from reglab.csv_logger import ContinuedCSVLogger
from reglab.errors import RunInterrupted
from reglab.run import run_one

CSV_RUN = [*(a for a in SMALL_RUN if not a.startswith("logger=")), "logger=csv"]


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "csv" / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def _earlier_file(folder: Path) -> None:
    """What an interrupted attempt left: epochs 0-2 (train and val rows) and a test row."""
    folder.mkdir(parents=True)
    rows = [
        *({"epoch": e, "step": 10 * e + 9, "val/loss": 1.0 - e / 10} for e in range(3)),
        *({"epoch": e, "step": 10 * e + 9, "train/loss": 2.0 - e / 10} for e in range(3)),
        {"epoch": 3, "step": 30, "test/loss": 0.5},
    ]
    with (folder / "metrics.csv").open("w", newline="") as file:
        writer = csv.DictWriter(
            file, fieldnames=["epoch", "step", "test/loss", "train/loss", "val/loss"]
        )
        writer.writeheader()
        writer.writerows(rows)


def test_a_resumed_logger_keeps_the_earlier_epochs_and_logs_the_rest_once(tmp_path):
    _earlier_file(tmp_path / "csv")
    logger = ContinuedCSVLogger(tmp_path, name="csv", version="")
    for epoch in (2, 3):  # the checkpoint held epoch 1: epoch 2 runs again
        logger.log_metrics({"epoch": epoch, "val/loss": 0.7 - epoch / 100}, step=10 * epoch + 9)
        logger.save()
    logger.finalize("success")
    rows = _rows(tmp_path)
    assert [(r["epoch"], bool(r["val/loss"])) for r in rows] == [
        ("0", True), ("1", True), ("0", False), ("1", False), ("2", True), ("3", True)
    ]  # fmt: skip
    assert float(rows[4]["val/loss"]) == pytest.approx(
        0.68
    )  # epoch 2 as this run logged it, not the earlier one
    assert not list((tmp_path / "csv").glob("*.earlier"))


def test_earlier_rows_survive_a_run_killed_before_it_logged(tmp_path):
    _earlier_file(tmp_path / "csv")
    started = ContinuedCSVLogger(tmp_path, name="csv", version="")
    assert started.experiment.metrics == []  # started, then killed before it logged
    logger = ContinuedCSVLogger(tmp_path, name="csv", version="")  # the next resume
    logger.log_metrics({"epoch": 1, "val/loss": 0.3}, step=19)
    logger.save()
    assert [r["epoch"] for r in _rows(tmp_path)] == ["0", "0", "1"]


class _InterruptAt(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt  # Lightning's answer to Ctrl-C: the run records "interrupted"


@pytest.mark.slow  # three short trainings, ~20 s
def test_an_interrupted_run_resumed_into_its_folder_logs_every_epoch_once(make_cfg, tmp_path):
    args = [
        *CSV_RUN,
        "trainer.max_epochs=4",
        "early_stopping=none",
        "callbacks.last_checkpoint.min_seconds_between_saves=0",  # last.ckpt every epoch
    ]
    run_one(make_cfg(*args), [])
    uninterrupted = _rows(tmp_path / "run")
    run_dir = tmp_path / "run"
    for entry in run_dir.iterdir():  # a fresh folder for the interrupted run
        if entry.name == "csv":
            for file in entry.iterdir():
                file.unlink()
    with pytest.raises(RunInterrupted):
        run_one(make_cfg(*args), [_InterruptAt(2)])
    assert read_metrics(run_dir)["status"] == "interrupted"
    run_one(make_cfg(*args, f"ckpt_path={run_dir}"))
    resumed = _rows(run_dir)

    def epochs(rows: list[dict[str, str]], metric: str) -> list[str]:
        return [r["epoch"] for r in rows if r.get(metric)]

    for metric in ("train/loss", "val/loss"):
        assert epochs(resumed, metric) == ["0", "1", "2", "3"], metric
    assert len(epochs(resumed, "test/loss")) == 1
    # The same numbers as the run that was never interrupted (a resume continues exactly).
    assert [r["val/loss"] for r in resumed] == [r["val/loss"] for r in uninterrupted]
