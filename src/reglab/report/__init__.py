"""Ablation report: a sweep folder -> a mean ± std table (md, csv) and plots (png)."""

from reglab.report.collect import Job, collect_jobs
from reglab.report.table import ConfigRow, summarize

__all__ = ["ConfigRow", "Job", "collect_jobs", "summarize"]
