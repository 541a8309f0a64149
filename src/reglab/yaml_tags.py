"""Config files with YAML tags that build Python objects (`!!python/object/apply:os.system`).

Hydra reads config files with a safe loader, which refuses such a tag, but with a raw
ConstructorError traceback. Before Hydra starts, the config folders a command uses (conf/,
`--config-dir`, `hydra.searchpath`) are read the same safe way, and a tagged file is named in one
line. Override values are not YAML (Hydra's own grammar): a tag there is a plain string.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml


def tag_problems(folders: Iterable[Path]) -> list[str]:
    """`<file>: line N: ...` for each YAML file under `folders` whose tags a safe load refuses."""
    problems = []
    for folder in folders:
        if not folder.is_dir():
            continue  # Hydra reports a missing folder itself
        for path in sorted(folder.rglob("*.yaml")):
            problem = _tag_problem(path)
            if problem:
                problems.append(problem)
    return problems


def _tag_problem(path: Path) -> str | None:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None  # left to Hydra's own message
    if "!" not in text:  # no tag at all: most files, not parsed here
        return None
    try:
        yaml.safe_load(text)
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark
        where = f"{path}: line {mark.line + 1}" if mark else str(path)
        tag = _tag_at(text, mark)
        if "python/" in (error.problem or "") or tag.startswith("!!python"):
            return (
                f"{where}: Python tags ({tag or '!!python/...'}) are not allowed in a config "
                "file; write plain values (a class to build goes in _target_)"
            )
        shown = f" {tag}" if tag else ""
        return f"{where}: the YAML tag{shown} is not allowed in a config file; write plain values"
    except yaml.YAMLError:
        return None  # a syntax error: Hydra names it
    return None


def _tag_at(text: str, mark: yaml.Mark | None) -> str:
    """The tag as written at the error's position (`!!python/object/apply:os.system`)."""
    if mark is None:
        return ""
    line = text.splitlines()[mark.line] if mark.line < len(text.splitlines()) else ""
    rest = line[mark.column :]
    return rest.split()[0] if rest.startswith("!") else ""
