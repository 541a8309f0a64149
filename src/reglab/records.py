"""The one writer of a run's record, `metrics.json`: written last and atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD = "metrics.json"


def write_record(output_dir: Path, record: dict[str, Any]) -> Path:
    """Write `record` as the folder's metrics.json; a reader never sees half of one."""
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f"{RECORD}.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str))
    return tmp.replace(output_dir / RECORD)


def read_record(output_dir: Path) -> dict[str, Any] | None:
    """The folder's metrics.json, or None when it has none (not run, or still running)."""
    path = output_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else None
