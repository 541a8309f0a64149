"""Read a sweep folder: one `Job` per job folder (overrides, status, flat metrics, history)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reglab.callbacks import WeightPenalty
from reglab.checks import signature_names
from reglab.records import read_record
from reglab.regularization import PENALTIES

# Overrides that do not define a configuration: seeds are repeats, the rest is bookkeeping.
IGNORED_KEYS = ("seed", "resume_sweep", "paths.output_dir")


@dataclass
class Job:
    """One job of a sweep."""

    folder: Path
    overrides: dict[str, str]
    status: str  # ok | failed | pruned | missing
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    error: str = ""

    @property
    def config_key(self) -> tuple[tuple[str, str], ...]:
        """The overrides that define its configuration (seed and bookkeeping left out)."""
        items = {k: v for k, v in self.overrides.items() if k.lstrip("+~") not in IGNORED_KEYS}
        if items.get("regularization") == "none":  # `none` ignores every regularization.* knob
            items = {k: v for k, v in items.items() if not k.startswith("regularization.")}
        ignored = ignored_penalty_options(items.get("regularization"))
        items = {k: v for k, v in items.items() if k.removeprefix("regularization.") not in ignored}
        return tuple(sorted(items.items()))


def ignored_penalty_options(option: str | None) -> set[str]:
    """Penalty options the kind `option` does not take (l1 and l2 ignore l1_ratio): not a difference."""
    kind = PENALTIES.find(option) if option else None
    if kind is None:
        return set()
    own = set(signature_names(WeightPenalty)) | set(signature_names(kind))
    every = {name for k in PENALTIES.names() for name in signature_names(PENALTIES.get(k))}
    return every - own


def _overrides(folder: Path) -> dict[str, str]:
    path = folder / ".hydra" / "overrides.yaml"
    entries = yaml.safe_load(path.read_text()) if path.is_file() else []
    pairs = (entry.split("=", 1) for entry in entries or [] if "=" in entry)
    return {key.lstrip("+"): value for key, value in pairs}


def flat_metrics(record: dict) -> dict[str, float]:
    """test/*, best/<val metric>, final/<metric>, epochs_run, wall_time_s of one metrics.json."""
    flat: dict[str, float] = dict(record.get("test", {}))
    flat.update({f"best/{k}": v for k, v in record.get("best", {}).items() if k != "epoch"})
    flat.update({f"final/{k}": v for k, v in record.get("final", {}).items() if k != "epoch"})
    for key in ("epochs_run", "wall_time_s", "best_epoch", "objective"):
        if isinstance(record.get(key), (int, float)):
            flat[key] = float(record[key])
    return flat


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder under `sweep_dir` (those holding a `.hydra` folder), in job order."""
    jobs = []
    for folder in sorted(p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()):
        record = read_record(folder) or {"status": "missing"}
        jobs.append(
            Job(
                folder=folder,
                overrides=_overrides(folder),
                status=record.get("status", "missing"),
                metrics=flat_metrics(record) if record.get("status") == "ok" else {},
                history=record.get("history", []),
                error=record.get("error", ""),
            )
        )
    return jobs
