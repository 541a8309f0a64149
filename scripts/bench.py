"""Framework overhead: a reglab run against a hand-written loop doing the same work, same process.

    python scripts/bench.py                      # selu_net on digits, 20 epochs
    python scripts/bench.py model=fit_tanh data=function trainer.max_epochs=10

Both sides train the same net on the same in-memory batches for the same epochs, validate every
epoch and test once. reglab runs without logger, checkpoint and progress bar (what the framework
itself costs); the hand loop keeps only loss and accuracy. Prints seconds and the ratio.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from reglab.nn import build_net
from reglab.run import _plain, train

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
FAIR = [
    "logger=none",
    "callbacks=none",
    "+trainer.enable_checkpointing=false",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "print_config=false",
    "keep_outputs=false",
]


def hand_loop(cfg: DictConfig) -> float:
    """The same training written by hand: Adam, train/val each epoch, one test pass."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    net = build_net(_plain(cfg.model), datamodule.input_shape, datamodule.num_outputs)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr)
    loss_fn = F.cross_entropy if datamodule.task == "classification" else F.mse_loss
    started = time.perf_counter()
    for _ in range(cfg.trainer.max_epochs):
        net.train()
        for x, y in datamodule.train_dataloader():
            loss = loss_fn(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            [loss_fn(net(x), y) for x, y in datamodule.val_dataloader()]
    with torch.no_grad():
        [loss_fn(net(x), y) for x, y in datamodule.test_dataloader()]
    return time.perf_counter() - started


def main(overrides: list[str]) -> None:
    """Print hand-loop seconds, reglab seconds and their ratio for the composed config."""
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
    ):
        cfg = compose("train", overrides=[*FAIR, f"paths.output_dir={tmp}/run", *overrides])
        hand_loop(cfg)  # warm-up: first-call costs are not the framework's
        hand = hand_loop(cfg)
        started = time.perf_counter()
        train(cfg)
        framework = time.perf_counter() - started
    print(f"config: {' '.join(overrides) or '(defaults)'}; epochs: {cfg.trainer.max_epochs}")
    print(f"hand-written loop: {hand:.2f} s")
    print(f"reglab train():    {framework:.2f} s (includes Trainer set-up and test)")
    print(f"ratio reglab / hand: {framework / hand:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
