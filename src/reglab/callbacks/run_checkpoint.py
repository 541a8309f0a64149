"""Lightning's ModelCheckpoint that keeps its bookkeeping when a run resumes into a new folder;
`conf/callbacks/default.yaml` uses it for the best and the last checkpoint.

It saves exactly as ModelCheckpoint does. The difference is on resume: Lightning forgets the best
score and the best file when the checkpoint folder changed (a resumed run writes into its own
run folder), so the first epoch after the resume became "best" whatever its score, and testing
used a different checkpoint than the best epoch reported. Here the checkpoints the state names
are copied into the new folder and the state is re-pointed there: the resumed run keeps
comparing against the true best, as the uninterrupted run does.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from typing_extensions import override

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose state follows the run into a new checkpoint folder on resume."""

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
