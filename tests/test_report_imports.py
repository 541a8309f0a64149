"""`reglab-report` reads results, not training code: it imports neither torch nor Lightning, and
takes which penalty options a run ignored from its metrics.json (`ignored_keys`, which a run
records); a metrics.json without them still reports (reglab.report.collect's docstring)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT, SMALL_RUN, compose_config, run_records, run_train_in_process
from reglab.callbacks.weight_penalty import ignored_keys
from reglab.records import write_record
from reglab.report.collect import collect_jobs
from reglab.report.table import summarize

L1_RATIO = "regularization.l1_ratio"


def fabricated_job(
    sweep: Path, number: int, kind: str, l1_ratio: float, seed: int, **record: object
) -> None:
    """One job folder of `regularization=<kind>` as a run leaves it (a small config by hand)."""
    overrides = [f"regularization={kind}", f"{L1_RATIO}={l1_ratio}", f"seed={seed}"]
    folder = sweep / f"{number}_{','.join(overrides)}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    penalty = {"_target_": "reglab.callbacks.WeightPenalty", "kind": kind, "l1_ratio": l1_ratio}
    config = {"seed": seed, "tags": ["dev"], "paths": {"output_dir": str(folder)}}
    config["regularization"] = penalty if kind != "none" else {"strength": 1e-4}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    history = [{"epoch": e, "val/loss": 1.0 / e, "val/acc": 0.5 + e / 10} for e in (1, 2)]
    write_record(
        folder,
        {
            "status": "ok",
            "seed": seed,
            "test": {"test/acc": 0.8 + seed / 100, "test/loss": 0.3},
            "final": history[-1],
            "best": history[-1],
            "history": history,
            "epochs_run": 2,
            "wall_time_s": 1.0,
            **record,
        },
    )


def fabricated_sweep(sweep: Path, recorded: bool = True) -> Path:
    """none, l1 and elastic_net at two l1_ratios, two seeds each (0, 1 and 2, 3: no run
    repeated); with `recorded`, each metrics.json lists the keys its kind ignored (as a run
    writes them), else none does."""
    number = 0
    for kind in ("none", "l1", "elastic_net"):
        for first_seed, l1_ratio in ((0, 0.2), (2, 0.8)):
            for seed in (first_seed, first_seed + 1):
                unread = {"ignored_keys": [L1_RATIO] if kind == "l1" else []}
                fabricated_job(sweep, number, kind, l1_ratio, seed, **(unread if recorded else {}))
                number += 1
    return sweep


def row_sizes(sweep: Path) -> dict[str, int]:
    """Each configuration's label -> its number of runs."""
    rows = summarize(collect_jobs(sweep), ["test/acc"])
    return {row.label: row.n("test/acc") for row in rows}


def test_the_report_imports_neither_torch_nor_lightning(tmp_path):
    sweep = fabricated_sweep(tmp_path / "sweep")
    code = (
        "import sys\n"
        "from reglab.report.cli import main\n"
        "main([sys.argv[1]])\n"
        "heavy = ('torch', 'lightning', 'pytorch_lightning', 'reglab.callbacks', 'reglab.nn')\n"
        "print('IMPORTED', sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(sweep)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "IMPORTED []"
    assert (sweep / "report.md").is_file() and (sweep / "report_val_loss.png").is_file()


def test_penalty_options_a_run_ignored_are_read_from_its_metrics_json(tmp_path):
    # l1 ignores l1_ratio (its records say so): one configuration of four runs; elastic_net two.
    sizes = row_sizes(fabricated_sweep(tmp_path))
    l1 = {label: n for label, n in sizes.items() if "regularization=l1," in label + ","}
    assert list(l1.values()) == [4] and len(sizes) == 4
    assert sorted(n for label, n in sizes.items() if "elastic_net" in label) == [2, 2]


def test_older_records_without_ignored_keys_still_report_their_knobs_as_written(tmp_path):
    sizes = row_sizes(fabricated_sweep(tmp_path, recorded=False))
    assert sorted(sizes.values()) == [2, 2, 2, 2, 4]  # l1 at each l1_ratio: two rows; none: one


def test_a_job_without_ignored_keys_takes_those_of_its_penalty_kind(tmp_path):
    fabricated_sweep(tmp_path)
    fabricated_job(tmp_path, 12, "l1", 0.5, 4)  # written before reglab recorded ignored_keys
    sizes = row_sizes(tmp_path)
    assert max(sizes.values()) == 5 and len(sizes) == 4  # it joins the other l1 runs


def test_a_run_records_the_penalty_options_its_kind_ignores(tmp_path):
    args = [*SMALL_RUN, "trainer.max_epochs=1", "regularization=l1"]
    assert run_train_in_process(args, tmp_path) == 0
    (record,) = run_records(tmp_path)
    assert record["ignored_keys"] == [L1_RATIO]

    def ignored(option: str) -> list[str]:
        return ignored_keys(compose_config([f"regularization={option}"], tmp_path))

    assert ignored("l2") == [L1_RATIO]
    assert ignored("elastic_net") == ignored("none") == []
