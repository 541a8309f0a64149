"""Writes the model summary (layers, parameters, shapes, FLOPs) to `model_summary.txt` in the run
folder instead of the console; `conf/callbacks/model_summary.yaml` enables it (in `callbacks=default`).

It does not change training. The console header already gives the parameter count. What Lightning
warns about the table (e.g. an inexact size estimate under bf16-mixed) is noted in the file, not
printed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import summarize
from typing_extensions import override

from reglab import checks


class ModelSummaryFile(L.Callback):
    """Writes Lightning's model summary table to `path` when fitting starts."""

    def __init__(self, path: str, max_depth: int = 2) -> None:
        self.path = Path(path)
        # Lightning's summary takes -1 (all levels) or >= 0, and fails mid-run on anything else.
        self.max_depth = checks.integer("max_depth", max_depth, minimum=-1)

    @override
    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(record=True) as caught:  # the filters in force still apply
            table = str(summarize(pl_module, max_depth=self.max_depth))
        notes = "".join(f"note: {warning.message}\n" for warning in caught)
        self.path.write_text(table + "\n" + notes)
