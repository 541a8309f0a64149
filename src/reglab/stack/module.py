"""The LightningModule of a vectorized study: K member runs of one net trained as one stacked net.

`StackedModule` holds `stack_nets` of the members' nets (each built as its sequential run builds
it, `reglab.stack.member`) and trains every member as its own run would: member k's loss on its
own batch (`reglab.stack.batches`) with its own `label_smoothing` (the step returns the sum of
the members' mean losses, so each member's gradient is exactly its own), its `regularization`
(`MemberPenalty`: the gradient method before clipping, the proximal step after each optimizer
step), its lr and weight decay (`MemberOptimizer`), `trainer.gradient_clip_val` per member, and
its train / val metrics computed with its own metric objects on its slice at each epoch's end.
Each member's course (history, early stopping, best state, divergence) is a `MemberCourse`; a
member that stops or fails is frozen (optimizer mask, BatchNorm statistics restored after each
step) and the Trainer stops once every member has. A `dropout` schedule sets each member's rate
at each epoch's start (one rate, or K rates on the stacked dropout layers); the `scheduler` group
is each member's own (`MemberSchedules`; a plateau schedule follows the member's own metric).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau
from typing_extensions import override

from reglab.callbacks import DropoutSchedule, WeightPenalty
from reglab.callbacks.history import FIRST_EPOCH
from reglab.module import RegLabModule
from reglab.nn.modes import set_dropout_p
from reglab.stack.net import stack_nets
from reglab.stack.optim import (
    MemberOptimizer,
    MemberSchedules,
    clip_grad_norm_,
    clip_grad_value_,
)
from reglab.stack.penalty import MemberPenalty
from reglab.stack.tracking import MemberCourse
from reglab.tasks import LOSS, TASKS

# What a plateau schedule's config names as its monitor (a placeholder logged after validation).
PLATEAU_KEY = "stack/plateau"
Pending = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class StackedModule(L.LightningModule):
    """The members' nets stacked; each member stepped, scored and stopped as its own run."""

    def __init__(
        self,
        members: Sequence[RegLabModule],
        penalties: Sequence[WeightPenalty],
        courses: Sequence[MemberCourse],
        dropout: Sequence[DropoutSchedule | None] = (),
    ) -> None:
        super().__init__()
        self.net = stack_nets([member.net for member in members])
        # Plain lists: the members' own modules are not part of the stacked module's state.
        self.members = list(members)
        self.penalties = list(penalties)
        self.courses = list(courses)
        # The members' dropout schedules (the `dropout` group): all or none of the members have one.
        self.schedules = [schedule for schedule in dropout if schedule is not None]
        self._epoch_logged: list[dict[str, float]] = [{} for _ in self.members]
        self.frozen: dict[int, dict[str, torch.Tensor]] = {}  # stopped members' buffers
        self.buffer_names = [name for name, _ in self.net.named_buffers()]
        self.member_optimizer: MemberOptimizer | None = None
        self.schedules_of_members: MemberScheduleStates | None = None
        self.penalty: MemberPenalty | None = None
        self._pending: dict[str, list[Pending]] = {"train": [], "val": []}
        self._reset_pending()

    def _reset_pending(self, stage: str | None = None) -> None:
        for name in [stage] if stage else list(self._pending):
            self._pending[name] = [[] for _ in self.members]

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs [K, B, ...] of inputs [K, B, ...]."""
        return self.net(x)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        outputs = self(x)
        losses = []
        for k, member in enumerate(self.members):
            loss = member.loss(outputs[k], y[k])
            losses.append(loss)
            if self.courses[k].active:
                self._pending[stage][k].append(
                    (outputs[k].detach(), y[k], loss.detach() * len(x[k]))
                )
        return torch.stack(losses).sum()

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The sum of the members' mean losses: member k's gradient is its own loss's."""
        return self._step(batch, "train")

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Keep each member's outputs for its epoch's loss and metrics."""
        self._step(batch, "val")

    @override
    def on_fit_start(self) -> None:
        for member in self.members:  # the members' metric objects where the outputs are
            member.losses.to(self.device)
            member.metrics.to(self.device)

    @override
    def on_train_epoch_start(self) -> None:
        assert self.penalty is not None
        self.penalty.set_epoch(self.current_epoch)
        if self.schedules:  # each member's rate of this epoch, as its DropoutSchedule sets it
            rates = [schedule.p_at(self.current_epoch) for schedule in self.schedules]
            same = all(rate == rates[0] for rate in rates)
            set_dropout_p(self.net, rates[0] if same else tuple(rates), self.schedules[0].kinds)  # type: ignore[arg-type]
            self._epoch_logged = [{"dropout/p": rate} for rate in rates]

    @override
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        assert self.penalty is not None
        self.penalty.add_gradient()

    @override
    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """`trainer.gradient_clip_val` per member: each member's own norm, never one over all."""
        if not gradient_clip_val:
            return
        params = [p for _, p in self.net.member_parameters()]
        if gradient_clip_algorithm == "value":
            clip_grad_value_(params, gradient_clip_val)
        else:
            clip_grad_norm_(params, gradient_clip_val)

    @override
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.frozen:
            return
        buffers = dict(self.net.named_buffers())
        with torch.no_grad():
            for k, kept in self.frozen.items():
                for name, value in kept.items():
                    buffers[name][k].copy_(value)

    @override
    def on_validation_epoch_end(self) -> None:
        pending = self._pending["val"]
        self._reset_pending("val")
        if self.schedules_of_members is not None and self.schedules_of_members.plateau:
            self.log(PLATEAU_KEY, float(self.current_epoch), logger=False)
        if self.trainer.sanity_checking:
            return
        epoch = self.current_epoch + FIRST_EPOCH
        for k, course in enumerate(self.courses):
            if course.active and pending[k]:
                course.record(epoch, self._epoch_values(k, "val", pending[k]))

    @override
    def on_train_epoch_end(self) -> None:
        assert self.penalty is not None and self.member_optimizer is not None
        pending = self._pending["train"]
        self._reset_pending("train")
        epoch = self.current_epoch + FIRST_EPOCH
        for k, course in enumerate(self.courses):
            if not course.active or not pending[k]:
                continue
            # What the member's WeightPenalty logs at this point, then its module's metrics.
            stats = self.penalty.statistics(k)
            samples = sum(len(outputs) for outputs, _, _ in pending[k])
            data_loss = float(sum(loss_sum for _, _, loss_sum in pending[k]) / samples)
            stats["reg/data_loss"] = data_loss
            stats["reg/objective"] = data_loss + stats["reg/penalty"]
            course.record(
                epoch,
                {**self._epoch_logged[k], **stats, **self._epoch_values(k, "train", pending[k])},
            )
            course.steps.append(self.trainer.global_step)
            course.check_divergence(epoch)
            if course.active and course.improved(epoch):
                course.best_state = self.net.member_state_dict(k)
                course.best_optimizer = self.member_optimizer.member_state_dict(k)
                if self.schedules_of_members is not None:  # its scheduler, as its run keeps it
                    course.best_optimizer, course.best_scheduler = self.schedules_of_members.member(
                        k, course.best_optimizer
                    )
                course.best_step = self.trainer.global_step
            course.check_stopping(epoch)
            if not course.active:
                self._freeze(k)
        self.trainer.should_stop = self.trainer.should_stop or not any(
            course.active for course in self.courses
        )

    def _freeze(self, k: int) -> None:
        """Member k changes no more: no optimizer step, its BatchNorm statistics kept."""
        assert self.member_optimizer is not None
        self.member_optimizer.active[k] = False
        self.courses[k].final_state = self.net.member_state_dict(k)
        state = self.courses[k].final_state
        self.frozen[k] = {name: state[name].clone() for name in self.buffer_names}
        if not self.buffer_names:
            self.frozen.pop(k)

    def final_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights at the end of its training (when it stopped, or the last epoch)."""
        kept = self.courses[k].final_state
        return kept if kept is not None else self.net.member_state_dict(k)

    def _epoch_values(self, k: int, stage: str, pending: Pending) -> dict[str, torch.Tensor]:
        """Member k's epoch loss and metrics, computed as its RegLabModule computes them."""
        member = self.members[k]
        loss, metrics = member.losses[f"{stage}_"], member.metrics[f"{stage}_"]
        loss.reset()
        metrics.reset()
        outputs = torch.cat([o for o, _, _ in pending])
        targets = torch.cat([t for _, t, _ in pending])
        loss_sums = torch.cat([s.reshape(1) for _, _, s in pending])
        metrics.update(*TASKS.get(member.task).scored(outputs, targets))
        loss.update(loss_sums.sum() / len(outputs), weight=len(outputs))
        return {f"{stage}/{LOSS}": loss.compute(), **metrics.compute()}

    @override
    def configure_optimizers(self) -> Any:
        """MemberOptimizer with each member's lr and weight decay; its penalty's proximal step
        after each optimizer step."""
        named = self.net.member_parameters()
        configs = [dict(member.hparams.optimizer or {}) for member in self.members]
        lrs = [config.get("lr") for config in configs]
        decays = [config.get("weight_decay", 0.0) or 0.0 for config in configs]
        optimizer = MemberOptimizer(
            named,
            configs[0] or None,
            lr=None if None in lrs else lrs,
            weight_decay=decays,
        )
        self.member_optimizer = optimizer
        self.penalty = MemberPenalty(named, self.penalties)
        penalty = self.penalty
        optimizer.register_step_post_hook(lambda opt, args, kwargs: penalty.proximal_step(opt))
        scheduler = self.members[0].hparams.scheduler
        if not scheduler:
            return optimizer
        schedules = MemberSchedules(optimizer, dict(scheduler))
        self.schedules_of_members = MemberScheduleStates(schedules)
        config = {"scheduler": schedules, "interval": scheduler.get("interval", "epoch")}
        if isinstance(schedules.schedulers[0], ReduceLROnPlateau):
            # Stepped when Lightning steps a plateau schedule (after validation), on a value
            # Lightning finds logged (PLATEAU_KEY); each member's own metric is passed instead.
            config |= {"reduce_on_plateau": True, "monitor": PLATEAU_KEY}
        return {"optimizer": optimizer, "lr_scheduler": config}

    @override
    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Each active member's scheduler; a plateau schedule on the member's own monitored value."""
        if not isinstance(scheduler.schedulers[0], ReduceLROnPlateau):
            scheduler.step()
            return
        epoch = self.current_epoch + FIRST_EPOCH
        scheduler.step([_latest(course, epoch) for course in self.courses])


def _latest(course: MemberCourse, epoch: int) -> float:
    """The member's monitored value of `epoch` (NaN when it has none: it no longer trains)."""
    row = course.epochs[-1] if course.epochs and course.epochs[-1]["epoch"] == epoch else {}
    return row.get(course.monitor, math.nan)


class MemberScheduleStates:
    """Member k's scheduler state and its optimizer groups' `initial_lr`, as its run's
    checkpoint holds them (MemberOptimizer.member_state_dict leaves `initial_lr` out)."""

    def __init__(self, schedules: MemberSchedules) -> None:
        self.schedules = schedules
        self.plateau = isinstance(schedules.schedulers[0], ReduceLROnPlateau)

    def member(self, k: int, optimizer_state: dict[str, Any]) -> tuple[dict, dict]:
        """(member k's optimizer state with `initial_lr`, its scheduler's state_dict)."""
        initial = self.schedules.stand_ins[k].param_groups[0].get("initial_lr")
        if initial is not None:
            for group in optimizer_state["param_groups"]:
                group["initial_lr"] = initial
        return optimizer_state, self.schedules.schedulers[k].state_dict()
