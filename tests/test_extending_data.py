"""A new data set is one module of the user's (a TensorDataModule subclass) and one YAML file.

The module is written by the test into a folder outside reglab and imported through `plugins=`;
its YAML sits in a config folder of the user's own, joined with `--config-dir` (or
`hydra.searchpath`), and takes the keys every data option shares from `data/base.yaml`
(`defaults: [base, _self_]`). Nothing in reglab is touched.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SMALL_RUN, compose_config, run_records, run_train_in_process
from reglab.build import build_data_and_model

PLUGIN = "my_lab_blobs"  # a name no other test imports: the module is dropped after each test

MODULE = textwrap.dedent(
    '''
    """Gaussian blobs: `centers` classes in `n_features` dimensions (a user's own data set)."""
    from sklearn.datasets import make_blobs

    from reglab import checks
    from reglab.data import TensorDataModule

    LOADS = []  # the data seed of every load: the test reads it


    class BlobsDataModule(TensorDataModule):
        task = "classification"

        def __init__(self, n_samples=300, centers=3, n_features=4, **shared):
            checks.integer("centers", centers, minimum=2)
            super().__init__(**shared)
            self.n_samples, self.centers, self.n_features = n_samples, centers, n_features

        def load_arrays(self):
            LOADS.append(self.data_seed)
            return make_blobs(
                self.n_samples, self.n_features, centers=self.centers,
                random_state=self.data_seed,
            )
    '''
)

YAML = f"""\
# Gaussian blobs (a user's own data set; module {PLUGIN}, imported through plugins=).
defaults:
  - base
  - _self_
_target_: {PLUGIN}.BlobsDataModule
n_samples: 300
centers: 3
batch_size: 32
"""


@pytest.fixture
def user_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path/code/<module>.py on sys.path and tmp_path/my_conf/data/blobs.yaml."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{PLUGIN}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    (tmp_path / "my_conf" / "data").mkdir(parents=True)
    (tmp_path / "my_conf" / "data" / "blobs.yaml").write_text(YAML)
    yield tmp_path / "my_conf"
    sys.modules.pop(PLUGIN, None)


def _run_args(conf: Path, *overrides: str) -> list[str]:
    return [
        "--config-dir",
        str(conf),
        f"plugins=[{PLUGIN}]",
        *SMALL_RUN,
        "trainer.max_epochs=2",
        "callbacks=none",
        *overrides,
    ]


def test_the_option_takes_the_shared_keys_from_base(user_folder, tmp_path):
    cfg = compose_config([f"hydra.searchpath=[file://{user_folder}]", "data=blobs"], tmp_path)
    assert cfg.data._target_ == f"{PLUGIN}.BlobsDataModule"
    assert cfg.data.batch_size == 32  # its own value over base's 64
    shared = {k: cfg.data[k] for k in ("split_seed", "data_seed", "shuffle", "shuffle_seed")}
    assert shared == {"split_seed": 0, "data_seed": 0, "shuffle": True, "shuffle_seed": cfg.seed}


def test_the_data_set_is_built_for_the_model(user_folder, tmp_path):
    cfg = compose_config(
        [f"hydra.searchpath=[file://{user_folder}]", f"plugins=[{PLUGIN}]", "data=blobs"],
        tmp_path,
    )
    __import__(PLUGIN)
    datamodule, module = build_data_and_model(cfg)
    assert datamodule.input_shape == (4,) and datamodule.num_outputs == 3
    assert module.net.head.out_features == 3


def test_a_run_with_the_new_data_set_trains_on_it(user_folder, tmp_path):
    args = _run_args(user_folder, "data=blobs", "data.data_seed=7", "optimizer.lr=0.01")
    code = run_train_in_process(args, tmp_path)
    assert code == 0
    (record,) = run_records(tmp_path)
    assert record["status"] == "ok"
    assert sys.modules[PLUGIN].LOADS and set(sys.modules[PLUGIN].LOADS) == {7}
    assert record["test"]["test/acc"] > 0.9  # three well-separated blobs


def test_a_sweep_over_a_built_in_and_the_new_data_set(user_folder, tmp_path):
    code = run_train_in_process(["-m", *_run_args(user_folder, "data=moons,blobs")], tmp_path)
    assert code == 0
    records = run_records(tmp_path)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)


def test_a_bad_value_of_its_own_key_is_one_line_naming_it(user_folder, tmp_path, capsys):
    code = run_train_in_process(_run_args(user_folder, "data=blobs", "data.centers=1"), tmp_path)
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("reglab: error: data.centers")
