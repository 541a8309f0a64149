"""Command-line checks that run before Hydra: an unknown group option or key, a renamed key, a
`task_name` that would put the run folder outside `outputs/`, or a value Hydra's override syntax
cannot read (an unquoted `~`) gets one line.

Group options are looked up in `conf/` and in every folder the command line adds to Hydra's
search path (`hydra.searchpath=[file:///my/conf]`, `--config-dir`), so options a user keeps in
their own config folder are accepted as Hydra accepts them.

Keys added with `+` (Hydra adds them to the config whether or not anything reads them), by
where they go:
- a new top-level key or group: refused unless a primary config or group folder has it, or it
  is one of APPENDABLE_KEYS;
- a key of a group in CLOSED_GROUPS (`+regularization.strenght=...`): refused unless an option
  of that group sets it, since those options list every key their code reads (whether the chosen
  option takes it is then its constructor's check);
- a key of `model`: checked once composed (reglab.config.check_model_keys): the builder reads
  `layers`, `init` and `head`, any other key must be read through an interpolation
  (`${model.width}` in `layers`, `${oc.select:model.lr,...}` in the optimizer);
- a key of `trainer`: must be an argument of Lightning's Trainer (reglab.config.validate);
- a key of `optimizer`, `scheduler`, `callbacks.*`, `logger.*`: its constructor's arguments,
  checked before it is built.
Each refusal names the closest key there is (`did you mean trainer.max_epochs?`).

A key Hydra cannot override because the composed config lacks it (`trainer.max_epoch=3`,
`regularisation=l2`) is found while Hydra composes (`one_line_composition_errors`): one line with
the closest key, exit 2, instead of Hydra's error and its advice to add the key with `+`.

Nothing here imports torch or Lightning: `--help`, `--cfg` and these checks answer in about a
second (tests/test_startup.py).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reglab import checks
from reglab.errors import ConfigError
from reglab.names import CONTROL_GROUPS
from reglab.releases import is_tested
from reglab.yaml_tags import tag_problems

# `group=option`, `+group=option`, `group=a,b` (multirun); not `group.key=value` nor `hydra/...`.
_GROUP_OVERRIDE = re.compile(r"^\+{0,2}(?P<group>[A-Za-z_][\w/]*)=(?P<value>[^()\[\]{}]*)$")
_SEARCHPATH = re.compile(r"^\+{0,2}hydra\.searchpath=\[(?P<paths>.*)\]$")
_CONFIG_DIR_FLAGS = ("--config-dir", "-cd")
_NO_RUN_FLAGS = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
)
_HELP_FLAGS = ("--help", "-h", "--hydra-help")
# `+key=...` / `++key...=...`: an append, whose head Hydra adds to the config even if nothing reads it.
_APPEND = re.compile(r"^\+{1,2}(?P<key>[^=~]+)=")
_TASK_NAME = re.compile(r"^\+{0,2}task_name=(?P<value>.*)$")
# Sweep functions whose arguments are the values: `task_name=choice(a,b)`.
_SWEEP_FUNCTION = re.compile(r"^\w+\((?P<values>.*)\)$")
# A piece of a folder name: the run folder is outputs/runs/<date>/<time>_${task_name}.
# Top-level keys read although no config file sets them: `+resume_sweep=<folder>` (sweep resume)
# and `+reglab.allow_any_target=true` (lifts the `_target_` allow-list).
APPENDABLE_KEYS = ("resume_sweep", "reglab")
# Groups whose options set every key their code reads: an appended key must be one of those.
CLOSED_GROUPS = ("data", *CONTROL_GROUPS)
# Quoted pieces of an override value ('...' or "..."), where Hydra's grammar takes any character.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
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
    for index, arg in enumerate(argv):
        flag, _, value = arg.partition("=")
        if flag in _CONFIG_DIR_FLAGS:
            value = value or (argv[index + 1] if index + 1 < len(argv) else "")
            folders.append(Path(value))
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


def bad_task_names(argv: Sequence[str]) -> list[str]:
    """One message per `task_name=` value (each value of a sweep) that is not a plain folder name."""
    problems = []
    for arg in argv:
        match = _TASK_NAME.match(arg)
        if not match:
            continue
        value = match["value"]
        function = _SWEEP_FUNCTION.match(value)
        for name in (function["values"] if function else value).split(","):
            try:
                checks.folder_name("task_name", name.strip().strip("'\""))
            except ConfigError as error:
                problems.append(str(error))
    return problems


def known_keys(folders: Sequence[Path]) -> set[str]:
    """Top-level keys reglab reads: those of the primary configs, the config groups, appendables."""
    keys = set(APPENDABLE_KEYS)
    for folder in filter(Path.is_dir, folders):
        for primary in folder.glob("*.yaml"):
            keys.update(str(key) for key in OmegaConf.load(primary) if key != "defaults")
        keys.update(path.name for path in folder.iterdir() if is_config_group(path))
    return keys - {"hydra"}


def is_config_group(path: Path) -> bool:
    """Whether `path` is a config group folder: not Python's `__pycache__`, which the packaged
    configs (conf/ as the package reglab.conf) get when imported; Hydra skips it too."""
    return path.is_dir() and path.name != "__pycache__"


def unknown_keys(argv: Sequence[str], conf_dir: Path) -> list[str]:
    """One message per `+key=...` that no code would read (a typo), with the closest key.

    A new top-level key must be one a primary config or a group folder has (`+group/sub=option`
    needs the group folder); a key under a group of CLOSED_GROUPS one that an option of the group
    sets. Appends to other nodes (`+optimizer.betas=[0.9,0.99]`) are checked once composed.
    """
    folders = config_dirs(argv, conf_dir)
    known = known_keys(folders)
    problems = []
    for arg in argv:
        match = _APPEND.match(arg)
        if not match or match["key"].startswith("hydra"):
            continue
        key = match["key"].partition("@")[0]
        head, _, rest = key.partition(".")
        found = any((folder / head).is_dir() for folder in folders) if "/" in head else None
        if found is False:
            problems.append(
                f"{head}: no config key or group of that name (a typo?); "
                f"valid: {', '.join(sorted(known))}"
            )
        elif found is None and head not in known:
            problems.append(
                f"{head}: no config key or group of that name (a typo?){checks.closest(head, known)}"
            )
        elif head in CLOSED_GROUPS and rest:
            sub = rest.partition(".")[0]
            valid = group_keys(head, folders)
            if sub not in valid:
                problems.append(
                    f"{head}.{sub}: no option of {head} has this key{checks.closest(sub, valid, head)}"
                )
    return problems


def group_keys(group: str, folders: Sequence[Path]) -> set[str]:
    """The keys any option of `group` sets (its shared `base` file's included), and `_target_`."""
    keys = {"_target_"}
    for folder in folders:
        for option in (folder / group).glob("*.yaml"):
            node = OmegaConf.load(option)
            if isinstance(node, DictConfig):
                keys.update(str(key) for key in node if key != "defaults")
    return keys


def unquoted_tildes(argv: Sequence[str]) -> list[str]:
    """One message per `key=value` whose value holds a `~` outside quotes.

    Hydra's override grammar takes `~` only as the delete prefix (`~key`): `data.path=~/mnist`
    fails with a LexerNoViableAltException. Quoted, the value is a plain string, and reglab
    expands `~` in the paths it reads.
    """
    problems = []
    for arg in argv:
        key, equals, value = arg.partition("=")
        if not equals or key.startswith(("-", "~")) or "~" not in _QUOTED.sub("", value):
            continue
        key = key.lstrip("+")
        home = f" or let the shell expand it: {key}=$HOME{value[1:]}" if value[:2] == "~/" else ""
        problems.append(
            f"{key}: Hydra reads '~' only inside quotes, got {value!r}: "
            f"""write '{key}="{value}"'{home}"""
        )
    return problems


def unwritable_output_folder(argv: Sequence[str]) -> list[str]:
    """A message if the folder Hydra will create for this run (or sweep) cannot be written.

    Hydra creates it before any reglab code runs, and fails with a traceback. A folder given on
    the command line is checked by its fixed part (before the first `${...}`): created, then a
    probe file written there (Hydra would create it anyway). Otherwise the config's folder may
    be anywhere (a debug option moves it), so only its nearest existing parent is checked.
    """
    if any(arg.partition("=")[0] in _NO_RUN_FLAGS for arg in argv):
        return []  # help and config printing create no folder
    key = "hydra.sweep.dir" if any(arg in ("-m", "--multirun") for arg in argv) else "hydra.run.dir"
    given = [arg.partition("=")[2] for arg in argv if arg.lstrip("+").partition("=")[0] == key]
    if not given:
        return (
            []
            if os.access(_existing_parent(Path.cwd() / "outputs"), os.W_OK)
            else [f"{key}: cannot write in {str(Path.cwd())!r}: permission denied"]
        )
    folder = given[-1].strip("'\"")
    fixed = folder.split("${", 1)[0]
    path = Path(
        fixed if fixed == folder or fixed.endswith("/") else fixed.rpartition("/")[0] or "."
    )
    probe = path.expanduser() / ".reglab-write-probe"
    # The folders made for the probe are removed again: Hydra makes them, and a run that keeps
    # nothing removes its folder only if the folder was not there before (reglab.folder_state).
    made = [folder for folder in (probe.parent, *probe.parent.parents) if not folder.exists()]
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return [f"{key}: cannot write in {str(path)!r}: {error.strerror or error}"]
    finally:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
    return []


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def list_help_groups_from_one_repository(argv: Sequence[str] | None = None) -> None:
    """For `--help`: let Hydra list the config groups from one copy of its config repository.

    Hydra 1.3 deep-copies its whole config repository (every structured config of every plugin)
    for each group it lists, about 130 copies: 1.2 s of the 2.4 s `--help` takes here. The
    listing only reads that copy, so one copy per (primary config, overrides) prints the same
    help. Hydra has no public hook for this: its private `ConfigLoaderImpl.get_group_options` is
    replaced, in a help command's process only and on the releases in TESTED_HYDRA only; another
    release (or one without these internals) lists the groups its own way. The listing leaves out
    a group's shared keys file (`data/base.yaml`): it is not an option to pick.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not any(arg.partition("=")[0] in _HELP_FLAGS for arg in argv):
        return
    if not hydra_is_tested(hydra_version()):
        return
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.object_type import ObjectType
    except ImportError:
        return
    create_repository = getattr(ConfigLoaderImpl, "_parse_overrides_and_create_caching_repo", None)
    if create_repository is None:
        return
    repositories: dict[tuple, Any] = {}

    def get_group_options(
        self: ConfigLoaderImpl,
        group_name: str,
        results_filter: ObjectType | None = ObjectType.CONFIG,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        key = (id(self), config_name, tuple(overrides or ()))
        if key not in repositories:
            repositories[key] = create_repository(self, config_name, list(overrides or ()))[1]
        options = repositories[key].get_group_options(group_name, results_filter)
        return [option for option in options if option not in SHARED_FILES]

    # Hydra's own method stays reachable (a second call, or a test, finds it under __wrapped__).
    hydras_own = ConfigLoaderImpl.get_group_options
    get_group_options.__wrapped__ = getattr(hydras_own, "__wrapped__", hydras_own)
    ConfigLoaderImpl.get_group_options = get_group_options


@contextmanager
def one_line_composition_errors() -> Iterator[None]:
    """While Hydra composes inside this block, an override of a key the config lacks prints one
    `reglab: error:` line naming the closest key and exits 2.

    Hydra applies the command line's key overrides to the composed config in
    `ConfigLoaderImpl._apply_overrides_to_config`, the one place where both the failing override
    and the keys there are known; it is wrapped to apply them one at a time, so the failing one is
    known. Any other composition error, a Hydra without this method, or `HYDRA_FULL_ERROR=1`
    keeps Hydra's own message.
    """
    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.errors import ConfigCompositionException
    except ImportError:
        yield
        return
    original = ConfigLoaderImpl.__dict__.get("_apply_overrides_to_config")
    if (
        not hydra_is_tested(hydra_version())
        or not isinstance(original, staticmethod)
        or os.environ.get("HYDRA_FULL_ERROR") == "1"
    ):
        yield
        return

    def apply_one_at_a_time(overrides: list[Any], cfg: DictConfig) -> None:
        for override in overrides:
            try:
                original.__func__([override], cfg)
            except ConfigCompositionException:
                problem = composition_problem(override, cfg)
                if problem is None:
                    raise
                print(f"reglab: error: {problem}", file=sys.stderr)
                raise SystemExit(2) from None

    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply_one_at_a_time)
    try:
        yield
    finally:
        ConfigLoaderImpl._apply_overrides_to_config = original


# The Hydra releases whose private `_apply_overrides_to_config` and `get_group_options` the two
# hooks above were checked against (1.3.x); any other keeps Hydra's own message and help listing
# (tests/test_config_safety.py, tests/test_startup.py).
TESTED_HYDRA = ((1, 3), (1, 4))


def hydra_version() -> str:
    """The installed hydra-core's version (imported here: `--help` answers before Hydra loads)."""
    import hydra

    return hydra.__version__


def hydra_is_tested(version: str) -> bool:
    """Whether `version` (e.g. '1.3.8') is one of TESTED_HYDRA's releases: [low, high)."""
    return is_tested(version, TESTED_HYDRA)


def composition_problem(override: Any, cfg: DictConfig) -> str | None:
    """The message for a Hydra override (`override.key_or_group`) that failed on `cfg`, if its
    key is missing (a change or delete) or already there (an append); None otherwise."""
    key = override.key_or_group
    parent: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(parent, DictConfig):
            return None  # a list index or a value: Hydra's message says more
        if part in parent:
            parent = parent._get_node(part)
            continue
        if override.is_add() and not override.is_force_add():
            return None
        where = ".".join(parts[:depth])
        keys = [str(k) for k in parent if not (k == "hydra" and not where)]
        what = "no such key" if where else "no such key or config group"
        return f"{'.'.join(parts[: depth + 1])}: {what}{checks.closest(part, keys, where)}"
    if override.is_add() and not override.is_force_add():
        return f"{key}: is set already; drop the '+' to change it ({key}=...)"
    return None


def exit_on_bad_command_line(conf_dir: Path, argv: Sequence[str] | None = None) -> None:
    """Print each problem as `reglab: error: ...` on stderr and exit 2 if there is any."""
    argv = sys.argv[1:] if argv is None else argv
    problems = (
        renamed_keys(argv)
        + unquoted_tildes(argv)
        + unknown_group_options(argv, conf_dir)
        + unknown_keys(argv, conf_dir)
        + bad_task_names(argv)
        + tag_problems(config_dirs(argv, conf_dir))  # !!python/... in a config file
    )
    if not problems:  # a typo must not create folders
        problems = unwritable_output_folder(argv)
    for problem in problems:
        print(f"reglab: error: {problem}", file=sys.stderr)
    if problems:
        raise SystemExit(2)
