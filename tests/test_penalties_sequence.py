"""Weight penalties on recurrent and transformer nets: the default selection takes the recurrent
weights, the attention projections and the embedding table, and one callback step equals
autograd on the penalized loss (float64), for L1, L2 and ElasticNet, with SGD and Adam."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import AutogradPenalty, compose_config, quiet_trainer
from reglab.callbacks import WeightPenalty
from reglab.data.base import TensorDataModule
from reglab.module import RegLabModule
from reglab.regularization import select_parameters

STEPS, FEATURES, VOCAB, TOKENS = 4, 3, 7, 6
LSTM_SPEC = {"layers": [{"lstm": {"hidden_size": 5, "num_layers": 2, "dropout": 0.0}}]}
GRU_SPEC = {"layers": [{"gru": {"hidden_size": 5, "num_layers": 2, "output": "mean"}}]}
TRANSFORMER_SPEC = {
    "layers": [
        {"embedding": {"embedding_dim": 8}},
        {"positional_encoding": {"kind": "learned"}},
        {
            "transformer_encoder": {
                "nhead": 2,
                "num_layers": 1,
                "dim_feedforward": 16,
                "dropout": 0.0,
            }
        },
        {"sequence_pool": {"mode": "mean"}},
    ]
}
NETS = {
    "lstm": (LSTM_SPEC, "sequence"),
    "gru": (GRU_SPEC, "sequence"),
    "transformer": (TRANSFORMER_SPEC, "tokens"),
}
OPTIMIZERS = {
    "sgd_momentum": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9},
    "sgd_nesterov": {"_target_": "torch.optim.SGD", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "adam": {"_target_": "torch.optim.Adam", "lr": 0.01},
    "adamw": {"_target_": "torch.optim.AdamW", "lr": 0.01},
}
PENALTIES = [
    {"kind": "l1", "strength": 0.05},
    {"kind": "l2", "strength": 0.05},
    {"kind": "elastic_net", "strength": 0.05, "l1_ratio": 0.3},
]


class RandomSequences(TensorDataModule):
    """80 random float sequences (4 steps x 3 features) or token sequences (6 tokens of 7), 3
    classes; a fixed order (shuffle off) so that two runs see the same batches."""

    def __init__(self, layout: str) -> None:
        super().__init__(batch_size=16, val_fraction=0.1, test_fraction=0.1, standardize=False)
        self.layout = layout

    @property
    def vocab_size(self) -> int | None:
        return VOCAB if self.layout == "tokens" else None

    def load_arrays(self):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 3, 80)
        if self.layout == "tokens":
            return rng.integers(0, VOCAB, (80, TOKENS)), labels
        return rng.standard_normal((80, STEPS, FEATURES)).astype(np.float32), labels

    def setup(self, stage=None):
        super().setup(stage)
        self._loaders["train"].shuffle = False


def _module(net: str, optimizer: str, penalty: dict | None = None) -> RegLabModule:
    spec, layout = NETS[net]
    data = RandomSequences(layout)
    arguments = {
        "model": spec,
        "input_shape": list(data.input_shape),
        "num_outputs": 3,
        "optimizer": OPTIMIZERS[optimizer],
        "input_dtype": "int64" if layout == "tokens" else "float32",
        "vocab_size": data.vocab_size,
    }
    if penalty:
        return AutogradPenalty(**arguments, **penalty)
    return RegLabModule(**arguments)


def _fit(net: str, optimizer: str, penalty: dict, reference: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    module = _module(net, optimizer, penalty if reference else None)
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[] if reference else [WeightPenalty(**penalty)],
        accelerator="cpu",
        devices=1,
        precision="64-true",
    )
    trainer.fit(module, datamodule=RandomSequences(NETS[net][1]))
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_the_default_selection_takes_recurrent_attention_and_embedding_weights():
    lstm_names = {n for g in select_parameters(_module("lstm", "adam"), 0.1) for n in g.names}
    assert {
        f"net.lstm.rnn.weight_{kind}_l{layer}" for kind in ("ih", "hh") for layer in (0, 1)
    } <= (lstm_names)
    assert not any("bias" in name for name in lstm_names)
    names = {n for g in select_parameters(_module("transformer", "adam"), 0.1) for n in g.names}
    assert any(name.endswith("embedding.weight") for name in names)
    assert any(name.endswith("self_attn.in_proj_weight") for name in names)
    assert any(name.endswith("self_attn.out_proj.weight") for name in names)
    assert not any("norm" in name or "bias" in name for name in names)


# ElasticNet (both parts) with every optimizer on every net; L1 and L2 alone with Adam.
CASES = [
    *((net, PENALTIES[2], optimizer) for net in sorted(NETS) for optimizer in sorted(OPTIMIZERS)),
    *((net, penalty, "adam") for net in ("lstm", "transformer") for penalty in PENALTIES[:2]),
]


@pytest.mark.parametrize(
    ("net", "penalty", "optimizer"),
    CASES,
    ids=[f"{net}-{penalty['kind']}-{optimizer}" for net, penalty, optimizer in CASES],
)
def test_callback_step_equals_autograd_penalty_float64(net, penalty, optimizer):
    got = _fit(net, optimizer, penalty, reference=False)
    want = _fit(net, optimizer, penalty, reference=True)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-10, msg=name)


def test_an_exclude_pattern_keeps_the_embedding_table_unpenalized(tmp_path):
    cfg = compose_config(
        [
            "model=transformer_net",
            "data.layout=tokens",
            "regularization=l2",
            "regularization.exclude=[net.embedding.*]",
        ],
        tmp_path,
    )
    module = _module("transformer", "adam")
    names = {
        n
        for g in select_parameters(module, 0.1, exclude=list(cfg.regularization.exclude))
        for n in g.names
    }
    assert names and not any("embedding" in name for name in names)
