"""A new model config is one YAML file (knobs and a layer list) in a config folder of the user's.

The folder is joined with `hydra.searchpath` (or `--config-dir`); the file has the format of
conf/model/*.yaml and names only registered layers. Nothing in reglab is touched.
"""

from __future__ import annotations

from torch import nn

from conftest import SMALL_RUN, compose_config, option_folder, run_records, run_train_in_process
from reglab.build import build_data_and_model

YAML = """\
# A user's own model: Linear -> GELU -> Dropout, `width` wide, then the Linear head.
width: 12
dropout: 0.0
layers:
  - flatten
  - linear: {out_features: "${model.width}"}
  - gelu
  - dropout: {p: "${model.dropout}"}
"""
OPTION = ("model", "tiny_gelu", YAML)  # conftest's conf_dir writes it into a config folder
QUIET = [a for a in SMALL_RUN if not a.startswith("model")]  # small and quiet, no model picked


def test_the_model_is_built_from_the_users_file(conf_dir, tmp_path):
    cfg = compose_config([conf_dir, "model=tiny_gelu", "model.width=7", "data=moons"], tmp_path)
    _, module = build_data_and_model(cfg)
    children = dict(module.net.named_children())
    assert list(children) == ["flatten", "linear", "gelu", "dropout", "head"]
    assert isinstance(children["gelu"], nn.GELU)
    assert (children["linear"].in_features, children["linear"].out_features) == (2, 7)
    assert (children["head"].in_features, children["head"].out_features) == (7, 2)


def test_a_sweep_over_a_shipped_and_the_users_model(conf_dir, tmp_path):
    args = ["-m", conf_dir, *QUIET, "model=mlp,tiny_gelu", "trainer.max_epochs=1"]
    code = run_train_in_process([*args, "callbacks=none", "data=moons"], tmp_path)
    assert code == 0
    records = run_records(tmp_path)
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    models = {next(o for o in r["overrides"] if o.startswith("model=")) for r in records}
    assert models == {"model=mlp", "model=tiny_gelu"}


def test_the_user_folder_may_also_be_given_as_config_dir(tmp_path):
    option_folder(tmp_path, *OPTION)
    args = ["--config-dir", str(tmp_path / "conf"), *QUIET, "model=tiny_gelu"]
    code = run_train_in_process([*args, "trainer.max_epochs=1", "callbacks=none"], tmp_path)
    assert code == 0
    (record,) = run_records(tmp_path)
    assert record["status"] == "ok"
