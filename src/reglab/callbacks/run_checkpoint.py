"""Lightning's ModelCheckpoint that keeps its bookkeeping when a run resumes into a new folder;
`conf/callbacks/model_checkpoint.yaml` and `last_checkpoint.yaml` use it for the best and the last
checkpoint.

It saves exactly as ModelCheckpoint does. The difference is on resume: Lightning forgets the best
score and the best file when the checkpoint folder changed (a resumed run writes into its own
run folder), so the first epoch after the resume became "best" whatever its score, and testing
used a different checkpoint than the best epoch reported. Here the checkpoints the state names
are copied into the new folder and the state is re-pointed there: the resumed run keeps
comparing against the true best, as the uninterrupted run does.

`min_seconds_between_saves` (conf/callbacks/last_checkpoint.yaml: 30 s) skips an
epoch-end write when the previous one is more recent, except at the final epoch, which is always
written. A checkpoint write costs about as much as training a small net for a few batches, so
writing one every epoch made short runs markedly slower; a kill -9 now loses at most that many
seconds of training (the resume recomputes them and still equals the uninterrupted run).

A file name may use `{epoch_number}`: the epoch counted from 1, as metrics.json and the console
count it (`epoch_{epoch_number:03d}` names the 10th epoch's checkpoint epoch_010.ckpt). Lightning's
`{epoch}` is its 0-based counter, as is the `epoch` key inside the checkpoint.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

from reglab import checks
from reglab.callbacks.history import FIRST_EPOCH

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose state follows the run into a new checkpoint folder on resume."""

    def __init__(self, *args: Any, min_seconds_between_saves: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.min_seconds_between_saves = checks.number(
            "min_seconds_between_saves", min_seconds_between_saves, 0.0
        )
        self._last_write = time.monotonic()

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_write = time.monotonic()  # the interval counts from the start of training

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        recent = time.monotonic() - self._last_write < self.min_seconds_between_saves
        if recent and not _final_epoch(trainer):
            return
        super().on_train_epoch_end(trainer, pl_module)

    @override
    def format_checkpoint_name(
        self,
        metrics: dict[str, Any],
        filename: str | None = None,
        ver: int | None = None,
        prefix: str | None = None,
    ) -> str:
        # Lightning fills `epoch` (0-based) into the metrics it formats; `epoch_number` counts
        # from 1. A name with neither placeholder is left as it is.
        if "epoch" in metrics:
            metrics = {**metrics, "epoch_number": int(metrics["epoch"]) + FIRST_EPOCH}
        return super().format_checkpoint_name(metrics, filename, ver, prefix)

    @override
    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._last_write = time.monotonic()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            state_dict = self._moved(state_dict, Path(old), Path(self.dirpath))
        super().load_state_dict(state_dict)

    def _moved(self, state: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
        """The state with every file under `old` copied to `new` (if it still exists) and renamed."""

        def move(path: str) -> str:
            if not path or Path(path).parent != old:
                return path
            target = new / Path(path).name
            if Path(path).is_file() and not target.exists():
                new.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            return str(target)

        moved = {**state, "dirpath": str(new)}
        for key in PATH_KEYS:
            moved[key] = move(state.get(key) or "")
        moved["best_k_models"] = {
            move(path): score for path, score in (state.get("best_k_models") or {}).items()
        }
        return moved


def _final_epoch(trainer: L.Trainer) -> bool:
    """Whether training stops after the epoch now ending (early stopping, epoch or step limit).

    Early stopping has decided by now: Lightning runs checkpoint callbacks after the others.
    """
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    return (
        trainer.should_stop
        or (max_epochs is not None and max_epochs != -1 and trainer.current_epoch + 1 >= max_epochs)
        or (max_steps != -1 and trainer.global_step >= max_steps)
    )
