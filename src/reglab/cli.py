"""Command-line checks that run before Hydra: an unknown group option or a renamed key gets one line.

Group options are looked up in `conf/` and in every folder the command line adds to Hydra's
search path (`hydra.searchpath=[file:///my/conf]`), so options a user keeps in their own config
folder are accepted as Hydra accepts them.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

# `group=option`, `+group=option`, `group=a,b` (multirun); not `group.key=value` nor `hydra/...`.
_GROUP_OVERRIDE = re.compile(r"^\+{0,2}(?P<group>[A-Za-z_][\w/]*)=(?P<value>[^()\[\]{}]*)$")
_SEARCHPATH = re.compile(r"^\+{0,2}hydra\.searchpath=\[(?P<paths>.*)\]$")
# Files that hold a group's shared keys (pulled in through `defaults`), not options to pick.
SHARED_FILES = ("base",)
# Keys and options renamed in reglab 0.2: old spelling -> new spelling.
RENAMED = {
    "model.hidden": "model.width",
    "dropout=freeze_bn": "batchnorm=freeze",
    "dropout.epoch": "batchnorm.switch_epoch",
    "dropout.freeze_affine": "batchnorm.freeze_affine",
    "paths.root_dir": "(removed: it was unused)",
}


def config_dirs(argv: Sequence[str], conf_dir: Path) -> list[Path]:
    """`conf_dir` and the `file://` folders of a `hydra.searchpath=[...]` override."""
    folders = [conf_dir]
    for arg in argv:
        match = _SEARCHPATH.match(arg)
        if match:
            for entry in match["paths"].split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("file://"):
                    folders.append(Path(entry.removeprefix("file://")))
    return folders


def group_options(group: str, folders: Sequence[Path]) -> list[str] | None:
    """The options of `group` across `folders`, or None if no folder has such a group."""
    group_dirs = [folder / group for folder in folders if (folder / group).is_dir()]
    if not group_dirs:
        return None
    options = {p.stem for d in group_dirs for p in d.glob("*.yaml")}
    return sorted(options - set(SHARED_FILES))


def renamed_keys(argv: Sequence[str]) -> list[str]:
    """One message per override that uses a renamed key or option."""
    problems = []
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        for old, new in RENAMED.items():
            old_key, _, old_option = old.partition("=")
            options = value.split(",")
            if key == old_key and (not old_option or old_option in options):
                problems.append(
                    f"{old} was renamed to {new} (reglab 0.2); see README 'What changed'"
                )
    return problems


def unknown_group_options(argv: Sequence[str], conf_dir: Path) -> list[str]:
    """One message per `group=option` override whose option has no YAML file in any config folder."""
    folders = config_dirs(argv, conf_dir)
    problems = []
    for arg in argv:
        match = _GROUP_OVERRIDE.match(arg)
        if not match or match["group"].startswith("hydra"):
            continue
        valid = group_options(match["group"], folders)
        if valid is None:
            continue
        for option in filter(None, (o.strip() for o in match["value"].split(","))):
            if option != "null" and option not in valid:
                problems.append(
                    f"{match['group']}: unknown option {option!r}; valid choices: {', '.join(valid)}"
                )
    return problems


def exit_on_bad_command_line(conf_dir: Path, argv: Sequence[str] | None = None) -> None:
    """Print each problem as `reglab: error: ...` on stderr and exit 2 if there is any."""
    argv = sys.argv[1:] if argv is None else argv
    problems = renamed_keys(argv) + unknown_group_options(argv, conf_dir)
    for problem in problems:
        print(f"reglab: error: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(2)
