"""A layer defined outside the catalogue is one class and one `register_layer` call with its kind.

The toy activation below is registered from this file alone (kind "activation"): it becomes a
valid `model.activation`, trains through the CLI config and sweeps beside a catalogue activation.
A toy of kind "other" is still a layer a spec may name, but no knob takes it; its name says "norm"
to show that kinds are declared, never guessed from names. A structural keyword (`parallel`:
branches on the same input, summed) is one `structure` entry too, like `repeat` and `residual`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from conftest import SMALL_RUN, run_records, run_train_in_process
from reglab.errors import ConfigError
from reglab.nn import LAYERS, build_net, get_layer, layer_names, register_layer
from reglab.nn.structures import STRUCTURES, structure

FEATURES = (6,)


class ScaledTanh(nn.Module):
    """scale * tanh(x / scale): tanh with its linear range and its bounds stretched by `scale`."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply scale * tanh(x / scale)."""
        return self.scale * torch.tanh(x / self.scale)


class Doubler(nn.Module):
    """2 * x: a layer of kind "other", whatever its registered name says."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply 2 * x."""
        return 2 * x


@pytest.fixture
def toy_layers() -> Iterator[list[tuple[bool, float]]]:
    """Register the toys; yield (training, scale) of every ScaledTanh forward pass in the process."""
    register_layer("scaled_tanh", ScaledTanh, kind="activation")
    register_layer("rescale_norm", Doubler, kind="other")
    calls: list[tuple[bool, float]] = []

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, ScaledTanh):
            calls.append((module.training, float(module.scale)))

    hook = nn.modules.module.register_module_forward_hook(count)
    yield calls
    hook.remove()
    LAYERS.unregister("scaled_tanh")
    LAYERS.unregister("rescale_norm")


class Sum(nn.Module):
    """The sum of its branches' outputs on one input."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every branch to x and add the outputs."""
        return sum(branch(x) for branch in self.branches)


@pytest.fixture
def parallel_keyword() -> Iterator[None]:
    """Register `{parallel: [[...], [...]]}`; unregister it afterwards."""

    @structure("parallel", form="{parallel: [[...], ...]}")
    def parallel(builder, entry, key):
        start, branches, shapes = builder.shape, [], []
        for index, layers in enumerate(entry["parallel"]):
            builder.shape = start  # every branch takes the block's input
            built = builder.build_list(layers, f"{key}.parallel[{index}]")
            branches.append(nn.Sequential(OrderedDict(built)))
            shapes.append(builder.shape)
        if len(set(shapes)) != 1:
            raise ConfigError(f"{key}.parallel", f"branches end in different shapes {shapes}")
        return [("parallel", Sum(*branches))]

    yield
    STRUCTURES.unregister("parallel")


def _run_args(*overrides: str) -> list[str]:
    return [*SMALL_RUN, *overrides, "trainer.max_epochs=1", "callbacks=none"]


# --- the registry and the builder --------------------------------------------------------------


def test_the_toys_join_the_catalogue_under_their_declared_kinds(toy_layers):
    assert "scaled_tanh" in layer_names("activation")
    assert "rescale_norm" in layer_names("other")
    assert "rescale_norm" not in layer_names("norm")  # the name is not the kind
    assert get_layer("ScaledTanh").cls is ScaledTanh
    register_layer("scaled_tanh", ScaledTanh, kind="activation")  # the same entry again: no-op
    with pytest.raises(KeyError):
        register_layer("scaled_tanh", ScaledTanh, kind="other")  # another entry under the name
    with pytest.raises(ConfigError) as info:
        register_layer("cube", ScaledTanh, kind="activaton")
    assert info.value.key == "kind" and "activation" in str(info.value)
    assert "cube" not in LAYERS


def test_the_toys_build_in_a_spec_with_their_arguments(toy_layers):
    spec = {
        "layers": [{"linear": {"out_features": 4}}, {"scaled_tanh": {"scale": 3.0}}, "rescale_norm"]
    }
    net = build_net(spec, FEATURES, 2)
    assert [name for name, _ in net.named_children()] == [
        "linear",
        "scaled_tanh",
        "rescale_norm",
        "head",
    ]
    x = torch.randn(5, *FEATURES)
    hidden = net.linear(x)
    torch.testing.assert_close(net(x), net.head(2 * 3.0 * torch.tanh(hidden / 3.0)))


@pytest.mark.parametrize("knob", ["activation", "norm"])
def test_a_toy_of_kind_other_is_refused_by_the_knobs(toy_layers, knob):
    spec = {knob: "rescale_norm", "layers": [{"linear": {"out_features": 4}}]}
    with pytest.raises(ConfigError) as info:
        build_net(spec, FEATURES, 2)
    assert info.value.key == knob
    valid = str(info.value).split("valid: ")[1].split(", ")
    assert "rescale_norm" not in valid
    assert valid == [*layer_names(knob), "none"]
    assert ("scaled_tanh" in valid) == (knob == "activation")


def test_a_structural_keyword_registered_outside_builds_its_entries(parallel_keyword):
    spec = {
        "layers": [
            {
                "parallel": [
                    [{"linear": {"out_features": 3}}],
                    [{"linear": {"out_features": 3}}, "tanh"],
                ]
            },
            "relu",
        ]
    }
    net = build_net(spec, FEATURES, 2)
    assert [name for name, _ in net.named_children()] == ["parallel", "relu", "head"]
    first, second = net.parallel.branches
    x = torch.randn(5, *FEATURES)
    torch.testing.assert_close(net(x), net.head(torch.relu(first(x) + second(x))))
    # The builder's own checks reach it: a nested unknown layer and a key it does not take.
    with pytest.raises(ConfigError) as info:
        build_net({"layers": [{"parallel": [["rleu"]]}]}, FEATURES, 2)
    assert info.value.key == "layers[0].parallel[0][0]"
    with pytest.raises(ConfigError) as info:
        build_net({"layers": [{"parallel": [["relu"]], "merge": "sum"}]}, FEATURES, 2)
    assert info.value.key == "layers[0]" and "parallel" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_net({"layers": [{"parallel": [[{"linear": {"out_features": 3}}], []]}]}, FEATURES, 2)
    assert info.value.key == "layers[0].parallel"


def test_a_bad_entry_names_every_registered_form(parallel_keyword):
    with pytest.raises(ConfigError) as info:
        build_net({"layers": [["relu"]]}, FEATURES, 2)
    assert "{parallel: [[...], ...]}" in str(info.value)
    assert "{repeat: N, block: [...]}" in str(info.value)
    STRUCTURES.unregister("parallel")
    with pytest.raises(ConfigError) as info:  # unregistered: an unknown layer again
        build_net({"layers": [{"parallel": {}}]}, FEATURES, 2)
    assert info.value.key == "layers[0]" and "unknown layer 'parallel'" in str(info.value)


# --- through the CLI config --------------------------------------------------------------------


def test_a_run_with_the_toy_activation_trains_it(toy_layers, tmp_path):
    code = run_train_in_process(_run_args("model.activation={scaled_tanh: {scale: 3.0}}"), tmp_path)
    assert code == 0
    (record,) = run_records(tmp_path)
    assert record["status"] == "ok"
    # mlp's depth 2: two ScaledTanh modules, both ran in training with the configured scale.
    assert sum(training for training, _ in toy_layers) >= 2
    assert {scale for _, scale in toy_layers} == {3.0}


def test_a_toy_of_kind_other_is_refused_as_the_activation(toy_layers, tmp_path, capsys):
    code = run_train_in_process(_run_args("model.activation=rescale_norm"), tmp_path)
    assert code == 2
    error = capsys.readouterr().err
    assert "model.activation" in error and "'rescale_norm'" in error
    valid = error.split("valid: ")[1].splitlines()[0].split(", ")
    assert valid == [*layer_names("activation"), "none"]
    assert "scaled_tanh" in valid and "rescale_norm" not in valid


def test_a_sweep_over_a_catalogue_and_the_toy_activation(toy_layers, tmp_path):
    code = run_train_in_process(["-m", *_run_args("model.activation=relu,scaled_tanh")], tmp_path)
    assert code == 0
    records = run_records(tmp_path)
    assert len(records) == 2
    assert all(record["status"] == "ok" for record in records)
    assert sum(training for training, _ in toy_layers) >= 2  # the toy's job trained it
