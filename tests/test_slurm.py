"""Sweeps on SLURM without a cluster: a two-node DDP sweep (`trainer=ddp trainer.num_nodes=2
hydra/launcher=slurm`) goes through hydra-submitit-launcher's own launch code to one sbatch job
array; stand-in `sbatch` and `srun` on PATH keep the script submitit writes. The script, the
pickled jobs it runs and Lightning's reading of the SLURM variables such a job gets are checked.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from conftest import CONF_DIR

submitit = pytest.importorskip("submitit")

TWO_NODE_DDP = [
    "trainer=ddp",
    "trainer.num_nodes=2",
    "hydra/launcher=slurm",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.gpus_per_node=4",
    "hydra.launcher.mem_gb=64",
    "hydra.launcher.timeout_min=120",
    "hydra.launcher.setup=['module load cuda/12.1','source ~/reglab/.venv/bin/activate']",
]


def task(cfg: object) -> None:
    """What the jobs would run (never run here)."""


def fake_slurm(folder: Path, keep: Path) -> Path:
    """An `sbatch` that keeps the script it is given and answers as SLURM does, and an `srun`
    (submitit looks for it to tell it is on a cluster; nothing runs it)."""
    folder.mkdir()
    commands = {
        "sbatch": f'cp "$1" "{keep}"\necho "Submitted batch job 4242"',
        "srun": 'echo "srun: no cluster here" >&2\nexit 1',
    }
    for name, body in commands.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.fixture
def submitted(tmp_path, monkeypatch):
    """Launch a two-job, two-node DDP sweep through the SLURM launcher: (script, jobs, cfg)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*TWO_NODE_DDP, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
            return_hydra_config=True,
        )
    script = tmp_path / "submitted.sh"
    bin_dir = fake_slurm(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # The launcher waits for the jobs' results: there is no cluster to run them.
    monkeypatch.setattr(submitit.slurm.slurm.SlurmJob, "results", lambda job: [job.job_id])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=task, config=cfg)
    job_ids = launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    assert job_ids == ["4242_0", "4242_1"]
    pickles = sorted((tmp_path / "sweep" / ".submitit").rglob("*_submitted.pkl"))
    jobs = [submitit.core.utils.DelayedSubmission.load(path) for path in pickles]
    return script.read_text(), jobs, cfg


def sbatch_flags(script: str) -> dict[str, str]:
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(.*)$", script, re.M))


def test_a_two_node_ddp_sweep_is_one_sbatch_job_array(submitted):
    script, _, _ = submitted
    flags = sbatch_flags(script)
    assert {
        "nodes": "2",  # from trainer.num_nodes
        "ntasks-per-node": "4",  # one task per GPU
        "gpus-per-node": "4",
        "cpus-per-task": "8",
        "mem": "64GB",
        "time": "120",
        "partition": "gpu",
        "array": "0-1%2",  # two jobs, both at once (array_parallelism 16)
    }.items() <= flags.items()
    lines = script.splitlines()
    setup = lines.index("module load cuda/12.1")
    assert lines[setup + 1] == "source ~/reglab/.venv/bin/activate"
    (command,) = [line for line in lines if line.startswith("srun ")]
    assert lines.index(command) > setup  # modules are loaded before the job starts
    assert "python" in command and command.endswith(
        f"-u -m submitit.core._submit {submitted[2].hydra.sweep.dir}/.submitit/%j"
    )


def test_each_job_of_the_array_runs_its_sweep_overrides_with_the_ddp_config(submitted):
    _, jobs, _ = submitted
    assert len(jobs) == 2
    overrides = sorted(job.args[0] for job in jobs)
    assert overrides == [["seed=0"], ["seed=1"]]
    for job in jobs:
        config = job.function.config  # the composed command each task completes with its overrides
        assert config.trainer.num_nodes == 2 and config.trainer.strategy == "ddp"
        assert config.hydra.launcher.nodes == 2 and config.hydra.launcher.tasks_per_node == 4


def test_lightning_joins_the_tasks_such_a_job_starts(submitted, monkeypatch):
    # Task 5 of the 8 the script starts (node 1, its second GPU), as srun sets its environment.
    _, _, cfg = submitted
    slurm = {
        "SLURM_NTASKS": "8",
        "SLURM_NTASKS_PER_NODE": "4",
        "SLURM_NNODES": "2",
        "SLURM_NODELIST": "gpu-node[07-08]",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NAME": "train",
        "SLURM_JOB_ID": "4242",
    }
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    import lightning as L
    from lightning.pytorch.plugins.environments import SLURMEnvironment
    from lightning.pytorch.utilities import rank_zero
    from lightning_utilities.core import rank_zero as utils_rank_zero

    # The DDP strategy sets the process-wide rank of Lightning's rank_zero_only (here 5, which
    # would silence every later logger in this test process): put it back afterwards.
    for module in (rank_zero, utils_rank_zero):
        monkeypatch.setattr(module.rank_zero_only, "rank", module.rank_zero_only.rank)

    # The trainer the job builds, on CPU here: `devices: auto` is the node's 4 GPUs there.
    trainer = L.Trainer(
        accelerator="cpu",
        devices=cfg.hydra.launcher.tasks_per_node,
        num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    environment = trainer.strategy.cluster_environment
    assert isinstance(environment, SLURMEnvironment)
    assert environment.creates_processes_externally  # SLURM started them: Lightning starts none
    assert (trainer.world_size, trainer.global_rank, trainer.node_rank, trainer.local_rank) == (
        8,
        5,
        1,
        1,
    )
    assert environment.main_address == "gpu-node07"
    assert rank_zero.rank_zero_only.rank == 5  # what the monkeypatch undoes
