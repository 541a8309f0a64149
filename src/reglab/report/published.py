"""report.md's "Published beside measured" section, for a sweep that reproduces a paper.

A paper experiment (conf/experiment/paper_*.yaml) carries what its paper published as data, in
every job's config:

    paper:
      title: "Zhang et al. 2018, mixup (ICLR)"
      metric: test/error            # or test/acc: what the published numbers are
      arms:
        - {name: ERM, match: {augmentation: cifar}, published: 0.056, where: Table 2}

A configuration of the report belongs to an arm when its overrides include every `match` pair.
The measured value is the mean over the arm's runs with its 95 % CI, in the paper's metric: an
error is 1 - accuracy (test/error from the logged test/acc), so that both columns read the same
way; both are printed in percent. Arms that no configuration matches are listed as not run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from reglab.report.collect import Job
from reglab.report.intervals import LEVEL
from reglab.report.rows import ConfigRow
from reglab.report.table import mean_ci

# The paper's metric -> (the logged metric it is computed from, whether it is 1 - that metric).
PAPER_METRICS: dict[str, tuple[str, bool]] = {
    "test/error": ("test/acc", True),
    "test/acc": ("test/acc", False),
    "best/val/error": ("best/val/acc", True),
    "best/val/acc": ("best/val/acc", False),
}


def paper_of(jobs: Sequence[Job]) -> dict[str, Any] | None:
    """The `paper` node of the first job whose config carries one (None: not a paper sweep)."""
    for job in jobs:
        node = (job.config or {}).get("paper")
        if isinstance(node, dict) and node.get("arms"):
            return node
    return None


def logged_metrics(jobs: Sequence[Job]) -> list[str]:
    """The logged metric the section reads ([] without a paper or for a metric it cannot read)."""
    paper = paper_of(jobs)
    if paper is None or str(paper.get("metric")) not in PAPER_METRICS:
        return []
    return [PAPER_METRICS[str(paper["metric"])][0]]


def _text(value: Any) -> str:
    # YAML true / an override's `true`, 0.3 / `0.3`: compared as the same text.
    return str(value).lower()


def matches(row: ConfigRow, match: dict[str, Any]) -> bool:
    """Whether the configuration's overrides include every `key: value` pair of `match`."""
    overrides = {key.lstrip("+~"): _text(value) for key, value in row.key}
    return all(overrides.get(key) == _text(value) for key, value in match.items())


def measured(values: Sequence[float]) -> str:
    """`mean ± 95 % CI` in percent, rounded to the ±; a single run's value alone (n = 1)."""
    if not values:
        return ""
    mean = 100 * float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.4g} % (n = 1)"
    half = 100 * float(stats.t.ppf(0.5 + LEVEL / 2, len(values) - 1) * stats.sem(values))
    half = 0.0 if not math.isfinite(half) else half
    return f"{mean_ci(mean, half)} % (n = {len(values)})"


def published_table(rows: Sequence[ConfigRow], jobs: Sequence[Job]) -> list[str]:
    """The section's lines ([] unless the jobs carry a `paper` node with a metric it can read)."""
    paper = paper_of(jobs)
    if paper is None or str(paper.get("metric")) not in PAPER_METRICS:
        return []
    metric = str(paper["metric"])
    logged, complement = PAPER_METRICS[metric]
    how = f"1 - {logged} of each run" if complement else f"{logged} of each run"
    lines = [
        "## Published beside measured",
        "",
        f"{paper.get('title', 'The paper')}: {metric} in percent; measured is the mean over the "
        f"arm's runs ({how}) ± its 95 % CI half-width.",
        "",
        "| arm | config | measured | published | where |",
        "| --- | --- | --- | --- | --- |",
    ]
    for arm in paper["arms"]:
        name, match = arm.get("name", ""), dict(arm.get("match") or {})
        published = f"{100 * float(arm['published']):.4g} %" if "published" in arm else "—"
        where = arm.get("where", "")
        found = [row for row in rows if matches(row, match)]
        if not found:
            lines.append(f"| {name} | not run | | {published} | {where} |")
        for row in found:
            values = row.values.get(logged, [])
            values = [1 - v for v in values] if complement else list(values)
            lines.append(f"| {name} | {row.label} | {measured(values)} | {published} | {where} |")
    return lines
