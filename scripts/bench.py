"""Framework overhead, measured against a hand-written loop in the same process and run.

    python scripts/bench.py                    # per-epoch speed with the default callbacks on
    python scripts/bench.py --study            # a 20-run sweep: basic, joblib and vectorized
    python scripts/bench.py --study --members 5,20,50  # ... and the per-member cost by group size
    python scripts/bench.py --members 5,20,50  # only the per-member cost of stacked groups
    python scripts/bench.py --startup          # `train.py --help` and a typo, end to end
    python scripts/bench.py model=cnn ...      # overrides for the per-epoch measurement
    python scripts/bench.py --threads 1 ...    # torch threads here and in the sweeps (0: default)

Per epoch: reglab runs `model=mlp` (width 256, depth 2) on digits, batch 64, validation every
epoch, TensorBoard, checkpoints and monitors on (what a user runs), for 5 and for 35 epochs
without early stopping; (T35 - T5) / 30 is its cost per epoch, free of the fixed cost of a run.
The hand loop trains the same net on the same batches and validates every epoch. The ratio
hand / reglab is reglab's speed relative to the hand loop (1.0: no overhead). The same training
as a bare LightningModule and Trainer (nothing but the loop) is printed beside it: the floor for
anything built on Lightning's loop.

Study: `python train.py -m model=mlp regularization=l2 regularization.strength=<4 values>
seed=<5 values> trainer.max_epochs=20 early_stopping=none` (20 runs), one after the other with
the basic launcher, with `hydra/launcher=joblib hydra.launcher.n_jobs=2` and with
`hydra/launcher=vectorized` (issue 21: the 20 runs train as one stacked model), each timed whole
from a fresh `python train.py` (start-up, imports and Hydra's composition included); each one's
speed is the basic launcher's wall time / its own (above 1: faster). The floor is the hand loop's
training of the same 20 runs: 20 x one hand loop of 20 epochs, measured here. Peak memory is the
largest resident set of the sweep's process tree (the `train.py` process and every descendant,
joblib's workers included), the VmRSS of each summed, sampled from /proc every 0.2 s (pages
shared between processes count once per process). For every launcher: the seconds until Hydra's
first job line (start-up, imports and the launcher's composition). For the basic launcher also:
the first job, each later job (from Hydra's job lines); (wall - the floor) / 20, all that is not
the hand loop's training; and the fixed cost of one run (trainer set-up, sanity check,
checkpoints, test, outputs), measured in-process as a 1-epoch run minus a hand epoch.

Per member (`--study`: the study's 20 runs as one group; `--members K,...`: groups of K runs
differing only in seed): in-process, the members are built as the vectorized launcher builds them
(`reglab.stack.member.prepare`) and fitted as one StackedModule on one Trainer
(`reglab.stack.group.fit`: training, validation every epoch, no test or outputs) for 5 and for 35
epochs; (T35 - T5) / 30 / K is one member's epoch, against the hand loop's epoch measured the same
way ((T35 - T5) / 30), rounds interleaved, best of each. Below 1: a stacked member trains faster
than the same net written by hand (issue 21's target: at most 0.7 at K = 20). The hand loop
applies no L2 penalty; the members do.

This machine's speed drifts with other work on it: with more torch threads than idle cores, torch
slows down many times over, so on a busy machine compare numbers of one invocation, `--threads 1`.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
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
from reglab.stack.group import fit
from reglab.stack.member import prepare

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
PER_EPOCH = ["model=mlp", "model.width=256", "model.depth=2", "early_stopping=none"]
STRENGTHS = ["1e-5", "1e-4", "1e-3", "1e-2"]
SEEDS = [0, 1, 2, 3, 4]
ONE_RUN = ["model=mlp", "regularization=l2", "early_stopping=none"]
STUDY_EPOCHS = 20
STUDY = [
    "-m",
    "model=mlp",
    "regularization=l2",
    f"regularization.strength={','.join(STRENGTHS)}",
    f"seed={','.join(map(str, SEEDS))}",
    f"trainer.max_epochs={STUDY_EPOCHS}",
    "early_stopping=none",
]
STUDY_RUNS = len(STRENGTHS) * len(SEEDS)
LAUNCHERS = {  # the study's launchers: name -> the overrides that pick it
    "basic": [],
    "joblib (2 workers)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    "vectorized": ["hydra/launcher=vectorized"],
}
SAMPLE_S = 0.2  # how often a sweep's memory is sampled
ROUNDS = 3
MEMBER_ROUNDS = 2  # stacked fits of 50 members take a while


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


def study(members: list[int] | None) -> None:
    """Wall time and peak memory of the 20-run sweep under each launcher, against the floor (the
    hand loop's training of the 20 runs), the basic launcher's per-job costs, then the per-member
    epoch of stacked training (the study's group, or groups of `members` seeds)."""
    cfg = compose_plain(ONE_RUN)
    hand_loop(cfg, 2)
    timed_run(ONE_RUN, 1)
    training = min(hand_loop(cfg, STUDY_EPOCHS) for _ in range(3))
    # In-process, no sweep: a 1-epoch run minus a hand-written epoch (set-up, sanity check,
    # checkpoints, test, outputs), best of 3.
    in_run = min(timed_run(ONE_RUN, 1) - hand_loop(cfg, 1) for _ in range(3))
    sweeps = {name: sweep(overrides) for name, overrides in LAUNCHERS.items()}
    floor = STUDY_RUNS * training
    basic_wall = sweeps["basic"][0]
    print(f"study: {' '.join(STUDY)} ({STUDY_RUNS} runs)")
    print(
        f"floor: the hand loop's training of the {STUDY_RUNS} runs: {STUDY_RUNS} x {training:.2f} s"
        f" = {floor:.1f} s"
    )
    print(
        "peak memory: the sweep's process tree, VmRSS summed, sampled from /proc; first job line:"
        " seconds until Hydra's first `#<n> :` line (start-up, imports, composition)"
    )
    print(
        f"{'launcher':<20} {'wall s':>7} {'speed vs basic':>15} {'wall / floor':>13}"
        f" {'peak MiB':>9} {'first job line s':>17}"
    )
    for name, (wall, starts, peak) in sweeps.items():
        print(
            f"{name:<20} {wall:>7.1f} {basic_wall / wall:>14.2f}x {wall / floor:>13.2f}"
            f" {peak / 2**20:>9.0f} {starts[0]:>17.1f}"
        )
    wall, starts, _ = sweeps["basic"]
    per_job = (wall - starts[1]) / (STUDY_RUNS - 1)  # jobs after the first (which imports torch)
    print(
        f"basic: start-up until the first job: {starts[0]:.1f} s; the first job (imports Lightning "
        f"and torch): {starts[1] - starts[0]:.1f} s; each later job: {per_job:.2f} s"
    )
    print(
        f"basic: everything but the hand loop's training, per run: {wall / STUDY_RUNS - training:.2f} s"
    )
    print(f"fixed cost of one run in-process (1-epoch run - 1 hand epoch): {in_run:.2f} s")
    if members:
        per_member(seed_groups(members))
    else:
        grid = [[f"regularization.strength={s}", f"seed={n}"] for s in STRENGTHS for n in SEEDS]
        per_member([("the study's runs", grid)])


def sweep(launcher: list[str]) -> tuple[float, list[float], int]:
    """Run the study with `launcher`'s overrides from a fresh `python train.py -m`: its wall
    seconds, the seconds at which Hydra printed each "#<n> : <overrides>" job line, and the peak
    bytes resident in its process tree."""
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "train.py"),
                *STUDY,
                *launcher,
                f"hydra.sweep.dir={tmp}/sweep",
            ],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        peak = PeakMemory(process.pid)
        for line in process.stdout:
            lines.append((time.perf_counter() - started, line))
        status = process.wait()
        wall = time.perf_counter() - started
        peak.stop()
    if status != 0:
        raise SystemExit("".join(line for _, line in lines[-20:]))
    starts = [at for at, line in lines if re.search(r"\[HYDRA\]\s+#\d+ :", line)]
    return wall, starts, peak.bytes


class PeakMemory:
    """The largest sum of VmRSS over a process and its descendants, sampled from /proc in a
    thread every SAMPLE_S seconds until `stop()`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.bytes = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        """Keep the largest sample until stopped."""
        while not self.done.is_set():
            self.bytes = max(self.bytes, tree_rss(self.root))
            self.done.wait(SAMPLE_S)

    def stop(self) -> None:
        """Stop sampling (after a last sample's wait)."""
        self.done.set()
        self.thread.join()


def tree_rss(root: int) -> int:
    """Bytes resident now in process `root` and every descendant (0 once it has exited)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += resident_pages * os.sysconf("SC_PAGE_SIZE")
    return total


def stacked_fit(members: list[list[str]], epochs: int) -> float:
    """Seconds of fitting the runs `ONE_RUN + members[k]` as one StackedModule for `epochs`
    epochs (built first, as the vectorized launcher builds them; no test or outputs)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
    ):
        runs = [
            prepare(
                compose(
                    "train",
                    overrides=[
                        f"paths.output_dir={tmp}/member{k}",
                        "trainer.enable_progress_bar=false",
                        *ONE_RUN,
                        *overrides,
                        f"trainer.max_epochs={epochs}",
                    ],
                )
            )
            for k, overrides in enumerate(members)
        ]
        started = time.perf_counter()
        fit(runs)
        return time.perf_counter() - started


def seed_groups(sizes: list[int]) -> list[tuple[str, list[list[str]]]]:
    """Groups of K runs differing only in seed (0 to K - 1), one per size K."""
    return [("seeds", [[f"seed={seed}"] for seed in range(k)]) for k in sizes]


def per_member(groups: list[tuple[str, list[list[str]]]]) -> None:
    """One member's training epoch in a stacked group of each size against one hand-loop epoch,
    both (T35 - T5) / 30, rounds interleaved, best of each."""
    cfg = compose_plain(ONE_RUN)
    hand_loop(cfg, 2)
    print("stacked training per member epoch ((T35 - T5) / 30 / K, StackedModule fit in-process)")
    print(f"{'K':>4} {'member ms':>10} {'hand ms':>8} {'member / hand':>14}  members")
    for what, members in groups:
        k = len(members)
        stacked_fit(members, 1)  # warm-up
        rounds = [
            (
                hand_loop(cfg, 35) - hand_loop(cfg, 5),
                stacked_fit(members, 35) - stacked_fit(members, 5),
            )
            for _ in range(MEMBER_ROUNDS)
        ]
        hand, stacked = (min(times) / 30 for times in zip(*rounds, strict=True))
        each = stacked / k
        print(f"{k:>4} {each * 1000:>10.1f} {hand * 1000:>8.1f} {each / hand:>14.2f}  {what}")


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
    parser.add_argument("--study", action="store_true", help="time a 20-run sweep, 3 launchers")
    parser.add_argument(
        "--members", type=member_counts, help="comma-separated group sizes K: per-member cost"
    )
    parser.add_argument("--startup", action="store_true", help="time --help and a typo")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads, here and in sweeps (0: default)"
    )
    parser.add_argument("overrides", nargs="*", help="overrides for the per-epoch measurement")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    warnings.filterwarnings("ignore")
    # Lightning sets its own levels on these (not on "lightning"): its notices, tip included.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("reglab").setLevel(logging.WARNING)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} cores, load average {load}; "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    if args.startup:
        startup()
    elif args.study:
        study(args.members)
    elif args.members:
        per_member(seed_groups(args.members))
    else:
        per_epoch(args.overrides)
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def member_counts(text: str) -> list[int]:
    """`5,20,50` -> [5, 20, 50] (group sizes of at least 1)."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not comma-separated integers: {text!r}") from None
    if any(k < 1 for k in counts):
        raise argparse.ArgumentTypeError(f"a group has at least 1 member: {text!r}")
    return counts


if __name__ == "__main__":
    main()
