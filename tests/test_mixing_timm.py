"""Mixup / CutMix with timm's options: the maths of each mode against the drawn parameters,
prob and switch_prob rates, pairing without self-pairs, soft targets, errors, and runs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import compose_config, read_metrics
from reglab.augment import MIXES, MODES, MixDraw, Mixing, mix
from reglab.callbacks import BatchAugmentation
from reglab.errors import ConfigError
from reglab.run import run_one, train

KINDS = {
    "mixup": {"alpha": 1.0},
    "cutmix": {"alpha": 1.0},
    "mixup_cutmix": {"mixup_alpha": 1.0, "cutmix_alpha": 1.0},
}


def _mixing(kind: str, **options) -> Mixing:
    return MIXES.get(kind).build((2, 8, 8), **{**KINDS[kind], **options})


def _batch(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 2x8x8 images and one-hot targets over `size` classes (sample i: class i)."""
    return torch.randn(size, 2, 8, 8), torch.eye(size)


def _draw_and_mix(mixing: Mixing, x, y, seed: int) -> tuple[MixDraw, torch.Tensor, torch.Tensor]:
    """The parameters `forward` draws (the same seed twice) and what it returns."""
    torch.manual_seed(seed)
    draw = mixing.draw(x)
    torch.manual_seed(seed)
    mx, my = mixing(x, y)
    return draw, mx, my


def _reference(x: torch.Tensor, y: torch.Tensor, draw: MixDraw):
    """The papers' formulas, sample by sample, with the drawn lambdas, partners and boxes."""
    height, width = x.shape[-2:]
    mx, my = x.clone(), y.clone()
    for i in range(len(x)):
        j, lam = int(draw.partner[i]), float(draw.lam[i])
        if not draw.mixed[i]:
            assert lam == 1.0 and not draw.cut[i]
            continue
        if draw.cut[i]:
            top, bottom, left, right = draw.box[i].tolist()
            mx[i, :, top:bottom, left:right] = x[j, :, top:bottom, left:right]
            area = (bottom - top) * (right - left)
            assert lam == pytest.approx(1 - area / (height * width))  # the pasted area
        else:
            mx[i] = lam * x[i] + (1 - lam) * x[j]
        my[i] = lam * y[i] + (1 - lam) * y[j]
    return mx, my


# --- the maths, per mode -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [2, 3, 7, 16])
def test_the_mixed_batch_is_the_formula_with_the_drawn_parameters(kind, mode, size):
    mixing = _mixing(kind, prob=0.7, mode=mode)
    for seed in range(6):
        x, y = _batch(size)
        draw, mx, my = _draw_and_mix(mixing, x, y, seed)
        rx, ry = _reference(x, y, draw)
        torch.testing.assert_close(mx, rx)
        torch.testing.assert_close(my, ry)
        torch.testing.assert_close(my.sum(1), torch.ones(size))
        assert (my >= 0).all()


def _units(draw: MixDraw, mode: str) -> list[list[int]]:
    """The groups of samples that must share one draw in `mode`."""
    size = len(draw.partner)
    if mode == "batch":
        return [list(range(size))]
    if mode == "elem":
        return [[i] for i in range(size)]
    partner = draw.partner.tolist()
    pairs = [[i, partner[i]] for i in range(size) if i < partner[i] and partner[partner[i]] == i]
    paired = {i for pair in pairs for i in pair}
    return pairs + [[i] for i in range(size) if i not in paired]  # and an odd batch's last one


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [2, 3, 8, 9])
def test_each_mode_draws_once_per_batch_pair_or_sample(mode, size):
    mixing = _mixing("mixup_cutmix", prob=0.6, mode=mode)
    varied = 0
    for seed in range(40):
        torch.manual_seed(seed)
        draw = mixing.draw(torch.zeros(size, 1, 8, 8))
        units = _units(draw, mode)
        for unit in units:
            for field in (draw.mixed, draw.cut, draw.lam, draw.box):
                assert all(torch.equal(field[unit[0]], field[i]) for i in unit), (unit, field)
        if mode == "pair":  # pairs mix with each other; an odd batch leaves one sample over
            assert [len(unit) for unit in units] == [2] * (size // 2) + [1] * (size % 2)
        varied += len(set(draw.lam.tolist())) > 1
    if mode == "batch" or (mode, size) == ("pair", 2):  # one draw for the whole batch
        assert varied == 0
    else:
        assert varied > 10  # different draws within a batch


@pytest.mark.parametrize("mode", MODES)
def test_cutmix_pixels_come_from_the_partner_in_the_share_the_targets_say(mode):
    # Sample i is the constant image i + 1: each output pixel tells where it came from.
    size = 9
    x = (torch.arange(size, dtype=torch.float32) + 1).view(size, 1, 1, 1).expand(size, 3, 8, 8)
    mixing = _mixing("cutmix", mode=mode)
    for seed in range(20):
        torch.manual_seed(seed)
        mx, my = mixing(x, torch.eye(size))
        for i in range(size):
            own = (mx[i] == i + 1).float().mean()
            others = mx[i][mx[i] != i + 1].unique()
            assert len(others) <= 1  # one partner's box
            torch.testing.assert_close(my[i, i], own)  # target weight = share of own pixels
            if len(others):
                j = int(others[0]) - 1
                assert j != i
                torch.testing.assert_close(my[i, j], 1 - own)


# --- prob and switch_prob ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_prob_zero_never_mixes_and_prob_one_always_does(kind, mode):
    never, always = _mixing(kind, prob=0.0, mode=mode), _mixing(kind, prob=1.0, mode=mode)
    torch.manual_seed(0)
    unchanged = 0
    for size in (2, 3, 10):
        for _ in range(20):
            x, y = _batch(size)
            mx, my = never(x, y)
            assert torch.equal(mx, x) and torch.equal(my, y)
            draw = always.draw(x)
            assert draw.mixed.all()
            unchanged += torch.equal(mix(x, y, draw)[0], x)
    # (A lambda within float precision of 1, or a cutmix box that rounds to no pixel, changes
    # nothing: rare with alpha = 1.)
    assert unchanged <= 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prob", [0.25, 0.8])
def test_the_share_of_mixed_batches_pairs_or_samples_is_prob(mode, prob):
    mixing = _mixing("mixup", prob=prob, mode=mode)
    torch.manual_seed(1)
    shares = []
    for _ in range(2000 if mode == "batch" else 300):
        draw = mixing.draw(torch.zeros(10, 4))
        units = _units(draw, mode)
        shares += [bool(draw.mixed[unit[0]]) for unit in units]
    assert sum(shares) / len(shares) == pytest.approx(prob, abs=0.035)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("switch_prob", [0.0, 0.3, 1.0])
def test_switch_prob_chooses_cutmix_at_its_rate(mode, switch_prob):
    mixing = _mixing("mixup_cutmix", switch_prob=switch_prob, prob=0.8, mode=mode)
    torch.manual_seed(2)
    cut, mixed = 0, 0
    draws = 300 if mode != "batch" else 2000 if 0 < switch_prob < 1 else 200
    for _ in range(draws):
        draw = mixing.draw(torch.zeros(10, 1, 8, 8))
        assert not (draw.cut & ~draw.mixed).any()  # cutmix only where mixing applies
        for unit in _units(draw, mode):
            mixed += bool(draw.mixed[unit[0]])
            cut += bool(draw.cut[unit[0]])
    assert cut / mixed == pytest.approx(switch_prob, abs=0.04)


# --- pairing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [2, 3, 4, 5, 7, 64, 65])
def test_no_sample_is_ever_mixed_with_itself(mode, size):
    mixing = _mixing("mixup_cutmix", mode=mode)  # (the pairing does not depend on the kind)
    torch.manual_seed(size)
    for _ in range(100):
        draw = mixing.draw(torch.zeros(size, 1, 8, 8))
        assert (draw.partner != torch.arange(size)).all()
        assert ((draw.partner >= 0) & (draw.partner < size)).all()
        if mode != "pair":  # a permutation without fixed points: every sample given once
            assert sorted(draw.partner.tolist()) == list(range(size))


@pytest.mark.parametrize("mode", MODES)
def test_a_partner_is_any_other_sample_alike(mode):
    mixing = _mixing("mixup", mode=mode)
    torch.manual_seed(3)
    counts = torch.zeros(5)
    for _ in range(1500):
        counts[int(mixing.draw(torch.zeros(5, 2)).partner[0])] += 1
    assert counts[0] == 0
    torch.testing.assert_close(counts[1:] / 1500, torch.full((4,), 0.25), atol=0.035, rtol=0)


def test_a_batch_of_one_is_left_as_it_is():
    mixing = _mixing("mixup_cutmix")
    x, y = _batch(1)
    mx, my = mixing(x, y)
    assert torch.equal(mx, x) and torch.equal(my, y)


def test_lambda_is_beta_distributed_per_sample_in_elem_mode():
    mixing = _mixing("mixup", alpha=0.2, mode="elem")
    torch.manual_seed(4)
    lams = torch.cat([mixing.draw(torch.zeros(100, 3)).lam for _ in range(40)])
    assert ((lams < 0.1) | (lams > 0.9)).float().mean() > 0.55  # Beta(0.2, 0.2): ~64 %
    assert lams.mean().item() == pytest.approx(0.5, abs=0.03)


def test_draws_come_from_torchs_global_generator():
    mixing = _mixing("mixup_cutmix", mode="elem", prob=0.5)
    x, y = _batch(12)
    torch.manual_seed(7)
    first = mixing(x, y)
    torch.manual_seed(7)
    again = mixing(x, y)
    later = mixing(x, y)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], later[0])


# --- the config ----------------------------------------------------------------------------------


class _Model(L.LightningModule):
    """What BatchAugmentation.check reads: hparams input_shape/num_outputs and task."""

    def __init__(self, input_shape: list[int], num_outputs: int = 3):
        super().__init__()
        self.save_hyperparameters()
        self.task = "classification"


def test_the_config_shape_builds_the_mixing():
    augmentation = BatchAugmentation(
        mix={"mixup_cutmix": {"mixup_alpha": 0.8, "switch_prob": 0.25, "prob": 0.5, "mode": "pair"}}
    )
    augmentation.check(_Model([1, 8, 8]))
    mixing = augmentation.mixing
    assert (mixing.mixup_alpha, mixing.cutmix_alpha) == (0.8, 1.0)
    assert (mixing.switch_prob, mixing.prob, mixing.mode) == (0.25, 0.5, "pair")
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    mx, my = augmentation((x, y))
    assert mx.shape == x.shape and my.shape == (5, 3)
    torch.testing.assert_close(my.sum(1), torch.ones(5))


@pytest.mark.parametrize(
    ("mix", "key"),
    [
        ({"mixup": {"alpha": 0.2, "mode": "row"}}, "mix.mixup.mode"),
        ({"mixup": {"prob": 1.5}}, "mix.mixup.prob"),
        ({"mixup": {"switch_prob": 0.5}}, "mix.mixup"),  # one kind: nothing to switch
        ({"cutmix": {"prob": -0.1}}, "mix.cutmix.prob"),
        ({"mixup_cutmix": {"switch_prob": 2}}, "mix.mixup_cutmix.switch_prob"),
        ({"mixup_cutmix": {"cutmix_alpha": 0}}, "mix.mixup_cutmix.cutmix_alpha"),
        ({"mixup_cutmix": {"alpha": 1}}, "mix.mixup_cutmix"),
    ],
)
def test_a_bad_mixing_option_is_refused_by_its_key(mix, key):
    with pytest.raises(ConfigError) as error:
        BatchAugmentation(mix=mix).check(_Model([1, 8, 8]))
    assert error.value.key == key
    assert "\n" not in str(error.value)


class _TargetSpy(L.Callback):
    """The soft targets of every training batch (after augmentation)."""

    def __init__(self) -> None:
        self.targets: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.targets.append(batch[1].detach().cpu())


def test_a_run_with_timms_options_mixes_half_the_samples(tmp_path, monkeypatch):
    draws: list[MixDraw] = []
    draw = Mixing.draw

    def recorded(self, x):
        draws.append(draw(self, x))
        return draws[-1]

    monkeypatch.setattr(Mixing, "draw", recorded)
    spy = _TargetSpy()
    cfg = compose_config(
        [
            "model=cnn",
            "augmentation=mixup_cutmix",
            "augmentation.mix.mixup_cutmix.mode=elem",
            "augmentation.mix.mixup_cutmix.prob=0.5",
            "trainer.max_epochs=2",
            "logger=none",
        ],
        tmp_path / "run",
    )
    run_one(cfg, extra_callbacks=[spy])
    mixed = torch.cat([d.mixed for d in draws]).float().mean().item()
    assert mixed == pytest.approx(0.5, abs=0.04)  # prob per sample in elem mode
    assert 0.4 < torch.cat([d.cut for d in draws]).float().mean().item() / mixed < 0.6
    targets = torch.cat(spy.targets)
    assert targets.shape == (sum(len(d.partner) for d in draws), 10)  # every batch drawn once
    torch.testing.assert_close(targets.sum(1), torch.ones(len(targets)))
    soft = (targets.amax(1) < 1).float().mean().item()  # not where the partner has the same class
    assert mixed - 0.1 < soft <= mixed
    assert read_metrics(tmp_path / "run")["test"]["test/acc"] > 0.3


def test_a_resumed_mixing_run_equals_the_uninterrupted_one(tmp_path):
    common = [
        "model=mlp",
        "model.width=16",
        "augmentation=mixup",
        "augmentation.mix.mixup.mode=elem",
        "augmentation.mix.mixup.prob=0.5",
        "early_stopping=none",
        "logger=none",
        "callbacks.model_checkpoint.save_last=true",
        "data.train_fraction=0.3",
    ]

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu")["state_dict"]

    train(compose_config([*common, "trainer.max_epochs=3"], tmp_path / "whole"))
    train(compose_config([*common, "trainer.max_epochs=1"], tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    train(compose_config([*common, "trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path / "rest"))
    whole, resumed = weights(tmp_path / "whole"), weights(tmp_path / "rest")
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
