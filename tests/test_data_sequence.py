"""Embedded sequence data (issue 11): digits and IDX in the image / flat / sequence / tokens
layouts, the denoising target, the adding problem, and their one-line configuration errors."""

from __future__ import annotations

import inspect
import struct
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from conftest import compose_config, quiet_trainer
from reglab.data import (
    AddingDataModule,
    DigitsDataModule,
    IdxDataModule,
    MoonsDataModule,
    RegressionDataModule,
)
from reglab.data.loader import TensorBatchLoader
from reglab.errors import ConfigError
from reglab.run import run_one

DIGITS = load_digits()


def _sorted_rows(a: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1)
    return a[np.lexsort(a.T[::-1])]


# --- digits layouts -----------------------------------------------------------------------------

LAYOUT_CASES = [
    ("image", (1, 8, 8), torch.float32, None),
    ("flat", (64,), torch.float32, None),
    ("sequence", (8, 8), torch.float32, None),
    ("tokens", (64,), torch.int64, 17),
]


@pytest.mark.parametrize(("layout", "shape", "dtype", "vocab"), LAYOUT_CASES)
def test_digits_layouts_give_shape_dtype_and_vocabulary(layout, shape, dtype, vocab):
    dm = DigitsDataModule(layout=layout)
    assert dm.input_shape == shape
    assert dm.input_dtype == dtype
    assert dm.vocab_size == vocab
    assert dm.task == "classification" and dm.num_classes == 10 == dm.num_outputs
    assert dm.target_shape == ()
    assert dm.noisy_input_mse is None
    for split in dm.splits.values():
        assert split.x.shape[1:] == shape and split.x.dtype == dtype
        assert split.y.dtype == torch.long


def test_sequence_steps_are_the_rows_of_the_image():
    for standardize in (False, True):
        image = DigitsDataModule(layout="image", standardize=standardize).splits
        sequence = DigitsDataModule(layout="sequence", standardize=standardize).splits
        for name in ("train", "val", "test"):
            x_img, x_seq = image[name].x, sequence[name].x
            assert torch.equal(sequence[name].y, image[name].y)
            for row in range(8):  # step r of sample i is row r of image i
                assert torch.equal(x_seq[:, row], x_img[:, 0, row])


def test_tokens_are_the_raw_intensities_never_standardized():
    tokens = DigitsDataModule(layout="tokens").splits  # standardize: true is the default
    raw = DigitsDataModule(layout="flat", standardize=False).splits
    seen = set()
    for name in ("train", "val", "test"):
        x = tokens[name].x
        assert x.dtype == torch.int64
        assert torch.equal(x.double(), raw[name].x.double())
        assert int(x.min()) >= 0 and int(x.max()) < 17
        seen |= set(x.unique().tolist())
    assert seen == set(range(17))
    # The same pixels as load_digits holds, every image in exactly one split.
    rows = np.concatenate([tokens[name].x.numpy() for name in ("train", "val", "test")])
    np.testing.assert_array_equal(_sorted_rows(rows), _sorted_rows(DIGITS.data.astype(np.int64)))


def test_label_noise_and_train_fraction_keep_tokens_integer():
    clean = DigitsDataModule(layout="tokens").splits["train"]
    dm = DigitsDataModule(layout="tokens", train_fraction=0.5, label_noise=0.4)
    train = dm.splits["train"]
    assert train.x.dtype == torch.int64 and len(train.x) == round(0.5 * len(clean.x))
    # Every kept sample is an unchanged training sample; some labels were redrawn.
    index = {
        row.tobytes(): label for row, label in zip(clean.x.numpy(), clean.y.numpy(), strict=True)
    }
    kept = [row.tobytes() in index for row in train.x.numpy()]
    assert all(kept)
    changed = sum(
        index[row.tobytes()] != label
        for row, label in zip(train.x.numpy(), train.y.numpy(), strict=True)
    )
    assert changed > 0.2 * len(train.x)
    for name in ("val", "test"):
        assert dm.splits[name].x.dtype == torch.int64


def test_loaders_carry_int64_tokens_in_every_batch():
    dm = DigitsDataModule(layout="tokens", batch_size=100, shuffle=True)
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for bx, by in loader:
            assert bx.dtype == torch.int64 and by.dtype == torch.long
    x = dm.splits["train"].x
    sharded = TensorBatchLoader(x, torch.arange(len(x)), 16, shuffle=True, rank=1, world_size=2)
    assert all(bx.dtype == torch.int64 for bx, _ in sharded)


class _TokenNet(L.LightningModule):
    """Embedding -> mean -> Linear; records the dtype of every batch that reached the step."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding, self.head = torch.nn.Embedding(17, 4), torch.nn.Linear(4, 10)
        self.dtypes: set[torch.dtype] = set()

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.dtypes.add(x.dtype)
        return F.cross_entropy(self.head(self.embedding(x).mean(1)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("precision", ["32-true", "bf16-true"])
def test_lightning_moves_token_batches_to_the_device_as_integers(precision):
    dm = DigitsDataModule(layout="tokens", batch_size=64)
    net = _TokenNet()
    quiet_trainer(accelerator="cpu", max_steps=3, limit_val_batches=0, precision=precision).fit(
        net, datamodule=dm
    )
    assert net.dtypes == {torch.int64}


def test_float_data_declares_no_vocabulary():
    for dm in (MoonsDataModule(n_samples=100), RegressionDataModule(n_samples=100)):
        assert dm.vocab_size is None and dm.input_dtype == torch.float32
    assert MoonsDataModule(n_samples=100).target_shape == ()
    assert RegressionDataModule(n_samples=100).target_shape == (1,)


# --- denoising ----------------------------------------------------------------------------------


def _pixel_moments(images: torch.Tensor) -> tuple[float, float]:
    a = images.double()
    return a.mean().item(), a.std(unbiased=False).item()


def test_denoise_targets_are_the_clean_images_inputs_carry_the_noise():
    raw = DigitsDataModule(target="denoise", noise_std=3.0, standardize=False)
    std = DigitsDataModule(target="denoise", noise_std=3.0)
    assert std.task == "regression" and std.target_shape == (1, 8, 8) and std.num_outputs == 64
    assert std.input_shape == (1, 8, 8) and std.input_dtype == torch.float32
    # The raw targets are the digits images, each in exactly one split.
    clean = np.concatenate([raw.splits[k].y.numpy() for k in ("train", "val", "test")])
    np.testing.assert_array_equal(_sorted_rows(clean), _sorted_rows(DIGITS.data))
    # The noise has the requested std in raw units (0-16), mean 0, and is independent per pixel.
    noise = torch.cat([(raw.splits[k].x - raw.splits[k].y).flatten() for k in raw.splits]).double()
    assert noise.std().item() == pytest.approx(3.0, rel=0.02)
    assert abs(noise.mean().item()) < 0.05
    # Inputs and targets are standardized with one mean/std: those of the clean training images.
    mean, scale = _pixel_moments(raw.splits["train"].y)
    for name in ("train", "val", "test"):
        expected_y = (raw.splits[name].y.double() - mean) / scale
        expected_x = (raw.splits[name].x.double() - mean) / scale
        torch.testing.assert_close(std.splits[name].y.double(), expected_y, atol=1e-5, rtol=0)
        torch.testing.assert_close(std.splits[name].x.double(), expected_x, atol=1e-5, rtol=0)
    y_train = std.splits["train"].y.double()
    assert abs(y_train.mean().item()) < 1e-6
    assert y_train.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)


def test_noisy_input_mse_is_the_mse_of_returning_the_input():
    raw = DigitsDataModule(target="denoise", standardize=False)
    dm = DigitsDataModule(target="denoise")
    baseline = dm.noisy_input_mse
    assert set(baseline) == {"val", "test"}
    _, scale = _pixel_moments(raw.splits["train"].y)
    for name in ("val", "test"):
        x, y = dm.splits[name].x.numpy().astype(np.float64), dm.splits[name].y.numpy()
        assert baseline[name] == pytest.approx(np.mean((x - y) ** 2), rel=1e-6)
        noise = (raw.splits[name].x - raw.splits[name].y).double()
        assert baseline[name] == pytest.approx(((noise / scale) ** 2).mean().item(), rel=1e-4)
        # About (noise_std / pixel std)^2: the default 4.0 against a spread of about 6.
        assert baseline[name] == pytest.approx((4.0 / scale) ** 2, rel=0.05)
    assert raw.noisy_input_mse["test"] == pytest.approx(16.0, rel=0.05)  # raw units: 4.0^2


def test_denoise_layouts_share_the_samples_and_the_noise():
    image = DigitsDataModule(target="denoise").splits
    for layout, shape in (("flat", (64,)), ("sequence", (8, 8))):
        other = DigitsDataModule(target="denoise", layout=layout).splits
        for name in ("train", "test"):
            assert other[name].x.shape[1:] == shape == other[name].y.shape[1:]
            n = len(image[name].x)
            assert torch.equal(other[name].x.reshape(n, -1), image[name].x.reshape(n, -1))
            assert torch.equal(other[name].y.reshape(n, -1), image[name].y.reshape(n, -1))


def test_denoise_noise_is_seeded_by_data_seed():
    a = DigitsDataModule(target="denoise").splits
    b = DigitsDataModule(target="denoise", shuffle_seed=7).splits
    c = DigitsDataModule(target="denoise", data_seed=1).splits
    for name in ("train", "test"):
        assert torch.equal(a[name].x, b[name].x) and torch.equal(a[name].y, b[name].y)
        assert torch.equal(a[name].y, c[name].y)  # the split depends on split_seed only
        assert not torch.equal(a[name].x, c[name].x)


def test_denoise_batches_are_image_pairs():
    dm = DigitsDataModule(target="denoise", batch_size=32)
    bx, by = next(iter(dm.train_dataloader()))
    assert bx.shape == by.shape == (32, 1, 8, 8)
    assert bx.dtype == by.dtype == torch.float32


# --- the adding problem -------------------------------------------------------------------------


def test_adding_problem_has_two_markers_and_their_sum_as_target():
    dm = AddingDataModule(length=20, n_samples=500, standardize=False, standardize_target=False)
    assert dm.input_shape == (20, 2) and dm.target_shape == (1,) and dm.num_outputs == 1
    assert dm.task == "regression" and dm.vocab_size is None and dm.input_dtype == torch.float32
    for split in dm.splits.values():
        values, markers = split.x[..., 0], split.x[..., 1]
        assert ((values >= 0) & (values < 1)).all()
        assert set(markers.unique().tolist()) == {0.0, 1.0}
        assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
        expected = (values.double() * markers.double()).sum(1, keepdim=True)
        torch.testing.assert_close(split.y.double(), expected, atol=1e-6, rtol=0)


def test_adding_problem_odd_length_and_shortest_sequence():
    for length in (2, 7):
        x = AddingDataModule(length=length, n_samples=200, standardize=False).splits["train"].x
        half = length // 2
        assert (x[:, :half, 1].sum(1) == 1).all() and (x[:, half:, 1].sum(1) == 1).all()


def test_adding_problem_trivial_baseline_and_standardization():
    raw = AddingDataModule(n_samples=4000, standardize_target=False).splits["train"].y.double()
    # Predicting the mean: MSE = Var(U + U') = 1/6 before standardization ...
    assert raw.var(unbiased=False).item() == pytest.approx(1 / 6, rel=0.05)
    assert raw.mean().item() == pytest.approx(1.0, abs=0.02)
    dm = AddingDataModule(n_samples=4000, standardize=True)
    # ... and 1 after it.
    y = dm.splits["train"].y.double()
    assert y.var(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    # Inputs: one mean/std per feature over samples and steps, not per step.
    x = dm.splits["train"].x.double()
    torch.testing.assert_close(
        x.mean((0, 1)), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        x.std((0, 1), unbiased=False), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0
    )
    assert x[:, :, 1].unique().numel() == 2  # the markers stay two levels


def test_adding_problem_is_seeded_by_data_seed():
    a = AddingDataModule(n_samples=300).load_arrays()
    b = AddingDataModule(n_samples=300).load_arrays()
    c = AddingDataModule(n_samples=300, data_seed=3).load_arrays()
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


# --- IDX files in every layout ------------------------------------------------------------------

SIDE_ROWS, SIDE_COLS, N_TRAIN, N_TEST = 5, 6, 40, 12


def _write_idx(path: Path, array: np.ndarray, code: int = 0x08, dtype: str = "u1") -> None:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=dtype).tobytes())


def _idx_folder(folder: Path, float_images: bool = False) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (N_TRAIN, SIDE_ROWS, SIDE_COLS)).astype(np.uint8)
    train[0, 0, :2] = (0, 255)  # both ends of the byte range
    test = rng.integers(0, 256, (N_TEST, SIDE_ROWS, SIDE_COLS)).astype(np.uint8)
    for prefix, images in (("train", train), ("t10k", test)):
        if float_images:
            _write_idx(folder / f"{prefix}-images-idx3-ubyte", images / 255.0, 0x0E, ">f8")
        else:
            _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.arange(len(images)) % 4)
    return folder, test


@pytest.mark.parametrize(
    ("layout", "shape", "dtype"),
    [
        ("image", (1, SIDE_ROWS, SIDE_COLS), torch.float32),
        ("flat", (SIDE_ROWS * SIDE_COLS,), torch.float32),
        ("sequence", (SIDE_ROWS, SIDE_COLS), torch.float32),
        ("tokens", (SIDE_ROWS * SIDE_COLS,), torch.int64),
    ],
)
def test_idx_layouts(tmp_path, layout, shape, dtype):
    dm = IdxDataModule(path=_idx_folder(tmp_path)[0], layout=layout)
    assert dm.input_shape == shape and dm.input_dtype == dtype
    assert dm.vocab_size == (256 if layout == "tokens" else None)
    assert dm.num_classes == 4 and dm.target_shape == ()
    for split in dm.splits.values():
        assert split.x.dtype == dtype


def test_idx_sequence_is_the_image_rows_and_tokens_the_bytes(tmp_path):
    folder, test_bytes = _idx_folder(tmp_path)
    image = IdxDataModule(path=folder).splits["test"].x  # the t10k files, in file order
    sequence = IdxDataModule(path=folder, layout="sequence").splits["test"].x
    assert torch.equal(sequence, image[:, 0])
    tokens = IdxDataModule(path=folder, layout="tokens").splits["test"].x
    assert torch.equal(tokens, torch.as_tensor(test_bytes.reshape(N_TEST, -1), dtype=torch.int64))
    raw = IdxDataModule(path=folder, standardize=False).splits["test"].x
    torch.testing.assert_close(raw[:, 0].double(), torch.as_tensor(test_bytes / 255.0))


def test_idx_tokens_quantize_bytes_into_levels(tmp_path):
    folder, test_bytes = _idx_folder(tmp_path)
    dm = IdxDataModule(path=folder, layout="tokens", levels=4)
    assert dm.vocab_size == 4
    expected = torch.as_tensor(test_bytes.reshape(N_TEST, -1).astype(np.int64) // 64)
    assert torch.equal(dm.splits["test"].x, expected)
    train = dm.splits["train"].x
    assert int(train.min()) == 0 and int(train.max()) == 3


def test_idx_denoise(tmp_path):
    folder, test_bytes = _idx_folder(tmp_path)
    dm = IdxDataModule(path=folder, target="denoise", noise_std=0.1, standardize=False)
    assert dm.task == "regression" and dm.target_shape == (1, SIDE_ROWS, SIDE_COLS)
    test = dm.splits["test"]
    clean = torch.as_tensor(test_bytes / 255.0)[:, None]
    torch.testing.assert_close(test.y.double(), clean)
    noise = torch.cat([(s.x - s.y).flatten() for s in dm.splits.values()]).double()
    assert noise.std().item() == pytest.approx(0.1, rel=0.1)
    assert dm.noisy_input_mse["test"] == pytest.approx(((test.x - test.y) ** 2).mean().item())


def test_idx_tokens_need_byte_pixels(tmp_path):
    folder, _ = _idx_folder(tmp_path, float_images=True)
    assert IdxDataModule(path=folder).input_shape == (1, SIDE_ROWS, SIDE_COLS)  # floats: fine
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=folder, layout="tokens").input_shape  # noqa: B018
    assert info.value.key == "layout" and "0..255" in info.value.message


# --- the configs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "cls", "shape"),
    [
        (["data.layout=sequence"], DigitsDataModule, (8, 8)),
        (["data.layout=tokens"], DigitsDataModule, (64,)),
        (["data.target=denoise"], DigitsDataModule, (1, 8, 8)),
        (["data=adding", "data.length=12", "data.n_samples=300"], AddingDataModule, (12, 2)),
    ],
)
def test_configs_instantiate(tmp_path, overrides, cls, shape):
    cfg = compose_config(overrides, tmp_path)
    dm = hydra.utils.instantiate(cfg.data)
    assert type(dm) is cls and dm.input_shape == shape


def test_config_files_hold_the_class_defaults(tmp_path):
    for option, cls, keys in (
        ("digits", DigitsDataModule, ("layout", "target", "noise_std")),
        ("adding", AddingDataModule, ("length", "n_samples")),
    ):
        cfg = compose_config([f"data={option}"], tmp_path)
        defaults = inspect.signature(cls.__init__).parameters
        for key in keys:
            assert cfg.data[key] == defaults[key].default, (option, key)


# --- bad values ---------------------------------------------------------------------------------

BAD_CASES = [
    (DigitsDataModule, {"layout": "rows"}, "layout", "sequence, tokens"),
    (DigitsDataModule, {"target": "segment"}, "target", "label, denoise"),
    (DigitsDataModule, {"noise_std": 0.0}, "noise_std", "(0, inf]"),
    (DigitsDataModule, {"noise_std": -1.0}, "noise_std", "got -1.0"),
    (DigitsDataModule, {"noise_std": float("nan")}, "noise_std", "got nan"),
    (DigitsDataModule, {"noise_std": "high"}, "noise_std", "number"),
    (DigitsDataModule, {"layout": "tokens", "target": "denoise"}, "target", "not layout tokens"),
    (DigitsDataModule, {"target": "denoise", "label_noise": 0.1}, "label_noise", "classification"),
    (AddingDataModule, {"length": 1}, "length", ">= 2"),  # no room for a marker in each half
    (AddingDataModule, {"length": 2.5}, "length", "integer"),
    (AddingDataModule, {"length": "long"}, "length", "integer"),
    (AddingDataModule, {"n_samples": 0}, "n_samples", "[1, "),
    (AddingDataModule, {"n_samples": 10**8, "length": 10**3}, "n_samples", "fit in memory"),
    (AddingDataModule, {"label_noise": 0.1}, "label_noise", "classification"),
]


@pytest.mark.parametrize(("cls", "kwargs", "key", "fragment"), BAD_CASES)
def test_bad_values_are_one_line_errors_naming_the_key(cls, kwargs, key, fragment):
    with pytest.raises(ConfigError) as info:
        cls(**kwargs)
    assert info.value.key == key
    assert fragment in info.value.message
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "key", "fragment"),
    [
        (["data.layout=tokens", "data.target=denoise"], "data.target", "not layout tokens"),
        (["data.layout=columns"], "data.layout", "valid: image, flat, sequence, tokens"),
        (["data.target=denoise", "data.noise_std=-2"], "data.noise_std", "got -2"),
        (["data=adding", "data.length=1"], "data.length", ">= 2"),
    ],
)
def test_a_run_with_bad_sequence_data_stops_before_training(tmp_path, overrides, key, fragment):
    out = tmp_path / "run"
    small = ["model=mlp", "model.width=8", "trainer.max_epochs=1", "logger=none"]
    with pytest.raises(ConfigError) as info:
        run_one(compose_config([*small, *overrides], out))
    assert info.value.key == key and fragment in info.value.message
    assert not (out / "metrics.json").exists()


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        ({"layout": "pixels"}, "layout", "image, flat, sequence, tokens"),
        ({"levels": 1}, "levels", "[2, 256]"),
        ({"levels": 257}, "levels", "[2, 256]"),
        ({"layout": "tokens", "target": "denoise"}, "target", "not layout tokens"),
        ({"noise_std": 0}, "noise_std", "number"),
    ],
)
def test_bad_idx_values_are_refused_at_construction(tmp_path, kwargs, key, fragment):
    folder, _ = _idx_folder(tmp_path)
    with pytest.raises(ConfigError) as info:
        IdxDataModule(path=folder, **kwargs)
    assert info.value.key == key and fragment in info.value.message
    assert "\n" not in str(info.value)


def test_out_of_range_tokens_are_refused_before_training():
    class Tokens(DigitsDataModule):
        def tokens(self, images):
            return images.astype(np.int64) + 1  # 17 is outside the vocabulary of 17

    with pytest.raises(ConfigError) as info:
        Tokens(layout="tokens").input_shape  # noqa: B018
    assert info.value.key == "" and "[0, 17)" in info.value.message
