"""Augmentation for 32x32 photos: the CIFAR crop and flip, Cutout, RandAugment, TrivialAugment.

Against outside references: Cutout's zeroed pixels are the square DeVries & Taylor's code
(util/cutout.py) zeroes, written again here in numpy; the crop-and-flip output is a 32x32 window
of the image padded with black (as torchvision pads a picture), mirrored about half the time; the
kornia policies see intensities in [0, 1] and hand back values inside the data's range. Each
option trains a CNN on fabricated CIFAR-10 files; bad knobs and photo-only ops on other data are
one error naming the key.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from conftest import CONF_DIR, compose_config
from real_data_support import write_cifar10
from reglab.augment import Cutout, InPixels, PerGroup, PixelMap
from reglab.callbacks import BatchAugmentation
from reglab.errors import ConfigError
from reglab.run import run_one

MEAN = np.array([125.3, 123.0, 113.9], dtype=np.float32)  # CIFAR-10's, as the Cutout code has
STD = np.array([63.0, 62.1, 66.7], dtype=np.float32)
PIXELS = PixelMap.of_bytes(MEAN, STD)


class _Module:
    """What `BatchAugmentation.check` reads of a LightningModule."""

    def __init__(self) -> None:
        self.hparams = {"input_shape": [3, 32, 32], "num_outputs": 10}


def photos(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 photos and the same standardized per channel, as the CIFAR loader does."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8)
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    return raw, (raw.float() - mean) / std


def option(name: str) -> BatchAugmentation:
    """The ops of conf/augmentation/<name>.yaml, built for CIFAR-size photos with their pixel map."""
    # as Hydra's instantiate hands them over: OmegaConf lists and mappings
    ops = OmegaConf.load(CONF_DIR / "augmentation" / f"{name}.yaml").ops
    augmentation = BatchAugmentation(ops=ops, log_images=False)
    augmentation.check(_Module())
    augmentation.bind_pixels(PIXELS)
    return augmentation


# --- Cutout against the paper's code -----------------------------------------------------------


def paper_mask(y: int, x: int, length: int, h: int = 32, w: int = 32) -> np.ndarray:
    """util/cutout.py: mask[clip(y - L//2):clip(y + L//2), clip(x - L//2):clip(x + L//2)] = 0."""
    mask = np.ones((h, w), np.float32)
    y1, y2 = np.clip(y - length // 2, 0, h), np.clip(y + length // 2, 0, h)
    x1, x2 = np.clip(x - length // 2, 0, w), np.clip(x + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return mask


@pytest.mark.parametrize("size", [16, 8, 5, 40])
def test_cutout_zeroes_the_papers_square_at_a_uniform_centre(size):
    masks = {(y, x): paper_mask(y, x, size) for y in range(32) for x in range(32)}
    by_bytes = {m.tobytes(): centre for centre, m in masks.items()}
    torch.manual_seed(0)
    x = torch.rand(600, 3, 32, 32) + 1  # no zero of its own
    out = Cutout(size)(x)
    centres = []
    for image, kept in zip(x, out, strict=True):
        zeroed = (kept == 0).numpy()
        assert (zeroed == zeroed[0]).all()  # every channel alike
        keep = (~zeroed[0]).astype(np.float32)
        # some centre of the paper's code gives exactly this mask (centres near the border too)
        centres.append(by_bytes[keep.tobytes()])
        torch.testing.assert_close(kept, image * torch.from_numpy(keep), rtol=0, atol=0)
    cut = np.array([32 * 32 - masks[c].sum() for c in centres])
    side = 2 * (size // 2)
    assert cut.max() == min(side, 32) ** 2 if size < 32 else cut.max() <= 32 * 32
    assert (cut < min(side, 32) ** 2).any()  # squares clipped at the border
    ys, xs = np.array(centres).T
    assert abs(ys.mean() - 15.5) < 1.5 and abs(xs.mean() - 15.5) < 1.5  # uniform over 0..31
    assert ys.min() <= 1 and ys.max() >= 30


def test_cutout_counts_at_the_edges_follow_the_formula():
    # centre (0, 0): an 8x8 corner of the 16x16 square; (0, 16): 8x16; (16, 16): all of it
    for (y, x), count in {(0, 0): 64, (0, 16): 128, (16, 16): 256, (31, 31): 81}.items():
        assert 32 * 32 - paper_mask(y, x, 16).sum() == count


def test_cutout_holes_add_squares_and_seeded_draws_repeat():
    x = torch.ones(50, 1, 32, 32)
    torch.manual_seed(3)
    one = Cutout(8, holes=1)(x)
    torch.manual_seed(3)
    again = Cutout(8, holes=1)(x)
    torch.testing.assert_close(one, again)
    three = Cutout(8, holes=3)(x)
    assert (three == 0).sum(dim=(1, 2, 3)).float().mean() > (one == 0).sum(
        dim=(1, 2, 3)
    ).float().mean()


# --- the CIFAR standard crop and flip ----------------------------------------------------------


def test_cifar_crop_and_flip_give_windows_of_the_black_padded_image():
    raw, x = photos(400)
    torch.manual_seed(0)
    out, _ = option("cifar")((x, torch.zeros(400, dtype=torch.long)))
    assert out.shape == x.shape and out.dtype == x.dtype
    # torchvision: RandomCrop(32, padding=4) pads the picture with black (byte 0), then Normalize
    black = torch.tensor(-MEAN / STD).view(1, 3, 1, 1).expand(400, 3, 40, 40).clone()
    black[:, :, 4:36, 4:36] = x
    # each output against the 81 windows of its padded image, plain or mirrored (red channel)
    windows = black[:, 0].unfold(1, 32, 1).unfold(2, 32, 1).reshape(400, 81, 32, 32)
    plain = (windows - out[:, None, 0]).abs().amax(dim=(2, 3))
    mirror = (windows - out[:, None, 0].flip(-1)).abs().amax(dim=(2, 3))
    flipped = mirror.min(dim=1).values < plain.min(dim=1).values
    where = torch.where(flipped[:, None], mirror, plain).argmin(dim=1)
    # ... and the window found, in all channels, is the output
    top, left = where // 9, where % 9
    for i in range(400):
        window = black[i, :, top[i] : top[i] + 32, left[i] : left[i] + 32]
        expected = window.flip(-1) if flipped[i] else window
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0)
    offsets = set(where.tolist())
    assert 0.42 < flipped.float().mean() < 0.58  # p = 0.5; 400 draws: 4 standard deviations
    assert len(offsets) > 70  # the 81 offsets of the 9x9 shifts, uniformly: nearly all seen


def test_crop_fill_zero_pads_with_the_mean_colour():
    _, x = photos(20)
    augmentation = BatchAugmentation(ops=[{"crop": {"padding": 4}}], log_images=False)
    augmentation.check(_Module())
    torch.manual_seed(0)
    out, _ = augmentation((x, torch.zeros(20, dtype=torch.long)))
    padded = F.pad(x, (4, 4, 4, 4))
    windows = padded.unfold(2, 32, 1).unfold(3, 32, 1).permute(0, 2, 3, 1, 4, 5)
    distance = (windows.reshape(20, 81, 3, 32, 32) - out[:, None]).abs().amax(dim=(2, 3, 4))
    assert (distance.amin(dim=1) == 0).all()


def test_the_pixel_map_round_trips_standardized_bytes():
    raw, x = photos(8)
    seen = []

    class Probe(nn.Module):
        def forward(self, pixels):
            seen.append(pixels.clone())
            return pixels

    wrapper = InPixels(Probe())
    wrapper.pixels = PIXELS
    torch.testing.assert_close(wrapper(x), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[0], raw.float() / 255, atol=1e-6, rtol=0)


# --- RandAugment and TrivialAugment ------------------------------------------------------------


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment"])
def test_policies_stay_in_the_data_range_repeat_under_a_seed_and_change_images(name):
    raw, x = photos(64, seed=1)
    y = torch.zeros(64, dtype=torch.long)
    augmentation = option(name)
    torch.manual_seed(5)
    out, _ = augmentation((x, y))
    torch.manual_seed(5)
    again, _ = augmentation((x, y))
    torch.manual_seed(6)
    other, _ = augmentation((x, y))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    assert not torch.equal(out, other)
    low = torch.tensor(-MEAN / STD).view(1, 3, 1, 1)
    high = torch.tensor((255 - MEAN) / STD).view(1, 3, 1, 1)
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-3
    assert changed.float().mean() > 0.9


def test_groups_give_each_slice_of_the_batch_its_own_call():
    calls = []

    class Probe(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x + len(calls)  # which call handled each image

    x = torch.zeros(64, 1, 4, 4)
    out = PerGroup(Probe(), 16)(x)
    assert calls == [4] * 16
    torch.testing.assert_close(out[:, 0, 0, 0], torch.arange(1, 17.0).repeat_interleave(4))
    assert option("trivialaugment").pipeline[2].op.groups == 16  # as trivialaugment.yaml sets


# --- knobs and refusals ------------------------------------------------------------------------

BAD = [
    ({"cutout": {"size": 0}}, "ops[0].cutout.size"),
    ({"cutout": {"holes": 1.5}}, "ops[0].cutout.holes"),
    ({"crop": {"padding": 4, "fill": "grey"}}, "ops[0].crop.fill"),
    ({"randaugment": {"n": 16}}, "ops[0].randaugment.n"),
    ({"randaugment": {"m": 30}}, "ops[0].randaugment.m"),
    ({"randaugment": {"groups": 0}}, "ops[0].randaugment.groups"),
    ({"trivialaugment": {"magnitude": 3}}, "ops[0].trivialaugment"),
]


@pytest.mark.parametrize(("spec", "key"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_knob_is_one_error_naming_it(spec, key):
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(ops=[spec]).check(_Module())
    assert error.value.key.startswith(key)
    assert "\n" not in str(error.value)


@pytest.fixture
def cifar10(tmp_path):
    return write_cifar10(tmp_path / "data")


class _BatchSpy(L.Callback):
    """The training inputs as the model receives them (after augmentation)."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.inputs.append(batch[0].detach().cpu())


SMALL_CNN = ["model=cnn", "model.channels=4", "trainer.max_epochs=1", "logger=none"]


@pytest.mark.parametrize("name", ["cutout", "randaugment"])
def test_a_cifar10_run_trains_with_the_option(cifar10, tmp_path, name):
    overrides = ["data=cifar10", f"data.root={cifar10}", "data.val_fraction=0.25"]
    cfg = compose_config([*overrides, *SMALL_CNN, f"augmentation={name}"], tmp_path / "run")
    spy = _BatchSpy()
    run_one(cfg, extra_callbacks=[spy])
    assert (tmp_path / "run" / "metrics.json").exists()
    inputs = torch.cat(spy.inputs)
    assert inputs.dtype == torch.float32 and inputs.shape[1:] == (3, 32, 32)
    if name == "cutout":  # each image has its square of exact zeros (at least 8x8, in a corner)
        zeros = (inputs == 0).all(dim=1).sum(dim=(1, 2))
        assert (zeros >= 64).all()


def test_pixel_ops_on_data_without_a_pixel_range_are_one_error(tmp_path):
    cfg = compose_config(
        ["data=digits", "model=cnn", "model.channels=4", "augmentation=randaugment", "logger=none"],
        tmp_path / "run",
    )
    with pytest.raises(ConfigError) as error:
        run_one(cfg)
    assert error.value.key == "augmentation.ops[0].crop"
    assert "data=cifar10" in error.value.message and "fill: zero" in error.value.message
    assert "\n" not in str(error.value)


def test_random_erasing_draws_rectangles_of_the_configured_share_and_ratio():
    augmentation = option("random_erasing")
    augmentation.pipeline = augmentation.pipeline[2:]  # the erasing alone
    x = torch.ones(2000, 3, 32, 32)
    torch.manual_seed(0)
    out, _ = augmentation((x, torch.zeros(2000, dtype=torch.long)))
    erased = out[:, 0] == 0
    hit = erased.any(dim=(1, 2))
    assert 0.45 < hit.float().mean() < 0.55  # p = 0.5
    rows, columns = erased[hit].any(dim=2).sum(1), erased[hit].any(dim=1).sum(1)
    area = erased[hit].sum(dim=(1, 2))
    assert torch.equal(area, rows * columns)  # one rectangle each
    share = area / (32 * 32)
    assert share.min() >= 0.01 and share.max() <= 0.42  # scale [0.02, 0.4], pixel rounding
    assert share.max() > 0.3
    ratio = rows / columns
    assert ratio.min() >= 0.25 and ratio.max() <= 4.0 and ratio.min() < 0.6 and ratio.max() > 2


@pytest.mark.parametrize(
    "erasing",
    [{"scale": [0.5, 0.1]}, {"scale": 0.3}, {"ratio": [0, 2]}, {"scale": [0.1, 1.5]}],
)
def test_erasing_intervals_are_checked(erasing):
    key = "ops[0].erasing." + next(iter(erasing))
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(ops=[{"erasing": erasing}]).check(_Module())
    assert error.value.key == key and "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["cutout", "randaugment", "trivialaugment"])
def test_the_photo_ops_refuse_sequences_and_features_naming_the_op(name):
    for shape in ([8, 8], [64]):
        module = _Module()
        module.hparams["input_shape"] = shape
        with pytest.raises(ConfigError) as error:
            BatchAugmentation(ops=[{name: {}}]).check(module)
        assert error.value.key == "ops[0]" and name in error.value.message
