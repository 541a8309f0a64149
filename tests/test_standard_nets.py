"""The standard CIFAR nets as model configs (conf/model/preact_resnet18.yaml, wide_resnet.yaml and its
presets wrn_16_4, wrn_28_10), built from the layer catalogue with the `stage` and
`preact_residual` structural keywords (reglab.nn.structures).

Each is checked against a reference written here from its official code — PreActResNet18 of
kuangliu/pytorch-cifar models/preact_resnet.py (the implementation the mixup paper names) and
WRN-d-k of szagoruyko/wide-residual-networks models/wide-resnet.lua — for the parameter count
(the papers' 11.2M, 2.7M, 36.5M), the shapes of every parameter and buffer in order and, with the
reference's weights loaded, the outputs. The dropout and stochastic-depth knobs change the net in
train mode only.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from conftest import compose_config
from reglab.errors import ConfigError
from reglab.nn import build_net
from reglab.nn.drop_path import DropPath
from reglab.nn.residual import PreActResidual
from reglab.nn.structures import STRUCTURES

CIFAR = (3, 32, 32)
CLASSES = 10

# --- the references, from the official code -----------------------------------------------------


class RefPreActBlock(nn.Module):
    """kuangliu's PreActBlock: BN-ReLU, conv3x3 (strided), BN-ReLU, conv3x3; the skip is x, or a
    strided 1x1 conv of the pre-activated x when the stride or width changes. The WRN unit of the
    official Lua code is the same with dropout before the second conv."""

    def __init__(self, inputs: int, outputs: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inputs)
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        out = F.dropout(out, self.dropout, self.training)
        return self.conv2(out) + skip


def ref_stages(stem: int, widths, blocks, strides, dropout: float = 0.0) -> list[nn.Module]:
    units, inputs = [], stem
    for width, count, stride in zip(widths, blocks, strides, strict=True):
        for index in range(count):
            units.append(RefPreActBlock(inputs, width, stride if index == 0 else 1, dropout))
            inputs = width
    return units


class RefPreActResNet18(nn.Module):
    """conv3x3 64 (no BN), [2, 2, 2, 2] units of 64/128/256/512 at strides 1/2/2/2, avg pool 4,
    Linear: no BN-ReLU after the last unit, as in kuangliu's PreActResNet."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.units = nn.Sequential(*ref_stages(64, (64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2)))
        self.linear = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool2d(self.units(self.conv1(x)), 4)
        return self.linear(out.flatten(1))


class RefWideResNet(nn.Module):
    """WRN-depth-k of the official code: conv3x3 16 (no bias), three stages of (depth - 4) / 6
    units of 16k/32k/64k at strides 1/2/2, BN-ReLU, avg pool 8, Linear."""

    def __init__(self, depth: int, k: int, dropout: float = 0.0, classes: int = CLASSES) -> None:
        super().__init__()
        assert (depth - 4) % 6 == 0
        n = (depth - 4) // 6
        widths = (16 * k, 32 * k, 64 * k)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.units = nn.Sequential(*ref_stages(16, widths, (n, n, n), (1, 2, 2), dropout))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.fc = nn.Linear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.units(self.conv1(x))))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


REFERENCES = {
    "preact_resnet18": RefPreActResNet18,
    "wrn_16_4": lambda: RefWideResNet(16, 4),
    "wrn_28_10": lambda: RefWideResNet(28, 10),
}
# The counts for 10 classes, and as the papers round them (WRN-16-4 2.7M, WRN-28-10 36.5M).
PARAMETERS = {"preact_resnet18": 11_171_146, "wrn_16_4": 2_748_890, "wrn_28_10": 36_479_194}
PAPER_MILLIONS = {"preact_resnet18": 11.2, "wrn_16_4": 2.7, "wrn_28_10": 36.5}
UNITS = {"preact_resnet18": 8, "wrn_16_4": 6, "wrn_28_10": 12}

_SPECS: dict[tuple[str, ...], dict] = {}


def spec(tmp_path_factory: pytest.TempPathFactory, *overrides: str) -> dict:
    """The model node `python train.py <overrides>` builds, resolved (composed once per set)."""
    if overrides not in _SPECS:
        cfg = compose_config(list(overrides), tmp_path_factory.mktemp("run"))
        _SPECS[overrides] = OmegaConf.to_container(cfg.model, resolve=True)
    return _SPECS[overrides]


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def shapes(net: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in net.state_dict().values()]


def check_count(net: nn.Module, reference: nn.Module, name: str) -> None:
    assert count(net) == count(reference) == PARAMETERS[name]
    assert round(count(net) / 1e6, 1) == PAPER_MILLIONS[name]
    # Not only the total: every parameter and buffer has the reference's shape, in its order.
    assert shapes(net) == shapes(reference)
    assert sum(isinstance(m, PreActResidual) for m in net.modules()) == UNITS[name]


@pytest.mark.parametrize("name", ["preact_resnet18", "wrn_16_4"])
def test_the_nets_have_the_references_parameters_and_outputs(tmp_path_factory, one_thread, name):
    torch.manual_seed(0)
    net = build_net(spec(tmp_path_factory, f"model={name}"), CIFAR, CLASSES)
    reference = REFERENCES[name]()
    check_count(net, reference, name)
    # The reference's weights and BN statistics (the same tensors in the same order) give the
    # reference's outputs: identity skips on x, projections of the pre-activated x, strides.
    net.load_state_dict(dict(zip(net.state_dict(), reference.state_dict().values(), strict=True)))
    net.eval(), reference.eval()
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, CLASSES)
        torch.testing.assert_close(out, reference(x), rtol=1e-4, atol=1e-4)


def test_wrn_28_10_has_the_official_parameters_and_layout(tmp_path_factory):
    # 36.5M parameters: both nets are built on the meta device (shapes, no memory, no values).
    with torch.device("meta"):
        net = build_net(spec(tmp_path_factory, "model=wrn_28_10"), CIFAR, CLASSES)
        reference = REFERENCES["wrn_28_10"]()
    check_count(net, reference, "wrn_28_10")
    stages = [m for name, m in net.named_children() if name.startswith("stage")]
    assert [len(stage) for stage in stages] == [4, 4, 4]
    first = [stage.block_1.preact_residual for stage in stages]
    assert [unit.block.conv2d_1.stride for unit in first] == [(1, 1), (2, 2), (2, 2)]
    assert [unit.shortcut.stride for unit in first] == [(1, 1), (2, 2), (2, 2)]
    later = [stage.block_2.preact_residual for stage in stages]
    assert all(u.shortcut is None and u.block.conv2d_1.stride == (1, 1) for u in later)
    assert net.head.in_features == 640


# --- the knobs ------------------------------------------------------------------------------------

SMALL = (3, 8, 8)  # any image size builds; the knobs do not depend on it nor on the widths
NARROW = {"preact_resnet18": "model.widths=[4,8,8,8]", "wrn_16_4": "model.widths=[4,8,8]"}


@pytest.mark.parametrize("name", ["preact_resnet18", "wrn_16_4"])
def test_the_knobs_change_the_net_in_train_mode_only(tmp_path_factory, name):
    def make(*knobs: str) -> nn.Module:
        torch.manual_seed(0)
        return build_net(spec(tmp_path_factory, f"model={name}", NARROW[name], *knobs), SMALL, 10)

    plain = make()
    x = torch.randn(8, *SMALL)
    for knob, module in (("dropout", nn.Dropout), ("drop_path", DropPath)):
        noisy = make(f"model.{knob}=0.5")
        placed = [m for m in noisy.modules() if type(m) is module]
        assert len(placed) == UNITS[name] and all(m.p == 0.5 for m in placed), knob
        noisy.load_state_dict(plain.state_dict())
        with torch.no_grad():
            plain.eval(), noisy.eval()
            torch.testing.assert_close(noisy(x), plain(x))  # eval mode: the same net
            plain.train(), noisy.train()
            assert not torch.allclose(noisy(x), plain(x)), knob  # train mode: units dropped


def test_wrn_dropout_sits_between_the_convolutions(tmp_path_factory):
    # BN -> ReLU -> dropout -> conv, as the official wide_basic (after the second ReLU).
    net = build_net(spec(tmp_path_factory, "model=wrn_16_4", NARROW["wrn_16_4"]), SMALL, CLASSES)
    block = net.stage_2.block_1.preact_residual.block
    assert list(dict(block.named_children())) == [
        "conv2d_1", "batch_norm2d", "relu", "dropout", "conv2d_2"
    ]  # fmt: skip


def test_the_nets_take_other_image_sizes_and_refuse_feature_vectors(tmp_path_factory):
    model = spec(tmp_path_factory, "model=wrn_16_4", NARROW["wrn_16_4"])
    net = build_net(model, (1, 8, 8), CLASSES)  # data=digits
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, CLASSES)
    assert build_net(model, (3, 1, 1), CLASSES)(torch.randn(2, 3, 1, 1)).shape == (2, CLASSES)
    with pytest.raises(ConfigError) as error:
        build_net(model, (64,), CLASSES)
    assert error.value.key == "layers[0]" and "conv2d cannot take inputs of shape (64,)" in str(
        error.value
    )


# --- the structural keywords they are made of -----------------------------------------------------

IMAGE = (4, 8, 8)


def build(layers: list, shape=IMAGE) -> nn.Sequential:
    return build_net({"layers": layers}, shape, CLASSES)


def conv(channels: int, **kwargs) -> dict:
    return {"conv2d": {"out_channels": channels, "kernel_size": 3, "padding": 1, **kwargs}}


def unit(channels: int, **extra) -> dict:
    return {"preact_residual": [conv(channels), "relu"], "pre": ["batch_norm2d", "relu"], **extra}


def test_structural_keywords_are_registered():
    assert {"preact_residual", "stage"} <= set(STRUCTURES.names())


def test_a_preact_unit_that_keeps_the_shape_adds_its_input_itself():
    net = build([unit(4), "flatten"])
    residual = net.preact_residual
    assert residual.shortcut is None
    x = torch.randn(2, *IMAGE)
    residual.eval()
    torch.testing.assert_close(residual(x), x + residual.block(residual.pre(x)))


def test_a_preact_unit_that_strides_projects_its_pre_activated_input():
    net = build([unit(6) | {"preact_residual": [conv(6, stride=2), "relu"]}, "flatten"])
    residual = net.preact_residual
    assert residual.shortcut.stride == (2, 2) and residual.shortcut.in_channels == 4
    x = torch.randn(2, *IMAGE)
    residual.eval()
    activated = residual.pre(x)
    torch.testing.assert_close(
        residual(x), residual.shortcut(activated) + residual.block(activated)
    )
    assert residual(x).shape == (2, 6, 4, 4)


def test_a_stage_strides_its_first_block_only():
    net = build([{"stage": 3, "stride": 2, "block": [unit(6)]}, "flatten"])
    blocks = list(net.stage.children())
    assert [b.preact_residual.block.conv2d.stride for b in blocks] == [(2, 2), (1, 1), (1, 1)]
    assert blocks[0].preact_residual.shortcut.stride == (2, 2)
    assert net(torch.randn(2, *IMAGE)).shape == (2, CLASSES)
    assert net.head.in_features == 6 * 4 * 4


@pytest.mark.parametrize(
    ("layers", "key", "says"),
    [
        (
            [{"stage": 2, "stride": 2, "block": ["relu"]}],
            "layers[0].stride",
            "no layer of the block takes a stride",
        ),
        (
            [
                {
                    "stage": 2,
                    "stride": 2,
                    "block": [unit(4) | {"preact_residual": [conv(4, stride=1)]}],
                }
            ],
            "layers[0].block[0].preact_residual[0].conv2d.stride",
            "leave it out",
        ),
        ([{"stage": 0, "block": ["relu"]}], "layers[0].stage", ">= 1"),
        ([{"stage": 1, "strides": 2, "block": ["relu"]}], "layers[0]", "'strides'"),
        ([{"preact_residual": [conv(4)]}], "layers[0].pre", "non-empty"),
        ([unit(4, drop_path=1.0)], "layers[0].drop_path", "[0, 1)"),
        (
            [unit(4) | {"preact_residual": [{"conv2d": {"out_channels": 4, "kernel_size": 4}}]}],
            "layers[0].preact_residual",
            "integer stride",
        ),
    ],
)
def test_bad_stages_and_units_name_their_entry(layers, key, says):
    with pytest.raises(ConfigError) as error:
        build([*layers, "flatten"])
    assert error.value.key == key and says in str(error.value), str(error.value)
