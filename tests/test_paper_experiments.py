"""The papers as experiments (conf/experiment/paper_*.yaml): each sweep runs end to end with
fast_dev_run on files fabricated in the official format, and its report prints the paper's
published number beside the measured one (reglab.report.published)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conftest import CONF_DIR, run_train_in_process
from real_data_support import mnist_files, write_cifar10
from reglab.report.cli import main as report_main
from reglab.report.published import matches, measured
from reglab.report.rows import ConfigRow

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["++trainer.fast_dev_run=true", "logger=none", "trainer.enable_progress_bar=false"]
# 40 training images: a quarter held out holds every class.
SMALL_SPLIT = ["data.val_fraction=0.25"]
# experiment -> (data it reads, overrides that keep the default suite fast: narrow nets of the
# same depth; the slow test runs them at full size).
EXPERIMENTS = {
    "paper_dropout_mnist": ("mnist", ["model.width=64"]),
    "paper_mixup_cifar10": ("cifar10", ["data.batch_size=8", "model.widths=[8,16,32,64]"]),
    "paper_cutout_cifar10": ("cifar10", ["data.batch_size=8", "model.widths=[8,16,32]"]),
}


def fabricate(kind: str, root: Path) -> Path:
    """Tiny files in the official format of `kind` under root."""
    if kind == "cifar10":
        return write_cifar10(root, per_batch=8)
    root.mkdir(parents=True, exist_ok=True)
    for name, raw in mnist_files(n_train=40, n_test=10).items():
        (root / name).write_bytes(raw)
    return root


def run_and_report(experiment: str, cwd: Path, capsys, extra: list[str]) -> tuple[Path, str]:
    """Run the sweep in this process, then `reglab-report` on it; (sweep folder, printed report)."""
    kind, small = EXPERIMENTS[experiment]
    root = fabricate(kind, cwd / "data")
    args = ["-m", f"experiment={experiment}", f"data.root={root}", *SMALL_SPLIT, *QUIET, *extra]
    assert run_train_in_process(args, cwd) == 0
    (sweep,) = (cwd / "outputs" / "multirun").glob("*/*")
    capsys.readouterr()
    report_main([str(sweep)])
    return sweep, capsys.readouterr().out


def arms(experiment: str) -> list[dict]:
    """The experiment's published arms, as its YAML states them."""
    text = (CONF_DIR / "experiment" / f"{experiment}.yaml").read_text()
    return yaml.safe_load(text)["paper"]["arms"]


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_paper_experiment_runs_and_reports_published_beside_measured(tmp_path, capsys, experiment):
    sweep, printed = run_and_report(experiment, tmp_path, capsys, EXPERIMENTS[experiment][1])
    jobs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == len(arms(experiment)) == 2
    assert "## Published beside measured" in printed
    assert "| arm | config | measured | published | where |" in printed
    for arm in arms(experiment):
        (override,) = arm["match"].items()
        label = f"{override[0]}={override[1]}"
        # One row per arm: its configuration, a measured error in percent of its one run, and
        # the published number in percent.
        published = f"{100 * arm['published']:.4g} %"
        row = re.search(
            rf"\| {re.escape(arm['name'])} \| {re.escape(label)} \| ([0-9.]+) % \(n = 1\) \| "
            rf"{re.escape(published)} \|",
            printed,
        )
        assert row, (arm, printed[-1500:])
        assert 0 <= float(row.group(1)) <= 100


def test_each_paper_experiment_sets_its_papers_recipe():
    """The sweep's arms are the paper's arms, and each config names its optimizer and schedule."""
    for experiment in EXPERIMENTS:
        config = yaml.safe_load((CONF_DIR / "experiment" / f"{experiment}.yaml").read_text())
        swept = config["hydra"]["sweeper"]["params"]
        for arm in config["paper"]["arms"]:
            (key, value), *_ = arm["match"].items()
            assert str(value) in swept[key].split(","), (experiment, arm)
            assert 0 < arm["published"] < 1 and arm["where"]
        assert config["paper"]["metric"] == "test/error"
        assert {"override /optimizer": "sgd"} in config["defaults"]
    mixup = yaml.safe_load((CONF_DIR / "experiment" / "paper_mixup_cifar10.yaml").read_text())
    assert mixup["scheduler"] == {"milestones": [100, 150], "gamma": 0.1}
    assert mixup["optimizer"]["weight_decay"] == 1e-4 and mixup["trainer"]["max_epochs"] == 200
    alpha = yaml.safe_load((CONF_DIR / "augmentation" / "cifar_mixup.yaml").read_text())
    assert alpha["mix"]["mixup"]["alpha"] == 1.0


def test_measured_error_is_one_minus_accuracy_with_its_interval():
    # accuracies 0.90, 0.92, 0.94 -> errors 10, 8, 6 %: mean 8 %, 95 % CI half-width
    # t(0.975, 2) * sem = 4.303 * 1.155 = 4.97 -> rounded to its first digit.
    row = ConfigRow(key=(("augmentation", "cifar"),), values={"test/acc": [0.90, 0.92, 0.94]})
    errors = [1 - v for v in row.values["test/acc"]]
    assert measured(errors) == "8 ± 5 % (n = 3)"
    assert measured([0.0125]) == "1.25 % (n = 1)"
    assert measured([]) == ""


def test_an_arm_matches_a_configuration_by_every_pair_of_its_overrides():
    row = ConfigRow(key=(("++model.dropout", "0.3"), ("augmentation", "cutout"), ("x", "true")))
    assert matches(row, {"augmentation": "cutout"})
    assert matches(row, {"augmentation": "cutout", "model.dropout": 0.3, "x": True})
    assert not matches(row, {"augmentation": "cifar"})
    assert not matches(row, {"augmentation": "cutout", "model": "wrn_28_10"})


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_paper_experiment_at_full_size(tmp_path, capsys, experiment):
    """The nets at the papers' sizes (3 x 1024 MLP, PreAct ResNet-18, WRN-28-10), a batch of 8."""
    _, printed = run_and_report(experiment, tmp_path, capsys, ["data.batch_size=8"])
    assert printed.count(" % (n = 1) | ") == 2


@pytest.mark.parametrize(
    ("milestones", "key"),
    [
        (5, "milestones"),
        (["a"], "milestones[0]"),
        ([0, 10], "milestones[0]"),
        ([150, 100], "milestones"),
    ],
)
def test_a_bad_milestone_is_one_error_naming_it(milestones, key):
    from reglab.errors import ConfigError
    from reglab.optim import check_scheduler

    config = {"_target_": "torch.optim.lr_scheduler.MultiStepLR", "milestones": milestones}
    with pytest.raises(ConfigError) as refused:
        check_scheduler(config)
    assert str(refused.value).startswith(key + ":"), str(refused.value)
    check_scheduler({**config, "milestones": [100, 150]})  # the mixup paper's: accepted
