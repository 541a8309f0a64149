"""Framework overhead, measured against a hand-written loop in the same process and run.

    python scripts/bench.py                 # per-epoch speed with the default callbacks on
    python scripts/bench.py --study         # a 20-run sweep's wall time and the fixed cost per run
    python scripts/bench.py --startup       # `train.py --help` and a typo, end to end
    python scripts/bench.py model=cnn ...   # overrides for the per-epoch measurement

Per epoch: reglab runs `model=mlp` (width 256, depth 2) on digits, batch 64, validation every
epoch, TensorBoard, checkpoints and monitors on (what a user runs), for 5 and for 35 epochs
without early stopping; (T35 - T5) / 30 is its cost per epoch, free of the fixed cost of a run.
The hand loop trains the same net on the same batches and validates every epoch. The ratio
hand / reglab is reglab's speed relative to the hand loop (1.0: no overhead). The same training
as a bare LightningModule and Trainer (nothing but the loop) is printed beside it: the floor for
anything built on Lightning's loop.

Study: `python train.py -m model=mlp regularization=l2 regularization.strength=<4 values>
seed=<5 values> trainer.max_epochs=20 early_stopping=none` with the basic launcher, timed
whole and per job (from Hydra's job lines); (wall - 20 * the hand loop's 20-epoch time) / 20 is
all that is not the hand loop's training: start-up and imports, Hydra's per-job work, reglab's
per-epoch overhead and its fixed cost. That fixed cost alone (trainer set-up, sanity check,
checkpoints, test, outputs) is measured in-process as a 1-epoch run minus a hand-written epoch.
"""

from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from reglab.config import plain
from reglab.nn import build_net
from reglab.run import run_one

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
PER_EPOCH = ["model=mlp", "model.width=256", "model.depth=2", "early_stopping=none"]
STUDY = [
    "-m",
    "model=mlp",
    "regularization=l2",
    "regularization.strength=1e-5,1e-4,1e-3,1e-2",
    "seed=0,1,2,3,4",
    "trainer.max_epochs=20",
    "early_stopping=none",
]
STUDY_RUNS = 20
ROUNDS = 3


def baseline_parts(cfg: DictConfig) -> tuple[Any, torch.nn.Module, Callable[..., torch.Tensor]]:
    """What both baselines train: the seeded data module (set up), the net and the loss."""
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    net = build_net(plain(cfg.model), datamodule.input_shape, datamodule.num_outputs)
    loss_fn = F.cross_entropy if datamodule.task == "classification" else F.mse_loss
    return datamodule, net, loss_fn


def hand_loop(cfg: DictConfig, epochs: int) -> float:
    """The same training written by hand (Adam, train + validation each epoch); seconds."""
    datamodule, net, loss_fn = baseline_parts(cfg)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr)
    started = time.perf_counter()
    for _ in range(epochs):
        net.train()
        for x, y in datamodule.train_dataloader():
            loss = loss_fn(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            [loss_fn(net(x), y) for x, y in datamodule.val_dataloader()]
    return time.perf_counter() - started


def plain_lightning_loop(cfg: DictConfig, epochs: int) -> float:
    """The same training as a bare Lightning module and Trainer (no logger, callbacks,
    checkpoints, metrics or progress bar): the floor for any framework built on Lightning's loop;
    seconds."""
    import lightning as L

    datamodule, net, loss_fn = baseline_parts(cfg)

    class Bare(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return loss_fn(self.net(x), y)

        def validation_step(self, batch: tuple, batch_idx: int) -> None:
            x, y = batch
            loss_fn(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=cfg.optimizer.lr)

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    module = Bare()
    started = time.perf_counter()
    trainer.fit(module, datamodule.train_dataloader(), datamodule.val_dataloader())
    return time.perf_counter() - started


def timed_run(overrides: list[str], epochs: int) -> float:
    """Seconds of one whole reglab run (set-up, fit, test, outputs) of `epochs` epochs."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
    ):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={tmp}/run",
                "trainer.enable_progress_bar=false",
                *overrides,
                f"trainer.max_epochs={epochs}",
            ],
        )
        started = time.perf_counter()
        run_one(cfg)
        return time.perf_counter() - started


def compose_plain(overrides: list[str]) -> DictConfig:
    """The config `python train.py <overrides>` would run (no outputs written)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def per_epoch(overrides: list[str]) -> None:
    """Per-epoch cost of reglab with its default callbacks against the hand loop."""
    wanted = [*PER_EPOCH, *overrides]
    cfg = compose_plain(wanted)
    hand_loop(cfg, 2)  # warm-up: first-call costs are nobody's overhead
    plain_lightning_loop(cfg, 2)
    timed_run(wanted, 2)
    # Interleaved rounds, best of each: this machine's speed drifts within a minute.
    rounds = [
        (
            hand_loop(cfg, 35) - hand_loop(cfg, 5),
            plain_lightning_loop(cfg, 35) - plain_lightning_loop(cfg, 5),
            timed_run(wanted, 35) - timed_run(wanted, 5),
        )
        for _ in range(ROUNDS)
    ]
    hand, bare, ours = (min(times) / 30 for times in zip(*rounds, strict=True))
    print(f"config: {' '.join(wanted)}")
    print(f"hand-written loop: {hand * 1000:.1f} ms per epoch")
    print(f"plain Lightning (no logger, callbacks, checkpoints): {bare * 1000:.1f} ms per epoch")
    print(f"reglab (default callbacks, TensorBoard, checkpoints): {ours * 1000:.1f} ms per epoch")
    print(
        f"speed relative to the hand loop: reglab {hand / ours:.2f}x, plain Lightning {hand / bare:.2f}x"
    )


def study() -> None:
    """Wall time of a 20-run sweep through `train.py -m` and the fixed cost of each run."""
    one_run = ["model=mlp", "regularization=l2", "early_stopping=none"]
    cfg = compose_plain(one_run)
    hand_loop(cfg, 2)
    timed_run(one_run, 1)
    training = min(hand_loop(cfg, 20) for _ in range(3))
    # In-process, no sweep: a 1-epoch run minus a hand-written epoch (set-up, sanity check,
    # checkpoints, test, outputs), best of 3.
    in_run = min(timed_run(one_run, 1) - hand_loop(cfg, 1) for _ in range(3))
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *STUDY, f"hydra.sweep.dir={tmp}/sweep"],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in process.stdout:  # when each job starts: Hydra's "#<n> : <overrides>" line
            lines.append((time.perf_counter() - started, line))
        if process.wait() != 0:
            raise SystemExit("".join(line for _, line in lines[-20:]))
        wall = time.perf_counter() - started
    starts = [at for at, line in lines if re.search(r"\[HYDRA\]\s+#\d+ :", line)]
    per_job = (wall - starts[1]) / (STUDY_RUNS - 1)  # jobs after the first (which imports torch)
    print(f"study: {' '.join(STUDY)} ({STUDY_RUNS} runs, basic launcher)")
    print(f"wall time: {wall:.1f} s; hand-loop training per run: {training:.2f} s")
    print(
        f"start-up until the first job: {starts[0]:.1f} s; the first job (imports Lightning and "
        f"torch): {starts[1] - starts[0]:.1f} s; each later job: {per_job:.2f} s"
    )
    print(f"everything but the hand loop's training, per run: {wall / STUDY_RUNS - training:.2f} s")
    print(f"fixed cost of one run in-process (1-epoch run - 1 hand epoch): {in_run:.2f} s")


def startup() -> None:
    """End-to-end seconds of commands that should answer without training (best of 3)."""
    for args in (["--help"], ["model.activation=relux"]):
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, str(ROOT / "train.py"), *args], capture_output=True, check=False
            )
            times.append(time.perf_counter() - started)
        print(f"python train.py {' '.join(args)}: {min(times):.2f} s")


def main() -> None:
    """Run the measurement the flags pick and print its numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="time a 20-run sweep")
    parser.add_argument("--startup", action="store_true", help="time --help and a typo")
    parser.add_argument("overrides", nargs="*", help="overrides for the per-epoch measurement")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    # Lightning sets its own levels on these (not on "lightning"): its notices, tip included.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("reglab").setLevel(logging.WARNING)
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    if args.startup:
        startup()
    elif args.study:
        study()
    else:
        per_epoch(args.overrides)


if __name__ == "__main__":
    main()
