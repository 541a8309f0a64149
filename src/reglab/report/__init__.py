"""Ablation report: a sweep folder -> a mean ± 95 % CI table (md, csv) and plots (png)."""

from reglab.report.collect import Job, collect_jobs, effective_config
from reglab.report.table import ConfigRow, merge_duplicates, summarize

__all__ = ["ConfigRow", "Job", "collect_jobs", "effective_config", "merge_duplicates", "summarize"]
