"""Ablation report of a sweep folder: `python scripts/report.py outputs/multirun/<date>/<time>_<task>`."""

from reglab.report.cli import main

if __name__ == "__main__":
    main()
