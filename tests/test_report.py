"""The ablation report's numbers, read from report.csv / report.md of sweep folders written here.

Each sweep folder is laid out as Hydra and reglab leave one (`<job>_<overrides>/.hydra/` with
overrides.yaml and, where composed, config.yaml, next to metrics.json); the statistics are checked
against scipy, computed here from the values written.
"""

from __future__ import annotations

import csv
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy import stats

from conftest import CONF_DIR, compose_config
from reglab.records import write_record
from reglab.report.cli import build_report


@cache
def _composed(overrides: tuple[str, ...]) -> str:
    return OmegaConf.to_yaml(compose_config(list(overrides), Path("/nowhere")))


def _config_yaml(overrides: list[str]) -> str:
    """.hydra/config.yaml as Hydra writes it (composed, unresolved) for `overrides`."""
    seed = [o for o in overrides if o.startswith("seed=")]
    config = OmegaConf.create(_composed(tuple(o for o in overrides if o not in seed)))
    for override in seed:  # composed once per configuration: the seed set as Hydra would
        config.seed = int(override.removeprefix("seed="))
    return OmegaConf.to_yaml(config)


def write_job(
    sweep: Path,
    number: int,
    overrides: list[str],
    test: dict[str, float],
    *,
    composed: bool = True,
    status: str = "ok",
    wall_time_s: float = 1.0,
) -> Path:
    """One job folder; `seed=<s>` among `overrides` is the run's seed."""
    folder = sweep / f"{number}_{','.join(overrides)}"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    given = dict(o.split("=", 1) for o in overrides)
    if composed:
        (folder / ".hydra" / "config.yaml").write_text(_config_yaml(overrides))
    record = {"status": status, "seed": int(given.get("seed", 42)), "overrides": overrides}
    if status == "ok":
        record |= {"test": test, "epochs_run": 3, "wall_time_s": wall_time_s}
    else:
        record["error"] = "boom"
    write_record(folder, record)
    return folder


def read_csv(sweep: Path) -> dict[str, dict[str, str]]:
    with (sweep / "report.csv").open() as f:
        return {row["config"]: row for row in csv.DictReader(f)}


def ci95(values: list[float]) -> float:
    n = len(values)
    return stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)


def welch_p(values: list[float], baseline: list[float]) -> float:
    return stats.ttest_ind(values, baseline, equal_var=False).pvalue


def md_row(sweep: Path, label: str) -> str:
    (line,) = [
        line
        for line in (sweep / "report.md").read_text().splitlines()
        if line.startswith(f"| {label} |")
    ]
    return line


# Known samples: test/acc per seed of three configurations (n = 5, 5 and 3).
SAMPLES = {
    "none": [0.81, 0.84, 0.80, 0.86, 0.83],
    "l2": [0.90, 0.88, 0.93, 0.91, 0.89],
    "l1": [0.70, 0.75, 0.72],
}


def test_ci_and_welch_p_match_scipy(tmp_path):
    number = 0
    for option, values in SAMPLES.items():
        for seed, acc in enumerate(values):
            overrides = [f"regularization={option}", f"seed={seed}"]
            test = {"test/acc": acc, "test/loss": 1 - acc**2}
            write_job(tmp_path, number, overrides, test, wall_time_s=10.0 + number)
            number += 1
    build_report(tmp_path, metrics=["test/acc", "test/loss", "wall_time_s"])
    table = read_csv(tmp_path)
    base = table["regularization=none"]
    assert base["test/acc ci95"] and not base["test/acc p"] and not base["test/acc delta"]
    for option, values in SAMPLES.items():
        row = table[f"regularization={option}"]
        for metric, sample in (
            ("test/acc", values),
            ("test/loss", [1 - v**2 for v in values]),
        ):
            assert int(row[f"{metric} n"]) == len(values)
            assert float(row[f"{metric} mean"]) == pytest.approx(np.mean(sample), rel=1e-12)
            assert float(row[f"{metric} std"]) == pytest.approx(np.std(sample, ddof=1), rel=1e-12)
            assert float(row[f"{metric} ci95"]) == pytest.approx(ci95(sample), rel=1e-12)
            if option == "none":
                continue
            reference = (
                SAMPLES["none"] if metric == "test/acc" else [1 - v**2 for v in SAMPLES["none"]]
            )
            assert float(row[f"{metric} delta"]) == pytest.approx(
                np.mean(sample) - np.mean(reference), rel=1e-12
            )
            assert float(row[f"{metric} p"]) == pytest.approx(welch_p(sample, reference), rel=1e-9)
    # By hand (s = 0.023875, t(0.975, 4) = 2.7764): a scipy call wrong in both places still fails.
    assert float(table["regularization=none"]["test/acc ci95"]) == pytest.approx(0.029644, abs=1e-6)
    assert float(table["regularization=l2"]["test/acc p"]) < 1e-3
    # Wall time is run bookkeeping: tabulated, compared, never t-tested.
    assert (
        table["regularization=l2"]["wall_time_s delta"]
        and not table["regularization=l2"]["wall_time_s p"]
    )


def _ablation_penalty_params() -> dict[str, list[str]]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ablation_penalty"], return_hydra_config=True)
    return {key: str(values).split(",") for key, values in cfg.hydra.sweeper.params.items()}


def test_ablation_penalty_counts_each_seed_of_the_baseline_once(tmp_path):
    params = _ablation_penalty_params()
    options, strengths, seeds = (
        params["regularization"],
        params["regularization.strength"],
        params["seed"],
    )
    assert "none" in options and len(strengths) == 3 and len(seeds) == 5

    def acc(option: str, strength: str, seed: str) -> float:
        # Identical runs give identical results: none's value does not depend on the strength.
        penalty = 0.0 if option == "none" else float(strength) * (1 + options.index(option))
        return 0.9 - penalty + 0.01 * ((7 * int(seed)) % 5)

    number = 0
    for option in options:  # Hydra's job order: the first swept key varies slowest
        for strength in strengths:
            for seed in seeds:
                overrides = [
                    "experiment=ablation_penalty",
                    f"regularization={option}",
                    f"regularization.strength={strength}",
                    f"seed={seed}",
                ]
                test = {"test/acc": acc(option, strength, seed)}
                # wall time differs between repeats of one run; it is not what makes them one
                write_job(tmp_path, number, overrides, test, wall_time_s=5.0 + number)
                number += 1
    build_report(tmp_path)
    table = read_csv(tmp_path)
    assert len(table) == 1 + (len(options) - 1) * len(strengths)
    none = table["regularization=none"]
    assert int(none["n_ok"]) == 5 and int(none["test/acc n"]) == 5
    assert int(none["n_duplicates"]) == (len(strengths) - 1) * len(seeds)
    baseline = [acc("none", strengths[0], seed) for seed in seeds]
    assert float(none["test/acc ci95"]) == pytest.approx(ci95(baseline), rel=1e-12)
    for option in options[1:]:
        for strength in strengths:
            row = table[f"regularization={option},regularization.strength={strength}"]
            sample = [acc(option, strength, seed) for seed in seeds]
            assert int(row["test/acc n"]) == 5 and int(row["n_duplicates"]) == 0
            assert float(row["test/acc p"]) == pytest.approx(welch_p(sample, baseline), rel=1e-9)
    report = (tmp_path / "report.md").read_text()
    assert "merged 10 duplicate runs (identical effective config and seed)" in report
    assert "| regularization=none | 5 | 0 | 0 |" in report


def test_knobs_an_option_ignores_and_spellings_of_one_value_are_one_configuration(tmp_path):
    jobs = [
        # l1 ignores l1_ratio; 1e-3 and 0.001 are one strength: these four are two runs
        (["regularization=l1", "regularization.l1_ratio=0.2", "regularization.strength=1e-3"], 0),
        (["regularization=l1", "regularization.l1_ratio=0.8", "regularization.strength=1e-3"], 0),
        (["regularization=l1", "regularization.l1_ratio=0.2", "regularization.strength=0.001"], 1),
        (["regularization=l1", "regularization.l1_ratio=0.8", "regularization.strength=1e-3"], 1),
        # elastic_net takes l1_ratio: two configurations
        (["regularization=elastic_net", "regularization.l1_ratio=0.2"], 0),
        (["regularization=elastic_net", "regularization.l1_ratio=0.8"], 0),
    ]
    for number, (overrides, seed) in enumerate(jobs):
        write_job(tmp_path, number, [*overrides, f"seed={seed}"], {"test/acc": 0.5 + seed / 10})
    # A failed repeat of an ok run is neither a sample nor a failure.
    write_job(tmp_path, 6, [*jobs[0][0], "seed=0"], {}, status="failed")
    build_report(tmp_path, metrics=["test/acc"])
    table = read_csv(tmp_path)
    l1 = [row for label, row in table.items() if label.startswith("regularization=l1")]
    assert len(l1) == 1 and len(table) == 3
    assert int(l1[0]["test/acc n"]) == 2 and int(l1[0]["n_failed"]) == 0
    assert int(l1[0]["n_duplicates"]) == 3
    assert float(l1[0]["test/acc mean"]) == pytest.approx(0.55)
    assert (
        "merged 3 duplicate runs (identical effective config and seed)"
        in (tmp_path / "report.md").read_text()
    )


def test_rows_come_baseline_first_then_by_swept_values_as_numbers(tmp_path):
    strengths = ["1e-4", "1e-3", "1e-2", "1e-1"]  # 16 jobs: folder 10_ sorts before 2_ as text
    number = 0
    for option in ("none", "l1"):
        for strength in strengths:
            for seed in (0, 1):
                overrides = [
                    f"regularization={option}",
                    f"regularization.strength={strength}",
                    f"seed={seed}",
                ]
                write_job(tmp_path, number, overrides, {"test/acc": 0.8}, composed=False)
                number += 1
    # and a user who typed the values out of order
    for seed, strength in enumerate(["3e-2", "3e-4"]):
        overrides = ["regularization=l2", f"regularization.strength={strength}", f"seed={seed}"]
        write_job(tmp_path, number, overrides, {"test/acc": 0.8}, composed=False)
        number += 1
    build_report(tmp_path, metrics=["test/acc"])
    assert list(read_csv(tmp_path)) == [
        "regularization=none",
        "regularization=l1,regularization.strength=1e-4",
        "regularization=l1,regularization.strength=1e-3",
        "regularization=l1,regularization.strength=1e-2",
        "regularization=l1,regularization.strength=1e-1",
        "regularization=l2,regularization.strength=3e-4",
        "regularization=l2,regularization.strength=3e-2",
    ]


def test_a_single_run_shows_its_value_without_spread(tmp_path):
    write_job(tmp_path, 0, ["regularization=none", "seed=0"], {"test/acc": 0.8})
    write_job(tmp_path, 1, ["regularization=none", "seed=1"], {"test/acc": 0.9})
    write_job(tmp_path, 2, ["regularization=l2", "seed=0"], {"test/acc": 0.875})
    build_report(tmp_path, metrics=["test/acc"])
    single = read_csv(tmp_path)["regularization=l2"]
    assert int(single["test/acc n"]) == 1 and float(single["test/acc mean"]) == 0.875
    assert single["test/acc std"] == single["test/acc ci95"] == single["test/acc p"] == ""
    assert float(single["test/acc delta"]) == pytest.approx(0.875 - 0.85)
    cell = md_row(tmp_path, "regularization=l2").strip("| ").split(" | ")[4]
    assert cell == "0.875; Δ +0.025"
    assert "±" not in cell and "p=" not in cell
    assert "0.85 ± 0.07071 (±0.6353)" in md_row(tmp_path, "regularization=none")
