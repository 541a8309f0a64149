"""The import graph of src/reglab: one direction of dependencies, no cycles, no private imports.

Dependencies run: entry points -> {search, evaluate} / run -> {build, summary} -> {module, data,
nn, callbacks} -> {penalty maths, nn}.
Every import counts, also the ones inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "reglab"

# Top-level parts of reglab by layer: a part may import only parts of a lower layer (and itself).
LAYERS = {
    "errors": 0,
    "log_filters": 0,
    "records": 0,
    "lightning_speedups": 1,  # a patch gated on the releases it was checked with
    "releases": 0,
    "sparsity": 0,
    "targets": 0,
    "yaml_tags": 0,
    "csv_logger": 0,
    "folder_state": 0,
    "stopping": 0,
    "checks": 1,
    "registry": 1,
    # Which way each metric improves: declared by whoever logs it, read without torch.
    "metric_directions": 1,
    "checkpoint": 1,
    "log": 1,
    "names": 2,
    "tasks": 2,
    "regularization": 2,
    "augment": 2,
    "optim": 2,
    "nn": 3,
    "tensorboard": 3,
    "callbacks": 4,
    # Vectorized studies: K member nets as one stacked module (reglab.nn layers), stepped per
    # member with reglab's optimizer and penalty callbacks (stack/optim.py, stack/penalty.py);
    # stack/group.py trains a sweep's group as full runs: it builds through `build`, records
    # through `summary` and sizes checkpoints as `run` does, hence above them. Nothing imports it
    # but the vectorized launcher (outside reglab).
    "stack": 9,
    "data": 4,
    "module": 4,
    "config": 4,
    "plugins": 4,
    "run_folder": 5,
    "report": 5,
    "cli": 5,
    # A sweep drops a job equal to an earlier one by the report's own notion of "the same run".
    "sweep": 6,
    # Building objects from a config: below a run, and all that search and eval need of it.
    "build": 6,
    "summary": 7,
    # One layer: a search and an eval build through `build`, none reaches into a run (a search
    # is handed its trial runner by the command).
    "run": 8,
    "search": 8,
    "evaluate": 8,
    "__init__": 9,
    # The console commands (reglab-train, reglab-eval): they start a run, a search or an eval.
    "entry": 9,
    # The packaged configs (conf/ as reglab.conf): YAML files, no code.
    "conf": 0,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every reglab import in `path`."""
    tree = ast.parse(path.read_text())
    package = (
        _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    )
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("reglab")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.startswith("reglab"):
                found.append((module, [a.name for a in node.names], node.lineno))
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


SOURCES = sorted(SRC.rglob("*.py"))
GRAPH = {_module_name(p): _imports(p) for p in SOURCES}


def test_every_part_of_reglab_has_a_layer():
    parts = {_part(name) for name in GRAPH}
    assert parts <= set(LAYERS), f"give these a layer: {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_dependencies_point_down_the_layers(module):
    own = _part(module)
    for imported, _, line in GRAPH[module]:
        other = _part(imported)
        if other == own or imported == "reglab":
            continue
        assert LAYERS[other] < LAYERS[own], (
            f"{module}:{line} imports {imported}: {own} (layer {LAYERS[own]}) may not depend on "
            f"{other} (layer {LAYERS[other]})"
        )


def test_the_module_imports_no_callback_and_run_does_not_import_search():
    assert not [i for i, _, _ in GRAPH["reglab.module"] if i.startswith("reglab.callbacks")]
    assert not [i for i, _, _ in GRAPH["reglab.run"] if i.startswith("reglab.search")]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_private_name_is_imported_across_modules(module):
    for imported, names, line in GRAPH[module]:
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{module}:{line} imports private {private} from {imported}"


def test_no_import_cycle_between_modules():
    known = set(GRAPH)

    def targets(module: str) -> set[str]:
        out = set()
        for imported, names, _ in GRAPH[module]:
            # `from reglab.nn import modes` imports the submodule reglab.nn.modes.
            subs = {f"{imported}.{n}" for n in names if f"{imported}.{n}" in known}
            out |= subs or ({imported} & known)
        return out - {module}

    edges = {module: targets(module) for module in GRAPH}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in edges[module]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt] if nxt in path else [module, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_the_check_itself_sees_a_wrong_way_import(tmp_path):
    bad = tmp_path / "reglab" / "nn" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from reglab.run import run_one\nfrom reglab.checks import _hidden\n")
    global SRC
    saved, SRC = SRC, tmp_path / "reglab"
    try:
        imports = _imports(bad)
    finally:
        SRC = saved
    assert ("reglab.run", ["run_one"], 1) in imports
    assert LAYERS[_part("reglab.run")] > LAYERS[_part("reglab.nn.bad")]
    assert any(n.startswith("_") for _, names, _ in imports for n in names)
