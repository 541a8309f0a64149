"""A new task is one `TASKS` entry: a toy multi-label task, registered from a user's plugin alone.

The plugin module (outside reglab, on sys.path) registers the task and a data module whose
targets are 0/1 label vectors; its data YAML sits in a config folder of the user's own
(`hydra.searchpath`). The run trains with the task's loss, logs its metrics, and settles
`monitor_mode: auto` from the direction the task declares. Also here: metric directions are
declared by the code that logs them, and no code outside reglab/tasks.py names a task.
"""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import ROOT, SMALL_RUN, option_folder, read_metrics, run_train_in_process
from reglab import metric_directions
from reglab.config import monitor_mode, validate_early_stopping
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.tasks import TASKS, Metric, Task

PLUGIN = textwrap.dedent(
    '''
    """A user's own task: several yes/no labels per sample."""
    import numpy as np
    from torch.nn import functional
    from torchmetrics.classification import MultilabelExactMatch, MultilabelHammingDistance

    from reglab.data.base import TensorDataModule
    from reglab.tasks import TASKS, Metric, Task

    TASKS.register(
        "multi_label",
        Task(
            loss=lambda outputs, y, smoothing: functional.binary_cross_entropy_with_logits(
                outputs, y
            ),
            metrics={
                "exact": Metric("max", lambda n: MultilabelExactMatch(num_labels=n)),
                "hamming": Metric("min", lambda n: MultilabelHammingDistance(num_labels=n)),
            },
            # torchmetrics would read logits within [0, 1] as probabilities
            scored=lambda outputs, y: (outputs.sigmoid(), y.long()),
            predict=lambda outputs: outputs.sigmoid(),
        ),
    )


    class SignsDataModule(TensorDataModule):
        """Label j of a sample: whether its feature j is positive (3 labels of 5 features)."""

        task = "multi_label"

        def __init__(self, n_samples: int = 600, **kwargs) -> None:
            super().__init__(**kwargs)
            self.n_samples = n_samples

        def load_arrays(self):
            x = np.random.default_rng(self.data_seed).standard_normal((self.n_samples, 5))
            return x.astype(np.float32), (x[:, :3] > 0).astype(np.float32)
    '''
)
DATA_YAML = "defaults:\n  - base\n  - _self_\n_target_: my_tasks.SignsDataModule\nn_samples: 600\n"


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The plugin module on sys.path; yields the searchpath override of the user's config folder."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "my_tasks.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    yield option_folder(tmp_path, "data", "signs", DATA_YAML)
    TASKS.unregister("multi_label")
    sys.modules.pop("my_tasks", None)


def test_a_plugin_task_trains_logs_its_metrics_and_settles_the_monitor_mode(plugin, tmp_path):
    code = run_train_in_process(
        [
            plugin,
            *SMALL_RUN,
            "plugins=[my_tasks]",
            "data=signs",
            "monitor=val/exact",  # the plugin's metric: its declared direction settles `auto`
            "trainer.max_epochs=8",
            "optimizer.lr=0.01",
            "callbacks=none",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert code == 0
    record = read_metrics(tmp_path / "run")
    assert record["status"] == "ok"
    assert record["monitor_mode"] == "max"
    test = record["test"]
    assert {"test/loss", "test/exact", "test/hamming"} <= set(test)
    assert not {"test/acc", "test/mse"} & set(test)
    assert test["test/hamming"] < 0.2  # learned: chance is 0.5 a label
    assert 0.5 < test["test/exact"] <= 1


def test_the_module_takes_the_plugin_task_shape_loss_and_prediction(plugin):
    import my_tasks  # noqa: F401 - registers the task, as plugins=[my_tasks] does

    model = RegLabModule(
        model={"layers": [{"linear": {"out_features": 8}}, "relu"]},
        input_shape=[5],
        num_outputs=3,
        task="multi_label",
        target_shape=[3],
    )
    x, y = torch.randn(4, 5), torch.tensor([[1.0, 0.0, 1.0]] * 4)
    outputs = model(x)
    assert outputs.shape == (4, 3)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs, y)
    torch.testing.assert_close(model.loss(outputs, y), expected)
    torch.testing.assert_close(model.predict_step((x, y), 0), outputs.sigmoid())
    assert model.metric_names("val") == ["val/loss", "val/exact", "val/hamming"]
    with pytest.raises(ConfigError, match="label_smoothing: applies to classification only"):
        RegLabModule(
            model={"layers": ["flatten"]}, input_shape=[5], num_outputs=3, task="multi_label",
            label_smoothing=0.1,
        )  # fmt: skip


def test_the_built_in_tasks_declare_their_metrics_and_mc_dropout_its_own():
    import reglab.callbacks  # noqa: F401 - MC dropout declares its metrics when imported

    for name, direction in {
        "loss": "min", "acc": "max", "f1": "max", "mse": "min", "mae": "min", "r2": "max",
        "mc_acc": "max", "mc_loss": "min", "mc_entropy": "min", "mc_spread": "min",
    }.items():  # fmt: skip
        assert metric_directions.improves_toward(f"val/{name}") == direction, name
    assert metric_directions.improves_toward("val/bogus") is None
    assert set(TASKS.get("classification").metrics) == {"acc", "f1"}
    assert set(TASKS.get("regression").metrics) == {"mse", "mae", "r2"}
    assert monitor_mode("val/r2", "auto") == "max"
    with pytest.raises(ConfigError, match="^monitor: 'val/bogus' is not a metric") as error:
        monitor_mode("val/bogus", "auto")
    listed = re.search(r"\((.*) under val/\)", str(error.value)).group(1).split(", ")
    # Upward first, then downward, each in the order declared (a plugin's may come between).
    assert [n for n in listed if n in ("acc", "f1", "r2", "mc_acc")] == [
        "acc",
        "f1",
        "r2",
        "mc_acc",
    ]
    assert [
        n for n in listed if n in ("loss", "mse", "mae", "mc_loss", "mc_entropy", "mc_spread")
    ] == ["loss", "mse", "mae", "mc_loss", "mc_entropy", "mc_spread"]
    assert listed.index("mc_acc") < listed.index("loss")


def test_a_metric_cannot_be_declared_both_ways_and_loss_is_no_task_metric():
    with pytest.raises(ValueError, match="already declared to improve toward max"):
        metric_directions.declare({"acc": "min"})
    with pytest.raises(ValueError, match="must be max or min"):
        metric_directions.declare({"my_metric": "up"})
    task = Task(
        loss=lambda o, y, s: o, metrics={"loss": Metric("max", lambda n: None)},
        scored=lambda o, y: (o, y), predict=lambda o: o,
    )  # fmt: skip
    with pytest.raises(KeyError, match="every task's loss"):
        TASKS.register("backwards", task)
    assert "backwards" not in TASKS
    assert metric_directions.improves_toward("loss") == "min"


def test_a_metric_no_loaded_code_declares_waits_for_the_run_check(monkeypatch):
    """Before reglab.callbacks is imported (train.py's early check) a control's metric is not
    declared yet: the check leaves it to the run's, which knows it."""
    import reglab.callbacks  # noqa: F401 - as in a run: every control's metrics declared

    stopper = OmegaConf.create({"mode": "max", "monitor": "val/later_metric"})
    with pytest.raises(ConfigError, match="early_stopping.monitor: 'val/later_metric' is not"):
        validate_early_stopping(stopper, "val/loss")
    monkeypatch.delitem(sys.modules, "reglab.callbacks")
    validate_early_stopping(stopper, "val/loss")
    assert monitor_mode("val/later_metric", "auto") == "auto"


def test_config_and_the_directions_load_without_torch():
    code = "import sys, reglab.config, reglab.tasks; print(sorted(m for m in ('torch', 'lightning', 'torchmetrics') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_no_code_outside_the_task_registry_names_a_task():
    literal = re.compile(r"\"(classification|regression)\"")
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        if path != ROOT / "src" / "reglab" / "tasks.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert not found, "ask the task's entry (reglab.tasks), not its name:\n" + "\n".join(found)


@pytest.mark.parametrize("task", sorted(TASKS.names()))
def test_a_module_of_each_built_in_task_pickles_for_ddp_spawn(task):
    # trainer.strategy=ddp_spawn pickles the LightningModule into each process: a task entry
    # holding a lambda failed there ("Can't pickle <function <lambda>>: ... on reglab.tasks").
    model = RegLabModule(
        model={"layers": ["flatten", {"linear": {"out_features": 3}}]},
        input_shape=[4],
        num_outputs=3,
        task=task,
    )
    copy = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 4)
    assert torch.equal(copy.predict_step(x, 0), model.predict_step(x, 0))
