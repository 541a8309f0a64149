"""README's examples work as written: every `python train.py ...` line in it runs, tiny.

Each command the README shows (a fenced code block's line, a `$ ...` console line with the error
it prints, an inline `python ...` span) is one test, named by the line. It runs as a user types it
plus overrides that make it short (one epoch of two batches, no logger); Hydra lets the later of
two values of a key win, so the README's own `trainer.max_epochs=...` needs no stripping, and a
swept key given again after a `-m` sweep replaces the sweep (a cut-down sweep). Runs must write a
metrics.json with status ok; error examples must exit 2 with the line shown.

Examples run in-process (no Lightning import per line), except the `$ ...` error examples, whose
point is the command line: those run as a real `python train.py`. Plugin examples run against the
files README shows (blocks whose first line is a path comment such as `# my_lab/penalties.py`),
written into the test's folder and put on sys.path; what they register is unregistered afterwards
so that it does not leak into other tests. Placeholders (`<date>/<time>_train`, `<folder>`,
`<same overrides>`) are the folder, or the arguments, of an earlier README command the same test
ran. The config-group table is checked against conf/.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import io
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import CONF_DIR, ROOT, run_entry_in_process, run_train_in_process, run_train_py
from reglab.cli import SHARED_FILES
from reglab.registry import Registry

README = ROOT / "README.md"
TEXT = README.read_text()

# Short and quiet; appended after the README's own arguments, so these values win.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "data.batch_size=16",
    "logger=none",
    "print_config=false",
    "trainer.enable_progress_bar=false",
]
TINY_SEARCH = ["hparams_search.n_trials=1"]
ENTRY_POINTS = ("train.py", "eval.py", "scripts/report.py")
# Flags after which train.py answers without running anything.
NO_RUN_FLAGS = ("--help", "-h", "--cfg", "-c", "--info", "-i")
PLACEHOLDER = re.compile(r"<[a-z_ -]+>")
RUN_FOLDER = re.compile(r"outputs/(?P<kind>runs|multirun)/<date>/<time>_(?P<task>\w+)")
# Groups that are not experiment axes: Hydra's own settings and the output folders; and no group
# at all: Python's cache of conf/__init__.py (conf/ is the package reglab.conf).
NOT_IN_TABLE = {"hydra", "paths", "__pycache__"}
# `<same overrides>` (a resume): the arguments of the run whose folder the command names.
SAME_OVERRIDES = "<same overrides>"
# Examples with these arguments are slow tests: joblib's worker processes each import Lightning.
SLOW = {"hydra/launcher=joblib"}
# The modules that hold reglab's registries (layers, init schemes, penalty kinds, schedules, ops,
# mixing ops, samplers and pruners): imported before a plugin runs, so its entries can be undone.
REGISTRY_MODULES = (
    "reglab.nn",
    "reglab.regularization",
    "reglab.callbacks.dropout_schedule",
    "reglab.augment",
    "reglab.search",
)


# --- reading the README -------------------------------------------------------------------------


@dataclass
class Block:
    """A fenced code block: its info string, its lines and where it starts."""

    lang: str
    lines: list[str]
    start: int  # character offset of the opening fence

    @property
    def path(self) -> str | None:
        """The file a block shows, from a first-line comment `# my_lab/penalties.py`."""
        match = re.fullmatch(r"#\s*(\S+\.(?:py|yaml))\s*", self.lines[0]) if self.lines else None
        return match[1] if match else None


@dataclass
class Example:
    """One README command: the text shown, its arguments, and how it must end."""

    text: str  # as README shows it (the test's id)
    program: str  # train.py | eval.py | scripts/report.py | reglab-report
    args: list[str]
    start: int  # where README shows it (orders producers before their users)
    error: str | None = None  # a `$ ...` example's `reglab: error: ...` line

    @property
    def multirun(self) -> bool:
        """Whether the command is a `-m` sweep."""
        return "-m" in self.args or "--multirun" in self.args

    @property
    def plugins(self) -> bool:
        """Whether the command imports README's plugin files."""
        return any(arg.startswith("plugins=") for arg in self.args)

    @property
    def runs(self) -> bool:
        """Whether the command trains (and so must leave a metrics.json)."""
        return self.program == "train.py" and not any(a in NO_RUN_FLAGS for a in self.args)


FENCE = re.compile(r"^```(?P<lang>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`(?P<code>python [^`]+)`")


def blocks(text: str = TEXT) -> list[Block]:
    """Every fenced code block of the README."""
    return [
        Block(m["lang"].strip(), m["body"].splitlines(), m.start()) for m in FENCE.finditer(text)
    ]


def _commands(tokens: list[str]) -> list[list[str]]:
    """The `python <entry point> ...` / `reglab-report ...` commands of a shell line's tokens."""
    found, current = [], []
    for token in [*tokens, "&&"]:
        if token in ("&&", "||", ";"):
            if current:
                found.append(current)
            current = []
        else:
            current.append(token)
    return [
        command
        for command in found
        if (command[0] == "python" and len(command) > 1 and command[1] in ENTRY_POINTS)
        or command[0] == "reglab-report"
    ]


def _example(command: list[str], text: str, start: int, **kwargs) -> Example:
    if command[0] == "reglab-report":
        return Example(text, "reglab-report", command[1:], start, **kwargs)
    return Example(text, command[1], command[2:], start, **kwargs)


def _line_examples(line: str, start: int) -> list[Example]:
    """The commands of one shell line, and a `# or: <command>` alternative in its comment."""
    tokens = shlex.split(
        line.replace(SAME_OVERRIDES, SAME_OVERRIDES.replace(" ", "_")), comments=True
    )
    commands = _commands(tokens)
    text = line.split(" #")[0].strip() if " #" in line else line.strip()
    examples = [_example(c, text, start) for c in commands]
    alternative = re.search(r"#\s*or:\s*(?P<command>.+)$", line)
    if alternative:
        for command in _commands(shlex.split(alternative["command"])):
            examples.append(_example(command, alternative["command"].strip(), start))
    return examples


def readme_examples(text: str = TEXT) -> list[Example]:
    """Every command the README shows, in README order."""
    examples = []
    for block in blocks(text):
        for index, line in enumerate(block.lines):
            start = block.start + index
            if line.startswith("$ "):  # a console: the command, then what it prints
                shown = block.lines[index + 1] if index + 1 < len(block.lines) else ""
                for example in _line_examples(line[2:], start):
                    example.error = shown if shown.startswith("reglab: error:") else None
                    examples.append(example)
            elif block.lang in ("bash", "sh", "shell", "console"):
                examples.extend(_line_examples(line, start))
    outside = FENCE.sub(lambda m: "\0" * len(m[0]), text)  # keep offsets, drop fenced blocks
    for match in INLINE.finditer(outside):
        code = " ".join(match["code"].split())  # an inline span may wrap over lines
        if any(f"python {entry}" in code for entry in ENTRY_POINTS):
            examples.extend(_line_examples(code, match.start()))
    return sorted(examples, key=lambda e: e.start)


EXAMPLES = readme_examples()


# --- running them -------------------------------------------------------------------------------


def run_report_in_process(args: Sequence[str], cwd: Path) -> int:
    """`reglab-report <args>` / `python scripts/report.py <args>` inside this process."""
    from reglab.report.cli import main

    saved_cwd = Path.cwd()
    os.chdir(cwd)
    try:
        main(list(args))
        return 0
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        os.chdir(saved_cwd)


def _swept(arg: str) -> tuple[str, list[str]] | None:
    """`key=a,b,c` (outside brackets and quotes) as (key, [a, b, c]); None if not a sweep."""
    key, sep, value = arg.partition("=")
    if not sep or key.startswith("-") or re.search(r"[\[\]{}()'\"]", value) or "," not in value:
        return None
    return key, value.split(",")


def experiment_sweep(args: Sequence[str]) -> dict[str, list[str]]:
    """The `hydra.sweeper.params` of an `experiment=...` named on the command line."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "experiment":
            config = yaml.safe_load((CONF_DIR / "experiment" / f"{value}.yaml").read_text())
            params = ((config or {}).get("hydra") or {}).get("sweeper", {}).get("params", {})
            return {k: str(v).split(",") for k, v in params.items()}
    return {}


def sweep_jobs(example: Example) -> int:
    """How many jobs the cut-down sweep runs: two side by side with a parallel launcher, else one."""
    return 2 if any(arg.startswith("hydra.launcher.n_jobs=") for arg in example.args) else 1


def tiny(example: Example) -> list[str]:
    """The example's arguments plus what makes it short.

    A sweep keeps the first value of each swept key (the basic sweeper lets a later value of a
    key replace an earlier one); with a parallel launcher, two values of the first key, so that
    two jobs run side by side.
    """
    args = list(example.args)
    if not example.runs:
        return args
    extra = list(TINY)
    if any(arg.startswith("ckpt_path=") for arg in args):
        extra.append("trainer.max_epochs=2")  # one epoch past the run it resumes
    if any(arg.startswith("hparams_search=") for arg in args):
        extra += TINY_SEARCH
    if example.multirun:
        swept = dict(filter(None, map(_swept, args)))
        swept = {**experiment_sweep(args), **swept}
        keep = sweep_jobs(example)
        for index, (key, values) in enumerate(swept.items()):
            extra.append(f"{key}={','.join(values[:keep] if index == 0 else values[:1])}")
    return [*args, *extra]


def records(folder: Path) -> list[dict]:
    """Every metrics.json under `folder`/outputs (runs, sweep jobs, search trials)."""
    return [json.loads(p.read_text()) for p in sorted((folder / "outputs").rglob("metrics.json"))]


def write_shown_files(folder: Path) -> list[Path]:
    """Write each block README shows as a new file (plugins, their YAML) under `folder`."""
    written = []
    for block in blocks():
        if block.path and not (ROOT / block.path).exists():
            path = folder / block.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(block.lines) + "\n")
            written.append(path)
    return written


def registries() -> list[Registry]:
    """Every registry a plugin can add to (their modules imported, so none appears later)."""
    for module in REGISTRY_MODULES:
        importlib.import_module(module)
    return [obj for obj in gc.get_objects() if issubclass(type(obj), Registry)]


@contextlib.contextmanager
def plugin_files(folder: Path) -> Iterator[Path | None]:
    """README's plugin files written under `folder` and importable; yields its conf folder.

    What importing them registers is unregistered afterwards and the modules forgotten, so the
    toy entries (`group_lasso`, `scaled_tanh`) do not reach other tests, which register their own.
    """
    written = write_shown_files(folder)
    packages = {p.relative_to(folder).parts[0] for p in written if p.suffix == ".py"}
    packages = {name.removesuffix(".py") for name in packages}
    before = {id(registry): set(registry.names()) for registry in registries()}
    sys.path.insert(0, str(folder))
    try:
        yield folder / "conf" if (folder / "conf").is_dir() else None
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.partition(".")[0] in packages]:
            del sys.modules[name]
        for registry in registries():
            for name in set(registry.names()) - before.get(id(registry), set(registry.names())):
                registry.unregister(name)


@dataclass
class Done:
    """What running an example left: exit code, output, and its working folder."""

    code: int
    folder: Path
    args: list[str]
    stdout: str = ""
    stderr: str = ""


class Workspace:
    """Runs examples, each in its own folder, each at most once per test session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: dict[int, Done] = {}

    def run(self, example: Example) -> Done:
        """Run `example` (once); placeholders name what an earlier example made."""
        key = EXAMPLES.index(example)
        if key in self.done:
            return self.done[key]
        folder = self.root / f"example_{key:02d}"
        folder.mkdir()
        args = [a for arg in tiny(example) for a in self.concrete(arg, example)]
        if example.error:  # the command line itself is the point: a real process
            done = self.subprocess(example, args, folder)
        else:
            runner = self.in_process_runner(example)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.ExitStack() as stack:
                if example.plugins:
                    conf = stack.enter_context(plugin_files(folder))
                    if conf and not any(a.startswith("hydra.searchpath=") for a in args):
                        args = [*args, f"hydra.searchpath=[file://{conf}]"]  # a user's conf folder
                stack.enter_context(contextlib.redirect_stdout(out))
                stack.enter_context(contextlib.redirect_stderr(err))
                code = runner(args, folder)
            done = Done(code, folder, args, out.getvalue(), err.getvalue())
        self.done[key] = done
        return done

    @staticmethod
    def in_process_runner(example: Example) -> Callable[[Sequence[str], Path], int]:
        if example.program == "train.py":
            return run_train_in_process
        if example.program == "eval.py":
            return lambda args, cwd: run_entry_in_process("eval.py", args, cwd)
        return run_report_in_process

    @staticmethod
    def subprocess(example: Example, args: list[str], folder: Path) -> Done:
        assert example.program == "train.py", example.text
        done = run_train_py(args, folder)
        return Done(done.returncode, folder, args, done.stdout, done.stderr)

    def concrete(self, arg: str, example: Example) -> list[str]:
        """`arg`, a placeholder replaced by what the README's producing command made or was."""
        match = RUN_FOLDER.search(arg)
        if match:
            made = self.produce(example, multirun=match["kind"] == "multirun", task=match["task"])
            return [arg.replace(match[0], str(made))]
        if arg == "<folder>":  # `reglab-report <folder>`: the sweep folder of its line
            return [str(self.produce(example, multirun=True, task=None))]
        if arg == SAME_OVERRIDES.replace(" ", "_"):
            return self.producer(example, multirun=False).args
        return [arg]

    def producer(self, user: Example, multirun: bool) -> Example:
        """The nearest earlier README training command that makes a folder of that kind."""
        producers = [
            e
            for e in EXAMPLES
            if e.start <= user.start
            and e.runs
            and e.multirun == multirun
            and not (e.plugins or e.error or _skip_reason(e) or SAME_OVERRIDES in e.text)
            and not any(a.startswith("hparams_search=") for a in e.args)  # writes outputs/search
        ]
        assert producers, f"{user.text}: no earlier README command makes its folder"
        return producers[-1]

    def produce(self, user: Example, multirun: bool, task: str | None) -> Path:
        """The output folder of the nearest earlier README training command of that kind."""
        producer = self.producer(user, multirun)
        done = self.run(producer)
        assert done.code == 0, done.stderr[-3000:]
        kind = "multirun" if multirun else "runs"
        made = sorted((done.folder / "outputs" / kind).glob(f"*/*_{task or '*'}"))
        assert made, f"{producer.text} made no outputs/{kind}/<date>/<time>_{task}"
        return made[-1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("readme"))


def _skip_reason(example: Example) -> str | None:
    """Why an example cannot run as shown: a placeholder no earlier command's folder fills."""
    text = RUN_FOLDER.sub("", example.text)
    for placeholder in ("<folder>", SAME_OVERRIDES):
        text = text.replace(placeholder, "")
    placeholder = PLACEHOLDER.search(text)
    return f"{placeholder[0]} stands for the user's own arguments" if placeholder else None


def _params() -> list:
    params = []
    for example in EXAMPLES:
        reason = _skip_reason(example)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        if any(arg in SLOW for arg in example.args):
            marks.append(pytest.mark.slow)
        params.append(pytest.param(example, id=example.text, marks=marks))
    return params


def _error_pattern(shown: str) -> str:
    """A regex for the shown error line: `...` stands for text that may differ."""
    parts = [re.escape(part) for part in shown.strip().split("...")]
    return ".*".join(parts) + ("" if shown.strip().endswith("...") else "$")


# --- the tests ----------------------------------------------------------------------------------


def test_the_readme_shows_the_commands_this_file_runs():
    texts = [e.text for e in EXAMPLES]
    assert any(t.startswith("python train.py -m") for t in texts)
    assert any(e.error for e in EXAMPLES) and any(e.plugins for e in EXAMPLES)
    assert any(e.program == "eval.py" for e in EXAMPLES)
    assert len(EXAMPLES) >= 20, texts


def registered() -> dict[int, list[str]]:
    """The names in every registry."""
    return {id(registry): registry.names() for registry in registries()}


@pytest.mark.parametrize("example", _params())
def test_readme_example(example: Example, workspace: Workspace):
    before = registered() if example.plugins else None
    done = workspace.run(example)
    if example.plugins:  # README's toy entries are gone again, for the other tests
        assert registered() == before
        assert not [m for m in sys.modules if m.partition(".")[0] == "my_lab"]
    output = (done.stdout + done.stderr)[-4000:]
    if example.error:
        lines = [line for line in done.stderr.splitlines() if line.startswith("reglab: error:")]
        assert done.code == 2, output
        assert len(lines) == 1 and re.match(_error_pattern(example.error), lines[0]), (
            f"README shows {example.error!r}; got {lines}"
        )
        trained = [p.name for p in done.folder.rglob("*") if p.suffix in (".json", ".ckpt")]
        assert not trained  # nothing trained
        return
    assert done.code == 0, output
    if example.runs:
        made = records(done.folder)
        assert made, f"no metrics.json written\n{output}"
        assert all(record["status"] == "ok" for record in made), [r["status"] for r in made]
        if example.multirun:  # a later value of a swept key replaced the README's sweep
            assert len(made) == sweep_jobs(example), output
        if any(arg.startswith("ckpt_path=") for arg in example.args):  # resumed: one more epoch
            assert [record["epochs_run"] for record in made] == [2]
    elif "--help" in example.args:
        assert "regularization:" in done.stdout and "model:" in done.stdout, output
    elif "--cfg" in example.args:
        assert "optimizer:" in done.stdout and "_target_" in done.stdout, output
    elif example.program == "eval.py":
        assert list((done.folder / "outputs" / "eval").rglob("eval_metrics.json")), output
    elif example.program in ("scripts/report.py", "reglab-report"):
        folder = Path(done.args[0])
        assert (folder / "report.md").is_file() and (folder / "report.csv").is_file(), output


# --- the config-group table ---------------------------------------------------------------------


def group_table(text: str = TEXT) -> dict[str, set[str]]:
    """The options README's config-group table lists for each group."""
    section = text.split("## Config groups", 1)[1].split("\n#", 1)[0]
    table = {}
    for row in re.findall(r"^\|\s*`(?P<group>[\w/]+)`\s*\|(?P<options>[^|]*)\|", section, re.M):
        group, options = row
        table[group] = set(re.findall(r"`([\w-]+)`", options))
    return table


def conf_groups() -> dict[str, set[str]]:
    """The options of each config group in conf/ (base.yaml holds shared keys, not an option)."""
    return {
        folder.name: {p.stem for p in folder.glob("*.yaml")} - set(SHARED_FILES)
        for folder in sorted(CONF_DIR.iterdir())
        if folder.is_dir() and folder.name not in NOT_IN_TABLE
    }


def test_the_config_group_table_lists_every_group_and_option():
    table, groups = group_table(), conf_groups()
    assert set(table) == set(groups)
    assert {g: sorted(o) for g, o in table.items()} == {g: sorted(o) for g, o in groups.items()}


def test_a_block_showing_a_repository_file_shows_its_values():
    # e.g. `# conf/model/selu_net.yaml`: README may leave keys out, but what it shows is the file's.
    shown = [b for b in blocks() if b.path and (ROOT / b.path).exists()]
    assert shown
    for block in shown:
        if not block.path.endswith(".yaml"):
            continue
        readme = yaml.safe_load("\n".join(block.lines))
        actual = yaml.safe_load((ROOT / block.path).read_text())
        assert {k: actual.get(k) for k in readme} == readme, block.path


def test_the_version_is_one_number_everywhere():
    # README's newest "What changed in X.Y", the installed package's metadata (pyproject reads
    # reglab.__version__) and what metrics.json records (reglab.__version__) agree.
    import importlib.metadata

    import reglab

    changed = re.findall(r"^## What changed in (\d+\.\d+)", README.read_text(), re.MULTILINE)
    assert changed, "README has no 'What changed in' section"
    newest = max(changed, key=lambda v: tuple(map(int, v.split("."))))
    assert reglab.__version__.rsplit(".", 1)[0] == newest
    assert importlib.metadata.version("reglab") == reglab.__version__


def test_the_last_checkpoint_is_described_one_way():
    # `last.ckpt` is written at most every `min_seconds_between_saves` and at the final epoch
    # (conf/callbacks/last_checkpoint.yaml): no README sentence may say "overwritten each epoch".
    text = " ".join(README.read_text().split())
    assert "overwritten each epoch" not in text
    seconds = yaml.safe_load((CONF_DIR / "callbacks" / "last_checkpoint.yaml").read_text())
    interval = seconds["last_checkpoint"]["min_seconds_between_saves"]
    assert f"at most every {interval:g} s" in text


@pytest.mark.slow  # a whole 20-epoch LSTM run (several seconds to a minute); CI runs the slow tests
def test_the_lstm_figure_is_what_its_command_gives(tmp_path):
    # README's sequence-model block: `python train.py model=lstm_net data.layout=sequence  # ...
    # acc 0.978 (seed 42)`. The figure must come out of that command as typed (thread counts
    # may move the last digit: within 0.006, i.e. two test images of 360).
    line = next(
        line
        for line in README.read_text().splitlines()
        if line.startswith("python train.py model=lstm_net data.layout=sequence ")
    )
    command, _, comment = line.partition("#")
    shown = float(re.search(r"acc (0\.\d+) \(seed 42\)", comment).group(1))
    args = shlex.split(command)[2:]
    result = run_train_py([*args, "trainer.enable_progress_bar=false"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = [json.loads(p.read_text()) for p in tmp_path.rglob("metrics.json")]
    assert record["seed"] == 42
    assert abs(record["test"]["test/acc"] - shown) <= 0.006, record["test"]


# --- Extending reglab: the table of files to touch ------------------------------------------------

EXTENSIONS = (
    "a penalty", "a constraint", "a layer", "a data set", "a task", "a dropout schedule",
    "an augmentation op", "a model config",
)  # fmt: skip


def extending_table(text: str = TEXT) -> dict[str, str]:
    """README's "Extending reglab" table: what to add -> the rest of its row."""
    section = text.split("## Extending reglab", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| (a[n]? [\w ]+?) \|(.*)\|$", section, re.M))


def test_the_extending_table_has_a_row_per_extension_and_a_test_for_each():
    table = extending_table()
    assert list(table) == list(EXTENSIONS)
    for what, row in table.items():
        tests = re.findall(r"`(tests/test_[\w]+\.py)`", row)
        assert len(tests) == 1, what


def test_every_file_the_extending_table_names_exists():
    # Repository paths (src/..., conf/..., tests/...); `<name>` stands for the new option's file,
    # whose folder must exist.
    named = [
        path
        for row in extending_table().values()
        for path in re.findall(r"`((?:src|conf|tests)/[^`]+)`", row)
    ]
    assert len(named) >= 2 * len(EXTENSIONS)
    for path in named:
        target = ROOT / path.split("<", 1)[0]
        assert target.exists(), (
            f"README's Extending reglab table names {path}, which does not exist"
        )
