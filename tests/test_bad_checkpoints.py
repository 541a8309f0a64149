"""Bad checkpoints get one line naming `ckpt_path`: never a traceback, never torch's advice to load
the file with weights_only=False. Each row is a file a user could pass, made from a real one.

The rows run through reglab.checkpoint (what resuming and eval.py read files with), through
eval.py's evaluate in-process, and through a training run resumed from them.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, SMALL_RUN, compose_config
from reglab import checkpoint
from reglab.build import build_data_and_model
from reglab.errors import ConfigError
from reglab.evaluate import evaluate
from reglab.run import train

TRAIN = [*SMALL_RUN, "trainer.max_epochs=2"]  # the run of conftest's run_dir fixture


@pytest.fixture(scope="module")
def real(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _bytes(cut: Callable[[bytes], bytes]) -> Callable[[Path, bytes, dict], None]:
    return lambda path, data, real: path.write_bytes(cut(data))


def _saved(make: Callable[[dict], object]) -> Callable[[Path, bytes, dict], None]:
    return lambda path, data, real: torch.save(make(real), path)


def _pickled(path: Path, data: bytes, real: dict) -> None:
    path.write_bytes(pickle.dumps({"state_dict": real["state_dict"]}))


class _RunsACommand:
    """Unpickled without weights_only, this would run `touch <path>.pwned`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}.pwned",))


def _os_system_payload(path: Path, data: bytes, real: dict) -> None:
    torch.save({**real, "payload": _RunsACommand(path)}, path)


def _without(*keys: str) -> Callable[[dict], dict]:
    return lambda real: {k: v for k, v in real.items() if k not in keys}


# (id, how to write the file from the real checkpoint's bytes / dict, what the line says)
BAD_FILES = [
    ("empty", _bytes(lambda d: b""), "is empty (0 bytes)"),
    ("first-half", _bytes(lambda d: d[: len(d) // 2]), "is truncated or damaged"),
    ("first-100-bytes", _bytes(lambda d: d[:100]), "is truncated or damaged"),
    ("last-bytes-cut", _bytes(lambda d: d[:-30]), "is truncated or damaged"),
    ("zip-header-only", _bytes(lambda d: d[:4]), "is truncated or damaged"),
    ("garbage", _bytes(lambda d: random.Random(0).randbytes(4096)), "not a torch checkpoint"),
    ("text", _bytes(lambda d: b"epoch: 3\nweights: none\n" * 20), "not a torch checkpoint"),
    ("gzipped", _bytes(gzip.compress), "not a torch checkpoint"),
    ("plain-pickle", _pickled, "not a torch checkpoint"),
    ("torch-dict", _saved(lambda real: {"a": 1}), "not a Lightning checkpoint (no state_dict"),
    ("bare-state-dict", _saved(lambda real: real["state_dict"]), "holds bare weights"),
    ("ordered-dict", _saved(lambda real: collections.OrderedDict(real["state_dict"])), "bare"),
    ("list", _saved(lambda real: [1, 2, 3]), "holds a list, not a Lightning checkpoint"),
    ("tensor", _saved(lambda real: torch.zeros(3)), "holds a Tensor, not a Lightning checkpoint"),
    ("nn-module", _saved(lambda real: torch.nn.Linear(2, 2)), "holds Python objects reglab will"),
    # A payload that would run a command when unpickled (os.system): torch blocks its module.
    ("os-system-payload", _os_system_payload, "holds Python objects reglab will not unpickle"),
    ("no-version", _saved(_without("pytorch-lightning_version")), "pytorch-lightning_version"),
    (
        "state-dict-not-tensors",
        _saved(lambda real: {**real, "state_dict": {"net.head.weight": [1.0]}}),
        "state_dict is not a mapping of names to tensors",
    ),
]
BAD_IDS = [row[0] for row in BAD_FILES]


def _bad_file(tmp_path: Path, run_dir: Path, real: dict, write) -> Path:
    """A copy of the run folder whose best (and only) checkpoint is the bad file."""
    bad_run = tmp_path / "bad_run"
    (bad_run / "checkpoints").mkdir(parents=True)
    shutil.copytree(run_dir / ".hydra", bad_run / ".hydra")
    path = bad_run / "checkpoints" / "epoch_000.ckpt"
    write(path, (run_dir / "checkpoints" / "last.ckpt").read_bytes(), real)
    shutil.copy(path, bad_run / "checkpoints" / "last.ckpt")
    return path


def _assert_one_line(error: ConfigError, expected: str) -> None:
    message = str(error)
    assert error.key == "ckpt_path", message
    assert expected in message and "\n" not in message, message
    assert "weights_only" not in message and "Traceback" not in message, message


# --- reading: read_checkpoint ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "write", "expected"), BAD_FILES, ids=BAD_IDS)
def test_read_checkpoint_refuses_the_file(tmp_path, run_dir, real, name, write, expected):
    path = _bad_file(tmp_path, run_dir, real, write)
    with pytest.raises(ConfigError) as error:
        checkpoint.read_checkpoint(path)
    _assert_one_line(error.value, expected)
    assert str(path) in str(error.value)  # which file


def test_a_pickled_payload_is_named_as_python_objects_not_as_damage(tmp_path, run_dir, real):
    path = _bad_file(tmp_path, run_dir, real, _os_system_payload)
    with pytest.raises(ConfigError) as error:
        checkpoint.read_checkpoint(path)
    _assert_one_line(error.value, "holds Python objects reglab will not unpickle (posix.system)")
    assert "damaged" not in str(error.value)
    assert not path.with_name(path.name + ".pwned").exists()  # nothing ran


@pytest.mark.parametrize(
    ("make", "which", "expected"),
    [
        (lambda tmp: tmp / "nowhere.ckpt", "last", "no checkpoint at"),
        (lambda tmp: tmp / "nowhere", "best", "no such file or folder"),
        (lambda tmp: tmp, "last", "checkpoints/last.ckpt"),
        (lambda tmp: tmp, "best", "nothing matches"),
    ],
    ids=["missing-file", "missing-folder", "folder-without-last", "folder-without-best"],
)
def test_a_path_without_a_checkpoint_is_refused(tmp_path, make, which, expected):
    with pytest.raises(ConfigError) as error:
        checkpoint.read_checkpoint(make(tmp_path), which=which)
    _assert_one_line(error.value, expected)


def test_the_real_checkpoint_reads_and_a_run_folder_resolves(run_dir, real):
    loaded = checkpoint.read_checkpoint(run_dir)  # a folder: its last.ckpt
    assert loaded.keys() == real.keys() and loaded["epoch"] == real["epoch"] == 1
    assert checkpoint.resolve(run_dir) == run_dir / "checkpoints" / "last.ckpt"
    best = checkpoint.resolve(run_dir, "best")
    assert best.parent == run_dir / "checkpoints" and best.match("epoch_*.ckpt")
    checkpoint.check_resumable(loaded)


def test_the_best_checkpoint_without_metrics_json_is_the_single_epoch_file(tmp_path, run_dir):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "metrics.json").unlink()  # an interrupted run's folder has no best recorded
    (best,) = (run / "checkpoints").glob("epoch_*.ckpt")
    assert checkpoint.resolve(run, "best") == best
    shutil.copy(best, run / "checkpoints" / "epoch_999.ckpt")
    with pytest.raises(ConfigError) as error:
        checkpoint.resolve(run, "best")
    _assert_one_line(error.value, "2 checkpoints match")
    (run / "metrics.json").write_text('{"best_checkpoint": "/elsewhere/epoch_005.ckpt"}')
    with pytest.raises(ConfigError) as error:
        checkpoint.resolve(run, "best")
    _assert_one_line(error.value, "is gone")


def test_a_weights_only_checkpoint_cannot_be_resumed(real):
    with pytest.raises(ConfigError) as error:
        checkpoint.check_resumable({k: v for k, v in real.items() if k != "optimizer_states"})
    _assert_one_line(error.value, "holds weights only (no optimizer_states)")


# --- a checkpoint of another model: check_matches --------------------------------------------

MLP = ["model=mlp", "model.width=16"]  # the checkpoint's model
OTHER_MODELS = [
    (
        ["model=mlp", "model.width=32"],
        "net.block_1.linear.weight is (16, 64) in it, (32, 64) in the model (and 4 other shapes)",
    ),
    ([*MLP, "model.depth=3"], "2 tensors of the model missing (net.block_3.linear.weight, ...)"),
    (
        [*MLP, "model.depth=1"],
        "2 tensors of the model missing (net.block.linear.weight, ...); 4 tensors the",
    ),
    (
        [*MLP, "model.norm=batch_norm1d"],
        "10 tensors of the model missing (net.block_1.batch_norm1d.weight, ...)",
    ),
    (["model=cnn"], "; 4 tensors the model does not have (net.block_1.linear.weight, ...)"),
    ([*MLP, "data=moons"], "net.block_1.linear.weight is (16, 64) in it, (16, 2) in the model"),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), OTHER_MODELS, ids=[" ".join(o[1:]) for o, _ in OTHER_MODELS]
)
def test_a_checkpoint_of_another_model_is_refused(tmp_path, real, overrides, expected):
    _, model = build_data_and_model(compose_config(["logger=none", *overrides], tmp_path))
    with pytest.raises(ConfigError) as error:
        checkpoint.check_matches(real, model)
    _assert_one_line(error.value, expected)
    assert "the checkpoint holds a different model than the config builds: " in str(error.value)


@pytest.mark.parametrize("overrides", [[], ["data.layout=flat"], ["model.dropout=0.5"]])
def test_the_same_model_matches(tmp_path, real, overrides):
    _, model = build_data_and_model(compose_config([*TRAIN, *overrides], tmp_path))
    checkpoint.check_matches(real, model)  # no error: names and shapes agree


# --- eval.py, in-process ---------------------------------------------------------------------


def _evaluate(ckpt_path: Path, output_dir: Path, *overrides: str) -> dict:
    given = [f"ckpt_path={ckpt_path}", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[*given, f"paths.output_dir={output_dir}"])
    return evaluate(cfg, given)


@pytest.mark.parametrize(("name", "write", "expected"), BAD_FILES, ids=BAD_IDS)
def test_eval_refuses_the_file(tmp_path, run_dir, real, name, write, expected):
    path = _bad_file(tmp_path, run_dir, real, write)
    for given in (path, path.parents[1]):  # the file, and its run folder (the best checkpoint)
        with pytest.raises(ConfigError) as error:
            _evaluate(given, tmp_path / "eval")
        _assert_one_line(error.value, expected)
    assert not (tmp_path / "eval").exists()


def test_eval_refuses_another_model(tmp_path, run_dir):
    with pytest.raises(ConfigError) as error:
        _evaluate(run_dir, tmp_path / "eval", "model.width=32")
    _assert_one_line(error.value, "holds a different model")


# --- resuming training from them (run.py reads ckpt_path through reglab.checkpoint) ----------

RESUME_ROWS = [row for row in BAD_FILES if row[0] in ("empty", "first-half", "garbage")]
RESUME_ROWS += [row for row in BAD_FILES if row[0] in ("torch-dict", "bare-state-dict")]
RESUME_ROWS += [row for row in BAD_FILES if row[0] in ("nn-module",)]


@pytest.mark.parametrize(
    ("name", "write", "expected"), RESUME_ROWS, ids=[r[0] for r in RESUME_ROWS]
)
def test_training_refuses_to_resume_from_the_file(tmp_path, run_dir, real, name, write, expected):
    path = _bad_file(tmp_path, run_dir, real, write)
    for given in (path, path.parents[1]):  # the file, and its run folder (its last.ckpt)
        with pytest.raises(ConfigError) as error:
            train(compose_config([*TRAIN, f"ckpt_path={given}"], tmp_path / "resumed"))
        _assert_one_line(error.value, expected)
    assert not (tmp_path / "resumed" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=mlp", "model.width=32"], "holds a different model"),
        (["model=cnn"], "holds a different model"),
    ],
    ids=["wider", "cnn"],
)
def test_training_refuses_to_resume_another_model(tmp_path, run_dir, overrides, expected):
    given = ["logger=none", *overrides, f"ckpt_path={run_dir}"]
    cfg = compose_config(given, tmp_path / "resumed")
    with pytest.raises(ConfigError) as error:
        train(cfg)
    _assert_one_line(error.value, expected)


def test_training_refuses_to_resume_weights_only(tmp_path, run_dir, real):
    path = tmp_path / "weights_only.ckpt"
    torch.save({k: v for k, v in real.items() if k not in ("optimizer_states", "loops")}, path)
    with pytest.raises(ConfigError) as error:
        train(compose_config([*TRAIN, f"ckpt_path={path}"], tmp_path / "resumed"))
    _assert_one_line(error.value, "holds weights only")


def test_the_real_checkpoint_still_resumes(tmp_path, run_dir):
    cfg = compose_config(
        [*SMALL_RUN, "trainer.max_epochs=3", f"ckpt_path={run_dir}"], tmp_path / "resumed"
    )
    train(cfg)
    record = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert record["status"] == "ok" and record["history"][-1]["epoch"] == 3  # one more epoch
