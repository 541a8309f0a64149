"""Mixing ops: each sample mixed with another sample of its batch, targets made soft alike.

Follows timm's `timm.data.mixup.Mixup` (mixup_alpha, cutmix_alpha, prob, switch_prob, mode):

- lambda ~ Beta(alpha, alpha) as in the mixup and CutMix papers (kornia draws it uniformly);
- `prob`: the chance that mixing applies, drawn once per batch, pair or sample (as `mode` says);
- `switch_prob`: with both mixup and cutmix configured, the chance that cutmix is used instead of
  mixup, drawn at the same level;
- `mode`: `batch` (one lambda and one box for the whole batch), `pair` (one per pair of samples
  that are mixed with each other, symmetrically) or `elem` (one per sample);
- cutmix targets are mixed by the area actually pasted (timm's `correct_lam=True`).

Where reglab differs from timm:

- Partners: timm pairs sample i with sample N-1-i (the batch flipped), which mixes the middle
  sample of an odd batch with itself (and timm refuses odd batches). Here a sample is never mixed
  with itself: in `batch` and `elem` mode each sample's partner is the next one in a random cyclic
  order (so a uniformly random other sample); in `pair` mode a random order is cut into pairs, and
  the one sample left over in an odd batch is mixed, one way, with a random other sample, with its
  own draw. A batch of one sample is left as it is.
- The cutmix box is round(H * sqrt(1 - lambda)) x round(W * sqrt(1 - lambda)) pixels around a
  uniform centre, clipped at the borders (timm: int() and an even-sided box); no `cutmix_minmax`.
- Label smoothing is not part of mixing: it is the loss's `label_smoothing`, which gives the same
  targets as timm's smoothed-then-mixed ones ((1 - eps) * mixed + eps / classes).

Targets are class probabilities (the caller turns labels into one-hot rows first); the result's
rows still sum to one. Every random number is drawn on the CPU from torch's seeded global generator
(the state `reglab.callbacks.RandomState` checkpoints, so a resumed run draws what the uninterrupted
one would have drawn; the same seed mixes alike on any device). `MIXES` holds the ops as `Op`
entries (the same table entry as per-sample ops) whose module is a `Mixing`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from reglab import checks
from reglab.augment.ops import Op, Shape
from reglab.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
MODES = ("batch", "pair", "elem")

# Beta(alpha, alpha) needs alpha > 0; below this lambda is 0 or 1 to float precision: no mixing.
MIN_ALPHA = 1e-3


@dataclass(frozen=True)
class MixDraw:
    """One batch's drawn mixing parameters, one row per sample i (CPU tensors).

    `partner[i]`: the sample i is mixed with (never i itself in a batch of two or more);
    `mixed[i]`: whether i was drawn for mixing (`prob`); `cut[i]`: by cutmix (else mixup);
    `lam[i]`: the weight of i's own target: Beta-drawn for mixup, the share of i left uncovered
    by the box for cutmix, 1 where not mixed; `box[i]`: (top, bottom, left, right) of the box
    pasted from the partner into i (rows and columns top:bottom, left:right; zeros if not cut).
    """

    partner: torch.Tensor
    mixed: torch.Tensor
    cut: torch.Tensor
    lam: torch.Tensor
    box: torch.Tensor


def mix(x: torch.Tensor, y: torch.Tensor, draw: MixDraw) -> Batch:
    """The batch mixed as `draw` says, on the batch's device.

    Mixup: x_i' = lam_i x_i + (1 - lam_i) x_partner(i); cutmix: x_i with the box pasted from
    x_partner(i). Targets: y_i' = lam_i y_i + (1 - lam_i) y_partner(i). Every partner is read from
    the batch as it was (a sample mixed into another is not mixed again).
    """
    partner = draw.partner.to(x.device)
    other = x[partner]

    def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device).view(-1, *[1] * (like.ndim - 1))

    lam = per_sample(draw.lam.to(x.dtype), x)
    out = torch.where(per_sample(draw.mixed, x), lam * x + (1 - lam) * other, x)
    if bool(draw.cut.any()):
        inside = box_mask(draw.box, tuple(x.shape[-2:])).to(x.device)
        inside = inside.view(len(x), *[1] * (x.ndim - 3), *x.shape[-2:])  # over the channels
        out = torch.where(per_sample(draw.cut, x), torch.where(inside, other, x), out)
    weight = per_sample(draw.lam.to(y.dtype), y)
    return out, weight * y + (1 - weight) * y[partner.to(y.device)]


def box_mask(box: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) booleans: True inside each sample's box (top, bottom, left, right)."""
    rows, columns = torch.arange(size[0]), torch.arange(size[1])
    top, bottom, left, right = box.unbind(1)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_columns = (columns >= left[:, None]) & (columns < right[:, None])
    return in_rows[:, :, None] & in_columns[:, None, :]


def random_boxes(lam: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One box per lambda covering about 1 - lam of an H x W image, and the share it leaves.

    The box is round(H * sqrt(1 - lam)) x round(W * sqrt(1 - lam)) around a uniform centre, clipped
    at the borders; the share left (1 - clipped area / (H * W)) is what the targets are mixed by.
    """
    height, width = size
    side = (1 - lam.double()).clamp_min(0).sqrt()
    box_h, box_w = (height * side).round().long(), (width * side).round().long()
    cy, cx = torch.randint(height, lam.shape), torch.randint(width, lam.shape)
    top, bottom = (cy - box_h // 2).clamp_min(0), (cy + box_h - box_h // 2).clamp_max(height)
    left, right = (cx - box_w // 2).clamp_min(0), (cx + box_w - box_w // 2).clamp_max(width)
    kept = 1 - ((bottom - top) * (right - left)).double() / (height * width)
    return torch.stack([top, bottom, left, right], dim=1), kept.to(lam.dtype)


def pairing(size: int, mode: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Partners without self-pairs for a batch of `size` >= 2, and which draw each sample uses.

    Returns (partner, unit, units): sample i is mixed with partner[i] using draw number unit[i]
    of `units` (batch: one for all; pair: one per pair, and one for the sample left over in an
    odd batch; elem: one per sample).
    """
    order = torch.randperm(size)
    partner = torch.empty(size, dtype=torch.long)
    if mode == "pair":
        half = size // 2
        first, second = order[0 : 2 * half : 2], order[1 : 2 * half : 2]
        partner[first], partner[second] = second, first
        unit = torch.empty(size, dtype=torch.long)
        unit[first] = unit[second] = torch.arange(half)
        if size % 2:  # the one left over mixes, one way, with a random other sample
            partner[order[-1]] = order[int(torch.randint(size - 1, ()))]
            unit[order[-1]] = half
        return partner, unit, half + size % 2
    # Each sample's partner is the next one in a random cyclic order: never itself.
    partner[order] = order.roll(-1)
    if mode == "batch":
        return partner, torch.zeros(size, dtype=torch.long), 1
    return partner, torch.arange(size), size


class Mixing(nn.Module):
    """Mixup and/or CutMix with timm's options (see the module docstring); `forward` mixes a batch.

    `mixup_alpha` / `cutmix_alpha`: Beta(alpha, alpha) of each kind, None where the kind is off
    (at least one is set); `switch_prob`: the chance of cutmix when both are set.
    """

    def __init__(
        self,
        mixup_alpha: float | None = None,
        cutmix_alpha: float | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
    ) -> None:
        super().__init__()
        if mixup_alpha is None and cutmix_alpha is None:
            raise ValueError("Mixing needs mixup_alpha, cutmix_alpha or both")
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.mode = mode
        # Built once: a distribution's construction costs more than its draws.
        self.betas = {
            kind: torch.distributions.Beta(alpha, alpha)
            for kind, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha))
            if alpha
        }

    def sample_lambda(self, kind: str | None = None) -> float:
        """One lambda ~ Beta(alpha, alpha) with `kind`'s alpha (mixup or cutmix; default: mixup
        if configured, else cutmix)."""
        kind = kind or next(iter(self.betas))
        if kind not in self.betas:
            raise ValueError(f"this Mixing has no {kind}")
        return float(self.betas[kind].sample())

    def draw(self, x: torch.Tensor) -> MixDraw:
        """The mixing parameters of the batch `x` (only its size and image size are read)."""
        size = len(x)
        if size < 2:  # no other sample to mix with
            return MixDraw(
                torch.arange(size),
                torch.zeros(size, dtype=torch.bool),
                torch.zeros(size, dtype=torch.bool),
                torch.ones(size),
                torch.zeros(size, 4, dtype=torch.long),
            )
        partner, unit, units = pairing(size, self.mode)
        mixed = torch.rand(units) < self.prob
        if len(self.betas) == 2:
            cut = torch.rand(units) < self.switch_prob
        else:
            cut = torch.full((units,), "cutmix" in self.betas)
        lam = torch.ones(units)
        box = torch.zeros(units, 4, dtype=torch.long)
        if "mixup" in self.betas:
            lam = torch.where(cut, lam, self.betas["mixup"].sample((units,)))
        if "cutmix" in self.betas:
            cut_box, kept = random_boxes(self.betas["cutmix"].sample((units,)), tuple(x.shape[-2:]))
            lam = torch.where(cut, kept, lam)
            box = torch.where(cut[:, None], cut_box, box)
        cut &= mixed
        lam = torch.where(mixed, lam, torch.ones(units))
        box = torch.where(cut[:, None], box, torch.zeros_like(box))
        return MixDraw(partner, mixed[unit], cut[unit], lam[unit], box[unit])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """The mixed inputs and soft targets (`y`: class probabilities, one row per sample)."""
        return mix(x, y, self.draw(x))


def mixup(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> Batch:
    """lam * (x, y) + (1 - lam) * (x[perm], y[perm]); y as probabilities."""
    size = len(x)
    draw = MixDraw(
        perm.cpu(),
        torch.ones(size, dtype=torch.bool),
        torch.zeros(size, dtype=torch.bool),
        torch.full((size,), float(lam)),
        torch.zeros(size, 4, dtype=torch.long),
    )
    return mix(x, y, draw)


def cutmix(x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> Batch:
    """Paste one box of x[perm] covering about 1 - lam of the image; y mixed by the exact area."""
    size = len(x)
    box, kept = random_boxes(torch.tensor([float(lam)]), tuple(x.shape[-2:]))
    draw = MixDraw(
        perm.cpu(),
        torch.ones(size, dtype=torch.bool),
        torch.ones(size, dtype=torch.bool),
        kept.expand(size),
        box.expand(size, 4),
    )
    return mix(x, y, draw)


MIXES: Registry[Op] = Registry("mixing op")


def _alpha(key: str, alpha: float) -> float:
    return checks.number(key, alpha, MIN_ALPHA)


def _options(prob: float, mode: str) -> dict:
    return {"prob": checks.probability("prob", prob), "mode": checks.choice("mode", mode, MODES)}


def build_mixup(
    input_shape: Shape, alpha: float = 0.2, prob: float = 1.0, mode: str = "batch"
) -> Mixing:
    """Mixup (Zhang et al.): convex combinations of two samples and of their targets."""
    return Mixing(mixup_alpha=_alpha("alpha", alpha), **_options(prob, mode))


def build_cutmix(
    input_shape: Shape, alpha: float = 1.0, prob: float = 1.0, mode: str = "batch"
) -> Mixing:
    """CutMix (Yun et al.): a box of another image pasted in, targets mixed by its area."""
    return Mixing(cutmix_alpha=_alpha("alpha", alpha), **_options(prob, mode))


def build_mixup_cutmix(
    input_shape: Shape,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    prob: float = 1.0,
    mode: str = "batch",
) -> Mixing:
    """Mixup or CutMix, cutmix with probability `switch_prob` (timm's and DeiT's defaults)."""
    return Mixing(
        mixup_alpha=_alpha("mixup_alpha", mixup_alpha),
        cutmix_alpha=_alpha("cutmix_alpha", cutmix_alpha),
        switch_prob=checks.probability("switch_prob", switch_prob),
        **_options(prob, mode),
    )


MIXES.register("mixup", Op(build_mixup))
MIXES.register("cutmix", Op(build_cutmix, needs_images=True))
MIXES.register("mixup_cutmix", Op(build_mixup_cutmix, needs_images=True))
