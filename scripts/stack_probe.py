"""Timing probe for stacked nets (issue 21): per-member cost of a training step, stacked vs alone.

For conf/model/mlp.yaml (width 256, depth 2, ReLU, dropout 0.1; digits-sized: 64 inputs,
10 classes, batch 64) it times one forward + backward + Adam step of a StackedNet of K members
(reglab.stack.stack_nets, Adam on the stacked [K, ...] parameters, which is each member's own Adam)
and of one plain member net, in the same invocation, rounds interleaved so that a busy machine
slows both alike; the best round of each counts. It prints the per-member time of the stacked
step (its time / K), the plain step's time and their ratio (below 1: a stacked member trains
faster than a plain net). `--kernels` also times the stacked Linear's candidate kernels
(baddbmm in either layout, bmm + bias, einsum) forward + backward into the weight's gradient.

    python scripts/stack_probe.py                 # K = 5, 20, 50 on the CPU, one thread
    python scripts/stack_probe.py --members 5,20,50,100 --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from reglab.nn import build_net
from reglab.stack import stack_nets

ROOT = Path(__file__).resolve().parents[1]
FEATURES, CLASSES, BATCH = 64, 10, 64


def mlp_spec() -> dict:
    """conf/model/mlp.yaml with its interpolations resolved."""
    config = OmegaConf.create({"model": OmegaConf.load(ROOT / "conf" / "model" / "mlp.yaml")})
    return OmegaConf.to_container(config.model, resolve=True)


def member(seed: int, device: torch.device) -> torch.nn.Module:
    """One member net as reglab builds it for digits, after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return build_net(mlp_spec(), (FEATURES,), CLASSES).to(device).train()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per call of `step`, averaged over `steps` calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def plain_step(device: torch.device) -> Callable[[], None]:
    """One training step of one plain member net on a fixed batch."""
    net = member(0, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(BATCH, FEATURES, device=device)
    y = torch.randint(0, CLASSES, (BATCH,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()

    return step


def stacked_step(members: int, device: torch.device) -> Callable[[], None]:
    """One training step of a StackedNet of `members` nets, each on its own fixed batch."""
    net = stack_nets([member(seed, device) for seed in range(members)])
    # Adam is elementwise: on the [K, ...] parameters it is each member's own Adam.
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(members, BATCH, FEATURES, device=device)
    y = torch.randint(0, CLASSES, (members, BATCH), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = net(x)
        # The sum of the members' mean losses: each member's gradient is its own.
        loss = F.cross_entropy(out.reshape(-1, CLASSES), y.reshape(-1), reduction="sum") / BATCH
        loss.backward()
        optimizer.step()

    return step


def compare(members: list[int], device: torch.device, steps: int, rounds: int) -> None:
    """Print the per-member step time, stacked vs plain, for each K of `members`."""
    print(f"mlp.yaml (256 x 2, dropout 0.1), batch {BATCH}, {FEATURES} inputs, {CLASSES} classes")
    print(f"{'K':>4} {'stacked/member ms':>18} {'plain ms':>9} {'ratio':>6}")
    plain = plain_step(device)
    for k in members:
        stacked = stacked_step(k, device)
        for step in (plain, stacked):  # warm up
            best_time(step, 5, device)
        plain_times, stacked_times = [], []
        for _ in range(rounds):
            plain_times.append(best_time(plain, steps, device))
            stacked_times.append(best_time(stacked, max(1, steps // k), device) / k)
        alone, each = min(plain_times), min(stacked_times)
        print(f"{k:>4} {each * 1e3:>18.3f} {alone * 1e3:>9.3f} {each / alone:>6.2f}")


def linear_kernels(members: int, device: torch.device, steps: int) -> None:
    """Forward + backward of K stacked Linear(256, 256) layers by three kernels."""
    w = torch.randn(members, 256, 256, device=device, requires_grad=True)
    b = torch.randn(members, 256, device=device, requires_grad=True)
    x = torch.randn(members, BATCH, 256, device=device, requires_grad=True)
    kernels = {  # the first is StackedLinear's
        "baddbmm(b, w, x^T)^T": lambda: torch.baddbmm(b.unsqueeze(2), w, x.transpose(1, 2)),
        "baddbmm(b, x, w^T)": lambda: torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)),
        "bmm(x, w^T) + b": lambda: torch.bmm(x, w.transpose(1, 2)) + b.unsqueeze(1),
        "einsum + b": lambda: torch.einsum("kbi,koi->kbo", x, w) + b.unsqueeze(1),
    }
    print(f"stacked Linear(256, 256) forward + backward, K = {members}, batch {BATCH}:")
    for name, kernel in kernels.items():

        def step(kernel: Callable[[], torch.Tensor] = kernel) -> None:
            kernel().sum().backward()

        best_time(step, 5, device)
        print(f"  {name:<21} {min(best_time(step, steps, device) for _ in range(3)) * 1e3:.3f} ms")


def main() -> None:
    """Parse the arguments and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="5,20,50", help="comma-separated K values")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--steps", type=int, default=200, help="plain steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kernels", action="store_true", help="also time the Linear kernels")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    members = [int(k) for k in args.members.split(",")]
    print(f"device {device}, {torch.get_num_threads()} thread(s), torch {torch.__version__}")
    compare(members, device, args.steps, args.rounds)
    if args.kernels:
        for k in members:
            linear_kernels(k, device, max(5, args.steps // k))


if __name__ == "__main__":
    main()
