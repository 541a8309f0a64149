"""Command-line checks that run before Hydra: an unknown group option gets one clear line."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

# `group=option`, `+group=option`, `group=a,b` (multirun); not `group.key=value` nor `hydra/...`.
_GROUP_OVERRIDE = re.compile(r"^\+{0,2}(?P<group>[A-Za-z_][\w/]*)=(?P<value>[^()\[\]{}]*)$")


def unknown_group_options(argv: Sequence[str], conf_dir: Path) -> list[str]:
    """One message per `group=option` override whose option has no YAML file under conf_dir."""
    problems = []
    for arg in argv:
        match = _GROUP_OVERRIDE.match(arg)
        if not match or match["group"].startswith("hydra"):
            continue
        group_dir = conf_dir / match["group"]
        if not group_dir.is_dir():
            continue
        valid = sorted(p.stem for p in group_dir.glob("*.yaml"))
        for option in filter(None, (o.strip() for o in match["value"].split(","))):
            if option != "null" and option not in valid:
                problems.append(
                    f"{match['group']}: unknown option {option!r}; valid choices: {', '.join(valid)}"
                )
    return problems


def exit_on_unknown_group_options(conf_dir: Path, argv: Sequence[str] | None = None) -> None:
    """Print each problem as `reglab: error: ...` on stderr and exit 2 if there is any."""
    problems = unknown_group_options(sys.argv[1:] if argv is None else argv, conf_dir)
    for problem in problems:
        print(f"reglab: error: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(2)
