"""The ablation report's numbers, read from report.csv / report.md of sweep folders written here.

Each sweep folder is laid out as Hydra and reglab leave one (`<job>_<overrides>/.hydra/` with
overrides.yaml and, where composed, config.yaml, next to metrics.json); the statistics are checked
against scipy, computed here from the values written.
"""

from __future__ import annotations

import csv
import math
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from matplotlib import image
from matplotlib.collections import PolyCollection
from omegaconf import OmegaConf
from scipy import stats

from conftest import CONF_DIR, compose_config
from reglab import search
from reglab.callbacks.weight_penalty import ignored_keys
from reglab.records import write_record
from reglab.report import ConfigRow, Job
from reglab.report.cli import DEFAULT_TAGS, build_plots, build_report
from reglab.report.layout import MAX_LEGEND
from reglab.report.optuna_plots import (
    FIXED_CONFIG_ATTR,
    MIN_IMPORTANCE_TRIALS,
    history_figure,
    importances_figure,
    plot_study,
    study_metric,
)
from reglab.report.plots import bars_figure, curves_figure, row_label, strength_figure
from reglab.report.table import mean_ci


@cache
def _composed(overrides: tuple[str, ...]) -> str:
    return OmegaConf.to_yaml(compose_config(list(overrides), Path("/nowhere")))


@cache
def _ignored_keys(overrides: tuple[str, ...]) -> list[str]:
    return ignored_keys(OmegaConf.create(_composed(overrides)))


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
    tags: list[str] | None = None,
    final: dict[str, float] | None = None,
    name: str | None = None,
) -> Path:
    """One job folder (`name`, default `<number>_<overrides>`); `seed=<s>` among `overrides` is
    the run's seed; `final` the metrics of its last epoch."""
    folder = sweep / (name or f"{number}_{','.join(overrides)}")
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    given = dict(o.split("=", 1) for o in overrides)
    if composed:
        (folder / ".hydra" / "config.yaml").write_text(_config_yaml(overrides))
    record = {"status": status, "seed": int(given.get("seed", 42)), "overrides": overrides}
    if tags is not None:
        record["tags"] = tags
    if status == "ok":  # as a run writes it (a failed job's record has no ignored_keys)
        record["ignored_keys"] = _ignored_keys(tuple(o for o in overrides if "seed=" not in o))
        record |= {"test": test, "epochs_run": 3, "wall_time_s": wall_time_s}
        record |= {"final": final} if final else {}
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


def write_samples(sweep: Path) -> None:
    """One job per value of SAMPLES (test/acc, and test/loss = 1 - acc²)."""
    number = 0
    for option, values in SAMPLES.items():
        for seed, acc in enumerate(values):
            overrides = [f"regularization={option}", f"seed={seed}"]
            test = {"test/acc": acc, "test/loss": 1 - acc**2}
            write_job(sweep, number, overrides, test, wall_time_s=10.0 + number)
            number += 1


def test_ci_and_welch_p_match_scipy(tmp_path):
    write_samples(tmp_path)
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


@pytest.mark.slow  # several seconds (a subprocess or many runs); CI runs the slow tests
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
    # Two runs: 0.85 ± 0.6353 (t(0.975, 1) = 12.7) would reach an accuracy of 1.49: the interval
    # clipped to [0, 1] instead, printed to the ±'s one digit.
    assert "| 0.9 [0.2, 1.0] |" in md_row(tmp_path, "regularization=none")


def test_the_report_filters_by_tags_and_names_them(tmp_path):
    write_job(tmp_path, 0, ["regularization=none", "seed=0"], {"test/acc": 0.8}, tags=["paper"])
    write_job(
        tmp_path, 1, ["regularization=none", "seed=1"], {"test/acc": 0.9}, tags=["paper", "v2"]
    )
    write_job(tmp_path, 2, ["regularization=none", "seed=2"], {"test/acc": 0.1}, tags=["dev"])
    build_report(tmp_path, metrics=["test/acc"], tags=["paper"])
    row = read_csv(tmp_path)["default"]
    assert int(row["test/acc n"]) == 2 and float(row["test/acc mean"]) == pytest.approx(0.85)
    assert "Tags of these runs: paper, v2." in (tmp_path / "report.md").read_text()
    build_report(tmp_path, metrics=["test/acc"])  # no filter: all three, tags listed
    assert int(read_csv(tmp_path)["default"]["test/acc n"]) == 3
    assert "Tags of these runs: dev, paper, v2." in (tmp_path / "report.md").read_text()
    with pytest.raises(SystemExit, match="tagged nope"):
        build_report(tmp_path, metrics=["test/acc"], tags=["nope"])


# (mean, 95 % CI half-width) -> what report.md prints. The ± keeps one significant digit, two
# when that digit is a 1; the mean stops at the same decimal place.
ROUNDED = [
    (0.96812, 0.0041, "0.968 ± 0.004"),
    (0.96812, 0.0449, "0.97 ± 0.04"),
    (0.96812, 0.35, "1.0 ± 0.4"),
    (0.96812, 0.0149, "0.968 ± 0.015"),  # a leading 1 keeps two digits
    (0.96812, 0.0155, "0.968 ± 0.016"),
    (0.96812, 0.0196, "0.968 ± 0.020"),
    (0.96812, 0.0096, "0.968 ± 0.010"),  # rounds up to a leading 1: two digits
    (0.85, 0.6353, "0.9 ± 0.6"),  # a half rounds away from zero, from the decimal 0.85
    (0.5, 0.96, "0.5 ± 1.0"),
    (1234.5, 35.0, "1230 ± 40"),
    (1234.5, 9.6, "1235 ± 10"),
    (12.25, 0.15, "12.25 ± 0.15"),
    (-0.1234, 0.025, "-0.12 ± 0.03"),
    (-0.0004, 0.003, "0.000 ± 0.003"),  # never "-0.000"
    (3.2e-5, 1.1e-5, "0.000032 ± 0.000011"),
    (0.8, 0.0, "0.8 ± 0"),  # identical runs
    (0.87654321, math.nan, "0.8765"),  # a single run: its value, 4 significant digits
    (0.8, 1e-17, "0.8 ± 1e-17"),  # float noise: significant digits, not 17 zeros
]


@pytest.mark.parametrize(("mean", "halfwidth", "text"), ROUNDED)
def test_mean_and_ci_are_printed_to_the_precision_of_the_ci(mean, halfwidth, text):
    assert mean_ci(mean, halfwidth) == text


def test_report_md_rounds_to_the_ci_and_the_csv_keeps_every_digit(tmp_path):
    write_samples(tmp_path)
    build_report(tmp_path, metrics=["test/acc"])

    def cell(label: str) -> str:
        return md_row(tmp_path, label).strip("| ").split(" | ")[4]

    none, l2, l1 = SAMPLES["none"], SAMPLES["l2"], SAMPLES["l1"]
    # none: 0.828 ± 0.0296; l2: 0.902 ± 0.0239, Δ 0.074; l1: 0.7233 ± 0.0625, Δ -0.1047.
    assert cell("regularization=none") == "0.83 ± 0.03"
    assert cell("regularization=l2") == f"0.90 ± 0.02; Δ +0.07, p={welch_p(l2, none):.2g}"
    assert cell("regularization=l1") == f"0.72 ± 0.06; Δ -0.10, p={welch_p(l1, none):.2g}"
    table = read_csv(tmp_path)
    assert float(table["regularization=l1"]["test/acc mean"]) == float(np.mean(l1))
    assert float(table["regularization=l2"]["test/acc ci95"]) == pytest.approx(ci95(l2), rel=1e-15)


# --- plots: nothing clipped, the legend beside the axes and of bounded length ------------------


def job(overrides: dict[str, str], history: list[dict[str, float]] | None = None) -> Job:
    return Job(folder=Path("/nowhere"), overrides=overrides, status="ok", history=history or [])


def config_row(
    pairs: list[tuple[str, str]], accs: list[float], shown: tuple[str, ...], **kwargs
) -> ConfigRow:
    """A configuration of len(accs) runs; each run's val/loss falls from 2 to its final value."""
    jobs = [
        job(dict(pairs), [{"epoch": e, "val/loss": (1 - acc) + 2 / (e + 1)} for e in range(4)])
        for acc in accs
    ]
    return ConfigRow(
        key=tuple(sorted(pairs)), shown=shown, values={"test/acc": accs}, jobs=jobs, **kwargs
    )


SEARCH_KEYS = (
    "model.dropout",
    "optimizer.lr",
    "regularization.l1_ratio",
    "regularization.method",
    "regularization.strength",
)


def search_rows(count: int) -> list[ConfigRow]:
    """An Optuna study's trials: each its own configuration, floats with every digit."""
    rng = np.random.default_rng(0)
    rows = []
    for trial in range(count):
        values = (
            repr(float(rng.uniform(0, 0.6))),
            repr(float(10 ** rng.uniform(-4, -2))),
            repr(float(rng.uniform(0.05, 1))),
            "proximal" if trial % 2 else "gradient",
            repr(float(10 ** rng.uniform(-6, -1))),
        )
        pairs = list(zip(SEARCH_KEYS, values, strict=True))
        rows.append(config_row(pairs, [float(rng.uniform(0.85, 0.97))], SEARCH_KEYS))
    return rows


def sweep_rows(settings: int) -> list[ConfigRow]:
    """A baseline and `settings` settings of two other knobs, each at three strengths, 3 seeds."""
    shown = ("data.train_fraction", "model.dropout", "regularization", "regularization.strength")
    rows = [
        config_row(
            [("regularization", "none"), ("model.dropout", "0.1")],
            [0.9, 0.91, 0.92],
            shown,
            is_baseline=True,
        )
    ]
    for setting in range(settings):
        for strength in ("1e-4", "1e-3", "1e-2"):
            pairs = [
                ("regularization", "elastic_net"),
                ("regularization.strength", strength),
                ("model.dropout", repr(0.05 * setting + 0.0123456789)),
                ("data.train_fraction", repr(1 - 0.03 * setting - 0.00987654321)),
            ]
            base = 0.9 + 0.003 * setting - float(strength)
            rows.append(config_row(pairs, [base, base + 0.01, base - 0.01], shown))
    return rows


def drawn_within_the_figure(figure, legend_inside: bool = False) -> None:
    """Lay out and draw `figure` (a layout failure is an error); everything drawn lies inside it.

    Titles, axis labels and legend texts are checked one by one; `get_tightbbox` covers the tick
    labels actually drawn. A legend sits beside the axes, not over the data, or with
    `legend_inside` (a short one) within the axes, not overflowing them.
    """
    with warnings.catch_warnings():
        # "constrained_layout not applied" (axes collapsed), "Tight layout not applied"
        warnings.simplefilter("error")
        figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    width, height = figure.get_size_inches()
    drawn = figure.get_tightbbox(renderer)  # inches
    assert drawn.x0 >= 0 and drawn.y0 >= 0, drawn
    assert drawn.x1 <= width + 1e-6 and drawn.y1 <= height + 1e-6, (drawn, width, height)
    inside = figure.bbox.padded(0.5)  # display units; half a pixel for rounding
    for axes in figure.axes:
        texts = [axes.title, axes.xaxis.label, axes.yaxis.label]
        legend = axes.get_legend()
        if legend is not None:
            box = legend.get_window_extent(renderer)
            assert inside.containsx(box.x0) and inside.containsx(box.x1), box
            assert inside.containsy(box.y0) and inside.containsy(box.y1), box
            frame = axes.get_window_extent(renderer)
            if legend_inside:
                assert frame.containsx(box.x0) and frame.containsx(box.x1), "legend overflows"
                assert frame.containsy(box.y0) and frame.containsy(box.y1), "legend overflows"
            else:
                assert box.x0 >= frame.x1, "legend over the axes"
            texts += legend.get_texts()
        for text in texts:
            if text.get_text():
                box = text.get_window_extent(renderer)
                assert inside.containsx(box.x0) and inside.containsx(box.x1), text.get_text()
                assert inside.containsy(box.y0) and inside.containsy(box.y1), text.get_text()


def legend_texts(figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def test_plots_of_a_search_fit_their_labels_and_name_at_most_max_legend_curves(tmp_path):
    rows = search_rows(14)
    curves = curves_figure(rows)
    drawn_within_the_figure(curves)
    names = legend_texts(curves)
    # The MAX_LEGEND curves ending lowest (val/loss = 1.5 - acc) are named, in report order;
    # the other four are grey under one entry.
    assert len(names) == MAX_LEGEND + 1 and names[-1] == "4 others (see report.md)"
    lowest = sorted(rows, key=lambda row: -row.values["test/acc"][0])[:MAX_LEGEND]
    assert names[:-1] == [row_label(row) for row in rows if row in lowest]
    # Labels are the differing keys cut to their last part, floats to 4 significant digits.
    first = dict(rows[0].key)
    assert row_label(rows[0]).replace("\n", " ") == (
        f"dropout={float(first['model.dropout']):.4g}, lr={float(first['optimizer.lr']):.4g}, "
        f"l1_ratio={float(first['regularization.l1_ratio']):.4g}, method=gradient, "
        f"strength={float(first['regularization.strength']):.4g}"
    )
    assert max(len(line) for line in row_label(rows[0]).splitlines()) <= 48

    bars = bars_figure(rows, "test/acc")
    drawn_within_the_figure(bars)
    axes = bars.axes[0]
    renderer = bars.canvas.get_renderer()
    ticks = axes.get_yticklabels()
    assert len(ticks) == len(rows)  # one bar per configuration, each named in full
    for tick in ticks:
        box = tick.get_window_extent(renderer)
        assert bars.bbox.containsx(box.x0) and box.x1 <= axes.get_window_extent(renderer).x0

    # No strength has two values with the rest fixed: one scatter, no legend of 14 trials.
    strength = strength_figure(rows, "test/acc")
    drawn_within_the_figure(strength)
    assert legend_texts(strength) == ["configurations"]

    written = build_plots(rows, tmp_path, "test/acc")
    assert [path.name for path in written] == [
        "report_strength.png",
        "report_bars.png",
        "report_val_loss.png",
    ]
    assert all(image.imread(path).size for path in written)


def test_strength_plot_names_the_baseline_and_at_most_max_legend_settings(tmp_path):
    few = strength_figure(sweep_rows(2), "test/acc")
    drawn_within_the_figure(few)
    assert len(legend_texts(few)) == 3 and legend_texts(few)[0] == "regularization=none"

    many = strength_figure(sweep_rows(13), "test/acc")
    drawn_within_the_figure(many)
    names = legend_texts(many)
    assert len(names) == MAX_LEGEND + 2  # the baseline, the named settings, "3 others"
    assert names[0] == "regularization=none" and names[-1] == "3 others (see report.md)"
    assert all("dropout=" in name and "strength" not in name for name in names[1:-1])


def test_optuna_plots_fit_long_names(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = "a_study_whose_name_is_long_enough_to_overflow_the_title_of_the_history_plot"
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize"
    )
    long_names = ["regularization.strengths.net.body.0.weight", "optimizer.lr", "model.dropout"]

    def objective(trial):
        x = [trial.suggest_float(n, 1e-4, 1.0, log=True) for n in long_names]
        return x[0] - x[1] ** 2 + 0.1 * x[2]

    study.optimize(objective, n_trials=12)
    complete = study.trials
    history = history_figure(study, complete)
    drawn_within_the_figure(history, legend_inside=True)
    assert "\n" in history.axes[0].get_title()  # the name is broken onto a second line
    assert history.axes[0].get_ylabel() == "objective (maximized)"
    importances = importances_figure(optuna.importance.get_param_importances(study))
    drawn_within_the_figure(importances)
    assert {t.get_text() for t in importances.axes[0].get_yticklabels()} == set(long_names)
    written = {path.name for path in plot_study(tmp_path)}
    assert written == {"report_optuna_history.png", "report_optuna_importances.png"}


# --- reports one can show: bounded intervals, bars from zero, curves with spread ---------------


def _bounded_rows() -> list[ConfigRow]:
    """A baseline and two strengths of l1, two runs each; one far apart (0.2 and 0.9)."""
    shown = ("regularization", "regularization.strength")
    return [
        config_row([("regularization", "none")], [0.93, 0.94], shown, is_baseline=True),
        config_row(
            [("regularization", "l1"), ("regularization.strength", "1e-4")], [0.8, 0.9], shown
        ),
        config_row(
            [("regularization", "l1"), ("regularization.strength", "1e-2")], [0.2, 0.9], shown
        ),
    ]


def test_intervals_of_a_bounded_metric_at_n2_are_the_t_interval_clipped_to_its_range():
    row = _bounded_rows()[1]  # 0.8, 0.9: 0.85 ± t(0.975, 1) · 0.05 = 0.85 ± 0.6353
    t_low, t_high = stats.t.interval(0.95, 1, loc=0.85, scale=stats.sem([0.8, 0.9]))
    assert t_low == pytest.approx(0.85 - 12.7062047 * 0.05) and t_high > 1  # by hand, too
    assert row.interval("test/acc") == pytest.approx((t_low, 1.0))
    # An unbounded metric keeps scipy's interval; a loss is cut at 0 only.
    row.values["best/val/loss"] = [0.1, 0.3]
    assert row.interval("best/val/loss") == pytest.approx((0.0, 0.2 + 12.7062047 * 0.1))
    row.values["custom"] = [0.8, 0.9]
    assert row.interval("custom") == pytest.approx((t_low, t_high))


def _suptitle(figure) -> str:
    return figure.get_suptitle()


def test_strength_plot_of_n2_accuracies_stays_within_0_1_and_says_n_is_small():
    figure = strength_figure(_bounded_rows(), "test/acc")
    drawn_within_the_figure(figure)
    axes = figure.axes[0]
    low, high = axes.get_ylim()
    assert low >= -0.05 and high <= 1.05, (low, high)  # was -1.0 .. 2.2: unclipped t-intervals
    bars = [c for c in axes.collections if c.get_segments()]
    ends = np.concatenate([np.asarray(seg)[:, 1] for c in bars for seg in c.get_segments()])
    assert ends.min() >= 0.0 and ends.max() <= 1.0
    assert "n = 2" in _suptitle(figure) and "12.7" in _suptitle(figure)
    # n >= SMALL_N: no warning
    rows = _bounded_rows()
    for row in rows:
        row.values["test/acc"] = [*row.values["test/acc"], 0.85]
    assert _suptitle(strength_figure(rows, "test/acc")) == ""


def test_bar_axes_start_at_zero():
    figure = bars_figure(_bounded_rows(), "test/acc")
    drawn_within_the_figure(figure)
    low, high = figure.axes[0].get_xlim()
    assert low == 0.0 and 0.9 < high <= 1.05, (low, high)  # the old axis started at ~0.1
    assert "n = 2" in _suptitle(figure)
    # A metric below zero (an R² of a bad model): the axis reaches both sides of 0.
    rows = _bounded_rows()
    for row in rows:
        row.values["test/r2"] = [-0.4, -0.2]
    low, high = bars_figure(rows, "test/r2").axes[0].get_xlim()
    assert low < -0.2 and high >= 0.0


def test_learning_curves_have_a_seed_band_and_the_baseline_on_top():
    rows = sweep_rows(2)  # three runs each, val/loss = (1 - acc) + 2 / (epoch + 1)
    figure = curves_figure(rows)
    drawn_within_the_figure(figure)
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    baseline = lines.pop(row_label(rows[0]))
    assert baseline.get_zorder() > max(line.get_zorder() for line in lines.values())
    assert baseline.get_linestyle() == "--" and baseline.get_color() == "black"
    # Epochs as the histories record them (0..3 here), not shifted.
    assert list(baseline.get_xdata()) == [0, 1, 2, 3]
    assert axes.get_xlabel() == "epoch"
    # One band per named configuration, spanning its runs' lowest to highest value (the
    # baseline's: accuracies 0.90..0.92, epochs 0..3).
    bands = [c for c in axes.collections if isinstance(c, PolyCollection)]
    assert len(bands) == len(rows)
    first = bands[0].get_paths()[0].vertices[:, 1]
    assert first.min() == pytest.approx(1 - 0.92 + 2 / 4)
    assert first.max() == pytest.approx(1 - 0.90 + 2 / 1)


def _search_folder(folder: Path, pruned: int = 1) -> optuna.Study:
    """A search folder as `hparams_search` leaves one: study.db (3 complete trials and `pruned`
    pruned ones, the metric in the study's fixed config) and a `trial_NNNN` folder per trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="penalty_search", storage=f"sqlite:///{folder / 'study.db'}"
    )
    study.set_user_attr(FIXED_CONFIG_ATTR, {"optimized_metric": "best/val/loss"})
    draws = [1.9517224641449486e-06, 0.00017577468595486, 0.0123456789, 3.3e-05, 4.4e-05]
    for number, strength in enumerate(draws[: 3 + pruned]):
        trial = study.ask(
            {"regularization.strength": optuna.distributions.FloatDistribution(1e-6, 0.1, log=True)}
        )
        overrides = ["hparams_search=penalty_search", f"regularization.strength={strength!r}"]
        trial.params  # noqa: B018 - drawn
        if number >= 3:
            trial.report(2.0 + number, step=0)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            write_job(
                folder,
                number,
                overrides,
                {},
                status="pruned",
                composed=False,
                name=f"trial_{number:04d}",
            )
        else:
            study.tell(trial, 0.5 - 0.1 * number)
            test = {"test/acc": 0.9 + 0.01 * number}
            write_job(folder, number, overrides, test, composed=False, name=f"trial_{number:04d}")
    return study


def test_optuna_history_names_the_metric_ticks_whole_trials_and_shows_pruned_ones(tmp_path):
    study = _search_folder(tmp_path, pruned=2)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    figure = history_figure(study, complete, study_metric(study, tmp_path))
    drawn_within_the_figure(figure, legend_inside=True)
    axes = figure.axes[0]
    assert axes.get_ylabel() == "best/val/loss (minimized)"
    ticks = [t for t in axes.get_xticks() if axes.get_xlim()[0] <= t <= axes.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # not 0.25, 0.5, ...
    offsets = {tuple(p) for c in axes.collections for p in c.get_offsets()}
    assert {(3.0, 5.0), (4.0, 6.0)} <= offsets  # each pruned trial at its last reported value
    assert "pruned (last value reported)" in [t.get_text() for t in axes.get_legend().get_texts()]


def test_importances_from_few_trials_carry_a_warning_in_the_plot_and_report(tmp_path):
    _search_folder(tmp_path)
    build_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "Parameter importances from 3 complete trials: unreliable" in report
    figure = importances_figure({"a": 0.7, "b": 0.3}, complete=3)
    drawn_within_the_figure(figure)
    assert "3 complete trials" in _suptitle(figure)
    assert _suptitle(importances_figure({"a": 0.7, "b": 0.3}, complete=MIN_IMPORTANCE_TRIALS)) == ""
    assert FIXED_CONFIG_ATTR == search.FIXED_CONFIG_ATTR  # the attribute a search writes


def test_search_report_is_titled_with_its_study_and_lists_trials_with_short_labels(tmp_path):
    _search_folder(tmp_path)
    build_report(tmp_path, metrics=["test/acc"])
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Search report: penalty_search (best/val/loss, minimized)\n")
    assert "| trial | params | status | test/acc |" in report
    rows = [line for line in report.splitlines() if line.startswith("| 0 |")]
    assert rows[0].startswith("| 0 | strength=1.952e-06 | ok | 0.9 |"), rows
    assert (
        "| 1 | strength=0.0001758 | ok |" in report
        and "| 3 | strength=3.3e-05 | pruned |" in report
    )
    assert read_csv(tmp_path)[f"regularization.strength={1.9517224641449486e-06!r}"]["trial"] == "0"


def test_run_cost_is_a_section_of_its_own_not_a_result(tmp_path):
    write_samples(tmp_path)  # wall_time_s 10 + job number, epochs_run 3
    build_report(tmp_path)
    report = (tmp_path / "report.md").read_text()
    results, cost = report.split("## Run cost")
    header = next(line for line in results.splitlines() if line.startswith("| config |"))
    assert "test/acc" in header and "wall_time_s" not in header and "epochs_run" not in header
    assert "| config | epochs_run | wall_time_s |" in cost
    assert "| regularization=l2 | 3 | 17 (15–19) |" in cost  # mean (min–max), no ± or p
    assert "Few runs" not in report  # n = 5, 5 and 3


def test_small_n_is_noted_in_report_md(tmp_path):
    for seed, acc in enumerate([0.8, 0.9]):
        write_job(tmp_path, seed, ["regularization=none", f"seed={seed}"], {"test/acc": acc})
    write_job(tmp_path, 2, ["regularization=l2", "seed=0"], {"test/acc": 0.875})
    build_report(tmp_path, metrics=["test/acc"])
    note = next(
        line for line in (tmp_path / "report.md").read_text().splitlines() if "Few runs" in line
    )
    assert "`regularization=none` (n = 2), `regularization=l2` (n = 1)" in note
    assert "a single run has no interval; at n = 2 the 95 % CI is wide (t = 12.7)" in note


def test_penalty_study_tabulates_sparsity_against_accuracy(tmp_path):
    runs = {  # strength -> per seed (zero fraction, near-zero fraction, test/acc)
        "1e-4": [(0.10, 0.20, 0.95), (0.14, 0.26, 0.93)],
        "1e-2": [(0.60, 0.80, 0.81), (0.70, 0.84, 0.79)],
    }
    number = 0
    for strength, seeds in runs.items():
        for seed, (zero, near, acc) in enumerate(seeds):
            overrides = ["regularization=l1", f"regularization.strength={strength}", f"seed={seed}"]
            final = {"reg/zero_fraction": zero, "reg/near_zero_fraction": near}
            write_job(tmp_path, number, overrides, {"test/acc": acc}, final=final, composed=False)
            number += 1
    build_report(tmp_path, metrics=["test/acc"])
    report = (tmp_path / "report.md").read_text()
    assert "## Sparsity against accuracy" in report

    def strength_label(strength: str) -> str:
        return f"regularization.strength={strength}"

    for strength, seeds in runs.items():
        zero, near, acc = np.mean(seeds, axis=0)
        table = report.split("## Sparsity against accuracy")[1]
        (line,) = [
            row for row in table.splitlines() if row.startswith(f"| {strength_label(strength)} |")
        ]
        assert line.endswith(f"| 2 | {100 * zero:.1f} % | {100 * near:.1f} % | {acc:.4g} |"), line


def test_default_tags_are_not_reported(tmp_path):
    for seed in (0, 1):
        write_job(
            tmp_path, seed, ["regularization=none", f"seed={seed}"], {"test/acc": 0.8}, tags=["dev"]
        )
    build_report(tmp_path, metrics=["test/acc"])
    assert "Tags" not in (tmp_path / "report.md").read_text()
    defaults = yaml.safe_load((CONF_DIR / "train.yaml").read_text())["tags"]
    assert list(DEFAULT_TAGS) == defaults  # the report's idea of the default is the config's


def test_learning_curves_of_several_methods_get_a_panel_each_with_the_baseline():
    shown = ("regularization", "regularization.strength")
    rows = [config_row([("regularization", "none")], [0.9, 0.92], shown, is_baseline=True)]
    for method in ("l1", "l2"):
        for strength in ("1e-4", "1e-2"):
            pairs = [("regularization", method), ("regularization.strength", strength)]
            rows.append(config_row(pairs, [0.8, 0.85], shown))
    figure = curves_figure(rows)
    drawn_within_the_figure(figure)
    assert len(figure.axes) == 2
    for axes in figure.axes:
        lines = {line.get_label(): line for line in axes.get_lines()}
        baseline = lines.pop("regularization=none")
        assert set(lines) == {"strength=1e-4", "strength=1e-2"}
        assert baseline.get_zorder() > max(line.get_zorder() for line in lines.values())
    assert "n = 2 runs per configuration" in _suptitle(figure)
