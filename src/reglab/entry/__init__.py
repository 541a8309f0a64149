"""The console commands `reglab-train` and `reglab-eval` (pyproject.toml's [project.scripts]).

`python train.py` and `python eval.py` in a clone call the same functions. Each command reads
the configs shipped in the package (`pkg://reglab.conf`: the top-level conf/ folder), so it runs
from any folder; `outputs/` is made in the folder where it runs. A user's own config folder
joins with `--config-dir` or `hydra.searchpath`, their own code with `plugins=`.
"""
