"""Train one experiment: `python train.py [group=option ...] [key=value ...]` (add -m to sweep).

The same as the installed `reglab-train` command (reglab.entry.train), kept for a clone.
"""

from reglab.entry.train import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":
    run()
