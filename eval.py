"""Test a trained checkpoint: `python eval.py ckpt_path=<run folder or checkpoint> [overrides]`.

The same as the installed `reglab-eval` command (reglab.entry.eval), kept for a clone.
"""

from reglab.entry.eval import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
