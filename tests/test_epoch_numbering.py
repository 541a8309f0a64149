"""One way of counting epochs wherever a person reads one: from 1, as Keras prints them and as the
per-epoch lines do ("epoch 1/20" is the first). The console's lines, metrics.json, the best
checkpoint's file name, the report's learning-curve x-axis and the progress bar agree; Lightning's
own counter (`trainer.current_epoch`, the checkpoint's `epoch` key) stays 0-based underneath, so
Lightning resumes as before."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import compose_config, read_metrics
from reglab.callbacks import EpochHistory, RichEpochBar, TqdmEpochBar, epoch_bar
from reglab.callbacks.epoch_bar import description
from reglab.report.collect import collect_jobs
from reglab.report.plots import curves_figure
from reglab.report.table import summarize as report_rows
from reglab.run import train

# A large lr on a small MLP: val/loss bottoms out after a few epochs and early stopping (patience
# 2) ends the run two epochs after its best one, well before max_epochs.
EARLY_STOPPING_RUN = [
    "model=mlp",
    "model.width=64",
    "optimizer.lr=0.05",
    "early_stopping.patience=2",
    "trainer.max_epochs=20",
    "trainer.enable_progress_bar=true",  # off a terminal: one line per epoch (EpochLines)
    "logger=none",
]


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "reglab"]


@pytest.mark.slow  # two short trainings (a few seconds each on a busy CPU)
def test_console_metrics_checkpoint_and_report_count_epochs_from_one(tmp_path, caplog):
    # A job folder of a sweep (with .hydra/), so the report reads it as it reads a sweep's.
    run_dir = tmp_path / "sweep" / "0_run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    caplog.set_level(logging.INFO, logger="reglab")
    train(compose_config(EARLY_STOPPING_RUN, run_dir))
    metrics = read_metrics(run_dir)
    lines = _lines(caplog)

    # metrics.json: history rows 1..n; best_epoch the row with the lowest val/loss; stopped_epoch
    # the last epoch run, patience epochs after the best.
    history = metrics["history"]
    epochs = [row["epoch"] for row in history]
    assert epochs == list(range(1, len(history) + 1)), epochs
    losses = [row["val/loss"] for row in history]
    best = metrics["best_epoch"]
    assert best == epochs[losses.index(min(losses))] == metrics["best"]["epoch"]
    assert metrics["stopped_epoch"] == epochs[-1] == metrics["epochs_run"] < 20
    assert metrics["stopped_epoch"] == best + 2  # patience 2: stopped after two epochs without
    assert metrics["final"]["epoch"] == metrics["stopped_epoch"]
    assert metrics["stopping_reason"] == "val/loss did not improve for 2 epochs"

    # The console: "epoch k/20" for k = 1..n with the history's val/loss, the result line's best
    # epoch, and a line saying why the run stopped.
    shown = {
        int(m[1]): float(m[2])
        for m in (re.match(r"epoch (\d+)/20 .*val/loss (\S+)", line) for line in lines)
        if m
    }
    assert sorted(shown) == epochs
    assert min(shown, key=shown.get) == best
    assert shown[best] == pytest.approx(metrics["best_val/loss"], abs=1e-4)
    (result,) = [line for line in lines if line.startswith("reglab: ") and " epochs in " in line]
    assert f", best epoch {best}, " in result
    stop = f"reglab: early stopping at epoch {metrics['stopped_epoch']} of 20: "
    assert (
        stop + f"val/loss did not improve for 2 epochs; best epoch {best} "
        f"(val/loss {metrics['best_val/loss']:.4f})"
    ) in lines

    # The tested checkpoint is named by the same number; Lightning's `epoch` inside is 0-based.
    best_file = Path(metrics["best_checkpoint"])
    assert best_file.name == f"epoch_{best:03d}.ckpt"
    assert torch.load(best_file, weights_only=True)["epoch"] == best - 1
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == metrics["stopped_epoch"] - 1

    # The report's learning curves plot the same epochs (x) and values (y).
    rows = report_rows(collect_jobs(tmp_path / "sweep"), ["test/acc"])
    figure = curves_figure(rows)
    plotted = [line for line in figure.axes[0].get_lines() if len(line.get_xdata())]
    assert plotted
    for line in plotted:
        assert list(line.get_xdata()) == epochs
    assert list(plotted[0].get_ydata()) == pytest.approx(losses)

    # Resume from the run folder (its last.ckpt, Lightning's 0-based counter): the next epoch is
    # epoch n + 1 in every place.
    resumed_dir = tmp_path / "resumed"
    more = epochs[-1] + 1
    overrides = [o for o in EARLY_STOPPING_RUN if not o.startswith("early_stopping")]
    overrides += ["early_stopping=none", f"trainer.max_epochs={more}"]
    train(compose_config([*overrides, f"ckpt_path={run_dir}"], resumed_dir))
    resumed = read_metrics(resumed_dir)
    assert [row["epoch"] for row in resumed["history"]] == [*epochs, more]
    assert resumed["history"][: len(history)] == history
    assert f"epoch {more}/{more}" in " ".join(_lines(caplog))
    resumed_last = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed_last["epoch"] == more - 1


def test_a_history_saved_with_0_based_epochs_is_renumbered_on_load():
    # A last.ckpt written before epochs were counted from 1 resumes with the same numbering.
    history = EpochHistory()
    history.load_state_dict({"epochs": [{"epoch": 0, "val/loss": 2.0}, {"epoch": 1}]})
    assert [row["epoch"] for row in history.epochs] == [1, 2]
    history.load_state_dict(history.state_dict())
    assert [row["epoch"] for row in history.epochs] == [1, 2]


class _Trainer:
    def __init__(self, current_epoch: int, max_epochs: int | None) -> None:
        self.current_epoch, self.max_epochs = current_epoch, max_epochs


def test_the_progress_bar_calls_the_first_epoch_epoch_1():
    # Lightning's TQDMProgressBar writes f"Epoch {trainer.current_epoch}": "Epoch 0" first.
    assert description(_Trainer(0, 20)) == "Epoch 1/20"
    assert description(_Trainer(19, 20)) == "Epoch 20/20"
    assert description(_Trainer(4, -1)) == "Epoch 5"


def _train_bar_text(bar) -> str:
    if isinstance(bar, RichEpochBar):
        return bar.progress.tasks[bar.train_progress_bar_id].description.strip()
    return bar.train_progress_bar.desc.rstrip(": ")


@pytest.mark.parametrize("bar", [RichEpochBar, TqdmEpochBar])
def test_the_progress_bar_shows_epoch_1_of_2_first(bar):
    # A real fit with the bar: what it reads while each epoch's batches run. Lightning's own
    # bars read "Epoch 0" (tqdm) and "Epoch 0/1" (rich, its default where rich is installed).
    from lightning.pytorch.demos.boring_classes import BoringModel

    shown = []

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, *_):
            shown.append(_train_bar_text(trainer.progress_bar_callback))

    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[bar(), Watch()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert shown == ["Epoch 1/2"] * 2 + ["Epoch 2/2"] * 2


def test_a_run_on_a_terminal_gets_the_bar_lightning_would_use():
    # rich is a reglab dependency: Lightning's default bar is its rich one.
    assert type(epoch_bar()) is RichEpochBar
