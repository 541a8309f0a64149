"""Every named experiment, run whole as a user types it, then reported (slow: minutes each)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import run_train_py
from reglab.report.cli import build_report

pytestmark = pytest.mark.slow

# experiment -> (jobs run, report rows): `none` ignores the strength, so of the 60 jobs composed
# its 10 at a second or third strength are never launched; its 5 runs are one baseline row.
EXPERIMENTS = {
    "ablation_penalty": (50, 10),
    "ablation_dropout": (25, 5),
    "ablation_augmentation": (25, 5),
    "selu_vs_relu": (20, 4),
    "lstm_dropout": (15, 3),
}


def _run(experiment: str, cwd: Path) -> tuple[Path, dict[str, dict[str, str]]]:
    result = run_train_py(
        [
            "-m",
            f"experiment={experiment}",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "print_config=false",
            "trainer.enable_progress_bar=false",
            "logger=none",
        ],
        cwd=cwd,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs, rows = EXPERIMENTS[experiment]
    assert f"reglab sweep: {jobs} ok, 0 failed, 0 skipped" in result.stdout
    (sweep,) = (cwd / "outputs" / "multirun").glob("*/*")
    build_report(sweep)
    with (sweep / "report.csv").open() as f:
        table = {row["config"]: row for row in csv.DictReader(f)}
    assert len(table) == rows
    return sweep, table


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_experiment_runs_whole_and_reports(tmp_path, experiment):
    sweep, table = _run(experiment, tmp_path)
    for label, row in table.items():  # identical runs (none across strengths) count once
        assert int(row["n_ok"]) == 5, label
    if experiment == "ablation_penalty":
        # λ = 1e-2 on the summed |w| overwhelms the data loss; L2 at the same λ does not.
        none = float(table["regularization=none"]["test/acc mean"])
        l1 = float(table["regularization=l1,regularization.strength=0.01"]["test/acc mean"])
        l2 = float(table["regularization=l2,regularization.strength=0.01"]["test/acc mean"])
        assert l1 < 0.5 < 0.9 < l2 and none > 0.95
        assert (sweep / "report_strength.png").is_file()
    if experiment == "ablation_dropout":
        # Against no dropout under 30 % label noise, dropout 0.5 lowers the best validation loss.
        none = float(table["dropout=zero"]["best/val/loss mean"])
        constant = table["dropout=constant"]
        assert float(constant["best/val/loss mean"]) < none
        assert (
            float(constant["best/val/loss delta"]) < 0 and float(constant["best/val/loss p"]) < 0.05
        )
