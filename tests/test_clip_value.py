"""Gradient clipping by value with a weight penalty on `lstm_net`: the penalty is added first, then
Lightning clips, so every gradient element the optimizer steps on is within the clip value."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from conftest import compose_config
from reglab.run import run_one

CLIP = 0.01
RUN = [
    "model=lstm_net",
    "data=digits",
    "data.layout=sequence",
    "data.train_fraction=0.3",
    "regularization=l2",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=none",
    "early_stopping=none",
]


class GradientProbe(L.Callback):
    """Every gradient element of each optimizer step: after the penalty (before clipping) and as
    the optimizer's step reads them.

    `on_before_optimizer_step` runs after the penalty callback's (callbacks run in list order, the
    controls first) and before Lightning clips. The optimizer's step hook is a *post* hook: Lightning
    calls `optimizer.step(closure)` and the closure (backward, penalty, clipping) runs inside the
    step, after any step pre-hook; the gradients stay as the step used them until the next step's
    closure zeroes them.
    """

    def __init__(self) -> None:
        self.penalized: list[torch.Tensor] = []
        self.stepped: list[torch.Tensor] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.params = [p for p in pl_module.parameters() if p.requires_grad]
        trainer.optimizers[0].register_step_post_hook(self.after_step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.penalized.append(self.gradients())

    def after_step(self, optimizer, args, kwargs) -> None:
        self.stepped.append(self.gradients())

    def gradients(self) -> torch.Tensor:
        return torch.cat([p.grad.detach().flatten().clone() for p in self.params])


def _run(tmp_path: Path, *overrides: str) -> GradientProbe:
    probe = GradientProbe()
    run_one(compose_config([*RUN, *overrides], tmp_path), extra_callbacks=[probe])
    assert len(probe.stepped) == len(probe.penalized) == 6
    return probe


def test_value_clipping_bounds_every_gradient_element_after_the_penalty(tmp_path):
    clipped = _run(
        tmp_path / "clipped",
        "trainer.gradient_clip_algorithm=value",
        f"trainer.gradient_clip_val={CLIP}",
    )
    bound = torch.tensor(CLIP)  # the clip value as the float32 gradients hold it
    for penalized, stepped in zip(clipped.penalized, clipped.stepped, strict=True):
        assert stepped.abs().max() <= bound
        assert (penalized.abs() > bound).any()  # there was something to clip
        torch.testing.assert_close(stepped, penalized.clamp(-bound, bound), rtol=0, atol=0)

    unclipped = _run(tmp_path / "unclipped")
    assert all((stepped.abs() > bound).any() for stepped in unclipped.stepped)


def test_the_penalty_is_in_the_gradients_that_are_clipped(tmp_path):
    # The same first batch with and without the penalty: the gradients before clipping differ by
    # the penalty's gradient, and both are clipped to the bound.
    common = ["trainer.gradient_clip_algorithm=value", f"trainer.gradient_clip_val={CLIP}"]
    strong = _run(tmp_path / "strong", *common, "regularization.strength=1.0")
    none = _run(tmp_path / "none", *common, "regularization=none")
    difference = strong.penalized[0] - none.penalized[0]
    assert (
        difference.abs().max() > CLIP
    )  # the penalty's gradient, 2 * strength * w, before clipping
    assert strong.stepped[0].abs().max() <= torch.tensor(CLIP)
