"""`reglab-eval ckpt_path=<run folder or checkpoint> [overrides]`; `python eval.py` in a clone.

Tests a trained checkpoint with the packaged configs (conf/eval.yaml) and writes
eval_metrics.json into outputs/eval/<date>/<time> under the folder where it runs; a bad value
exits 2 with one line.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from reglab.entry.launch import CONFIG_PATH, config_errors_exit_2, launch


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: test the checkpoint; a bad config value exits 2 with one line."""
    with config_errors_exit_2():
        from reglab.evaluate import evaluate

        evaluate(cfg, HydraConfig.get().overrides.task)


def run() -> None:
    """The `reglab-eval` command: check the command line, then compose the config and test."""
    launch(main)
