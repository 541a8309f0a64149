"""Dropout and eval-mode control: schedules, MC dropout, BatchNorm freezing, the audit.

Dropout control on sequence nets: recurrent, attention and drop-path dropout are reached.

nn.LSTM/nn.GRU dropout between stacked layers and nn.MultiheadAttention's attention dropout are
float attributes, not Dropout modules, and DropPath is reglab's own: the schedules, MC dropout and
the eval-mode audit must reach them all (`reglab.nn.modes.CARRIERS`). A TransformerEncoderLayer in
eval mode takes a fused fast path that skips its dropout, so MC passes put the layer itself in
train mode. The nets here are built from torch modules in this file.
"""

from __future__ import annotations

import logging
from collections import OrderedDict

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import compose_config, quiet_trainer, read_metrics
from reglab.callbacks import (
    ActivationMonitor,
    DropoutSchedule,
    EvalModeAudit,
    FreezeBatchNorm,
    MCDropout,
)
from reglab.callbacks.activation_monitor import first_tensor
from reglab.callbacks.mode_audit import audit_counts
from reglab.config import plain
from reglab.data import DigitsDataModule
from reglab.errors import ConfigError
from reglab.module import RegLabModule
from reglab.nn.drop_path import DropPath
from reglab.nn.modes import (
    carrier_counts,
    dropout_carriers,
    dropout_modules,
    dropout_rates,
    mc_predict,
    modes,
    set_dropout_p,
)
from reglab.run import run_one, train

# --- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"schedule": "constant", "p": 0.3}, [0.3, 0.3, 0.3, 0.3, 0.3, 0.3]),
        (
            {"schedule": "linear", "p_start": 0.0, "p_end": 0.5, "epochs": 6},
            [0, 0.1, 0.2, 0.3, 0.4, 0.5],
        ),
        (
            {"schedule": "step", "p": 0.4, "step_size": 2, "gamma": 0.5},
            [0.4, 0.4, 0.2, 0.2, 0.1, 0.1],
        ),
        ({"schedule": "early", "p": 0.3, "switch_epoch": 2}, [0.3, 0.3, 0, 0, 0, 0]),
        ({"schedule": "late", "p": 0.3, "switch_epoch": 4}, [0, 0, 0, 0, 0.3, 0.3]),
    ],
    ids=lambda v: v["schedule"] if isinstance(v, dict) else None,
)
def test_schedule_values(kwargs, expected):
    schedule = DropoutSchedule(**kwargs)
    assert [schedule.p_at(epoch) for epoch in range(6)] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"p": 1.0}, "p"),
        ({"p": -0.1}, "p"),
        ({"p_end": 1.2}, "p_end"),
        ({"schedule": "cosine"}, "schedule"),
        ({"switch_epoch": -1}, "switch_epoch"),
        ({"epochs": 0}, "epochs"),
        ({"gamma": 1.5}, "gamma"),
        ({"swich_epoch": 3}, "swich_epoch"),  # a typo: no schedule takes it
    ],
)
def test_bad_schedule_values(kwargs, key):
    with pytest.raises(ConfigError) as error:
        DropoutSchedule(**kwargs)
    assert error.value.key == key


def test_schedule_sets_every_kind_of_dropout_layer_each_epoch(tmp_path):
    spec = {
        "layers": [
            {"conv3d": {"out_channels": 2, "kernel_size": 1}},
            "dropout3d",
            "flatten",
            {"linear": {"out_features": 8}},
            "dropout",
            "selu",
            "alpha_dropout",
        ]
    }
    module = RegLabModule(spec, [1, 2, 2, 2], 3)
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                seen.append({type(m).__name__: m.p for m in dropout_modules(pl_module)})

    from reglab.data import VolumesDataModule

    trainer = quiet_trainer(
        max_epochs=4,
        callbacks=[DropoutSchedule("linear", p_start=0.0, p_end=0.3, epochs=4), Record()],
    )
    trainer.fit(module, datamodule=VolumesDataModule(n_samples=60, size=2))
    assert [set(row) for row in seen] == [{"Dropout3d", "Dropout", "AlphaDropout"}] * 4
    for epoch, row in enumerate(seen):
        assert all(p == pytest.approx(0.1 * epoch) for p in row.values())


def test_schedule_in_a_run_logs_p(tmp_path):
    cfg = compose_config(
        [
            "model=mlp",
            "dropout=schedule",
            "dropout.schedule=early",
            "dropout.switch_epoch=2",
            "trainer.max_epochs=3",
        ],
        tmp_path / "run",
    )
    train(cfg)
    history = read_metrics(tmp_path / "run")["history"]
    assert [row["dropout/p"] for row in history] == pytest.approx([0.5, 0.5, 0.0])


def test_schedule_without_dropout_layers_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="no dropout layer"):
        train(make_cfg("model=fit_tanh", "data=function", "dropout=schedule"))


# --- MC dropout ----------------------------------------------------------------------------------


def _trained(model: str, tmp_path) -> tuple[RegLabModule, DigitsDataModule]:
    cfg = compose_config(
        [f"model={model}", "trainer.max_epochs=2", "logger=none"], tmp_path / model
    )
    train(cfg)
    module = RegLabModule.load_from_checkpoint(read_metrics(tmp_path / model)["best_checkpoint"])
    return module, DigitsDataModule()


@pytest.mark.parametrize(("model", "layer"), [("selu_net", nn.AlphaDropout), ("cnn", nn.Dropout2d)])
def test_mc_passes_differ_in_test_and_batchnorm_stats_stay(tmp_path, model, layer):
    module, data = _trained(model, tmp_path)
    assert any(isinstance(m, layer) for m in module.modules())
    buffers = {
        k: v.clone() for k, v in module.state_dict().items() if "running" in k or "tracked" in k
    }
    modes_before = [m.training for m in module.modules()]
    trainer = quiet_trainer()
    plain = trainer.test(module, datamodule=data, verbose=False)[0]
    trainer = quiet_trainer(callbacks=[MCDropout(10)])
    with_mc = trainer.test(module, datamodule=data, verbose=False)[0]
    assert with_mc["test/mc_spread"] > 1e-4  # the passes differ
    assert 0 < with_mc["test/mc_entropy"] <= torch.log(torch.tensor(10.0)).item()
    assert with_mc["test/acc"] == plain["test/acc"]  # the deterministic metric is untouched
    for name, value in buffers.items():
        assert torch.equal(module.state_dict()[name], value), name
    assert [m.training for m in module.modules()] == modes_before  # MC restored every mode

    x = data.splits["test"].x[:16]
    passes = mc_predict(module.net, x, 3)
    assert not torch.allclose(passes[0], passes[1])


def test_mc_predict_is_the_mean_of_dropout_on_passes_and_trainer_predict_is_deterministic(
    tmp_path,
):
    module, data = _trained("cnn", tmp_path)
    plain_predictions = torch.cat(quiet_trainer().predict(module, datamodule=data))
    # trainer.predict is deterministic, with or without the MC-dropout callback.
    with_mc = torch.cat(quiet_trainer(callbacks=[MCDropout(8)]).predict(module, datamodule=data))
    torch.testing.assert_close(with_mc, plain_predictions)
    data.setup("predict")
    first_batch = next(iter(data.predict_dataloader()))[0]
    module.eval()
    torch.manual_seed(0)
    averaged = mc_predict(module.net, first_batch, 8).mean(0)
    assert not any(m.training for m in module.modules())  # mc_predict restored every mode
    assert averaged.shape == plain_predictions[: len(first_batch)].shape
    torch.testing.assert_close(averaged.sum(1), torch.ones(len(averaged)))
    assert (averaged - plain_predictions[: len(first_batch)]).abs().max() > 1e-3  # dropout was on
    # Same seed, same passes: the MC prediction is exactly the mean of manual dropout-on passes.
    torch.manual_seed(0)
    for layer in dropout_modules(module.net):
        layer.train()
    with torch.no_grad():
        manual = torch.stack([module.net(first_batch).softmax(-1) for _ in range(8)]).mean(0)
    module.eval()
    torch.testing.assert_close(averaged, manual)
    again = torch.cat(quiet_trainer().predict(module, datamodule=data))
    torch.testing.assert_close(again, plain_predictions)  # deterministic afterwards


def test_mc_in_a_run_logs_val_and_test(make_cfg, tmp_path):
    train(make_cfg("model=mlp", "dropout=mc", "dropout.samples=4", "trainer.max_epochs=2"))
    metrics = read_metrics(tmp_path / "run")
    assert {"val/mc_acc", "val/mc_entropy"} <= set(metrics["final"])
    assert {"test/mc_acc", "test/mc_loss", "test/mc_entropy", "test/mc_spread"} <= set(
        metrics["test"]
    )


def test_mc_samples_at_the_model_dropout_p_in_training_and_evaluation(make_cfg, tmp_path):
    seen = []

    class Record(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen.extend(m.p for m in dropout_modules(pl_module))

        def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen.extend(m.p for m in dropout_modules(pl_module))

    cfg = make_cfg("model=mlp", "model.dropout=0.3", "dropout=mc")
    cfg.trainer.max_epochs = 1
    run_one(cfg, extra_callbacks=[Record()])
    assert seen and all(p == 0.3 for p in seen)
    assert read_metrics(tmp_path / "run")["test"]["test/mc_spread"] > 0  # p = 0 would give 0


def test_bad_mc_values(make_cfg):
    with pytest.raises(ConfigError, match="samples"):
        MCDropout(samples=1)
    with pytest.raises(ConfigError, match=r"stages\[1\]"):
        MCDropout(stages=["val", "predict"])  # trainer.predict is deterministic; see mc_predict
    with pytest.raises(TypeError):
        MCDropout(p=0.3)  # MC samples at the model's p (model.dropout); dropout.p is a schedule's
    with pytest.raises(ConfigError, match="dropout: MC dropout needs a model with dropout"):
        train(make_cfg("model=fit_tanh", "data=function", "dropout=mc"))
    with pytest.raises(ConfigError, match="classification"):
        train(make_cfg("model=mlp", "data=regression", "dropout=mc"))


# --- BatchNorm freezing ---------------------------------------------------------------------------


@pytest.mark.parametrize("freeze_affine", [False, True])
def test_freeze_bn_stops_running_stats_and_survives_validation(make_cfg, freeze_affine):
    cfg = make_cfg("model=mlp", "model.norm=batch_norm1d")
    module = RegLabModule(plain(cfg.model), [64], 10)
    snapshots, modes = [], []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            bn = pl_module.net.block_1.batch_norm1d
            snapshots.append((bn.running_mean.clone(), bn.weight.detach().clone()))

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            modes.append((trainer.current_epoch, pl_module.net.block_1.batch_norm1d.training))

    trainer = quiet_trainer(
        max_epochs=4,
        callbacks=[FreezeBatchNorm(switch_epoch=2, freeze_affine=freeze_affine), Record()],
    )
    trainer.fit(module, datamodule=DigitsDataModule(layout="flat"))
    assert not torch.equal(snapshots[0][0], snapshots[1][0])  # moving before the freeze
    assert torch.equal(snapshots[1][0], snapshots[2][0]) and torch.equal(
        snapshots[2][0], snapshots[3][0]
    )
    assert all(training == (epoch < 2) for epoch, training in modes)
    assert torch.equal(snapshots[1][1], snapshots[3][1]) == freeze_affine


def test_freeze_bn_needs_batchnorm(make_cfg):
    with pytest.raises(ConfigError, match="BatchNorm"):
        train(make_cfg("model=selu_net", "batchnorm=freeze"))
    with pytest.raises(ConfigError) as error:
        FreezeBatchNorm(switch_epoch=-1)
    assert error.value.key == "switch_epoch"


# --- the audit -------------------------------------------------------------------------------------


def test_audit_catches_dropout_left_on_in_validation():
    class ForgetsEval(L.Callback):
        def on_validation_epoch_start(self, trainer, pl_module):
            pl_module.train()  # a buggy hook: dropout on during validation

    module = RegLabModule(
        {"layers": ["flatten", {"linear": {"out_features": 8}}, "dropout"]}, [64], 10
    )
    trainer = quiet_trainer(
        max_epochs=1,
        callbacks=[ForgetsEval(), EvalModeAudit()],
    )
    with pytest.raises(
        RuntimeError,
        match=r"validation ran with modules in train mode .*: \(root\), flatten, linear, dropout",
    ):
        trainer.fit(module, datamodule=DigitsDataModule(layout="flat"))


# --- the overfitting fixture: dropout narrows the gap ------------------------------------------------


@pytest.mark.slow  # about 20 s or more; CI runs the slow tests
@pytest.mark.parametrize("seed", [0, 1])
def test_dropout_narrows_the_train_val_gap_under_label_noise(tmp_path, seed):
    finals = {}
    for p in (0.0, 0.5):
        run_dir = tmp_path / f"p{p}"
        cfg = compose_config(
            [
                "model=mlp",
                "model.width=512",
                f"model.dropout={p}",
                "data.label_noise=0.3",
                "early_stopping=none",
                "trainer.max_epochs=60",
                "logger=none",
                f"seed={seed}",
            ],
            run_dir,
        )
        train(cfg)
        finals[p] = read_metrics(run_dir)["final"]
    gap = {p: f["train/acc"] - f["val/acc"] for p, f in finals.items()}
    assert gap[0.5] < gap[0.0] - 0.05, gap
    assert finals[0.5]["val/acc"] > finals[0.0]["val/acc"] + 0.01, finals


# --- sequence nets --------------------------------------------------------------------------------

FEATURES, WIDTH, STEPS, CLASSES, VOCAB = 8, 16, 6, 4, 17


class Steps(nn.Module):
    """The output sequence (N, T, H) of a recurrent module, which returns (output, state)."""

    def __init__(self, rnn: nn.RNNBase) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, F) -> (N, T, H)."""
        return self.rnn(x)[0]


class SelfAttention(nn.Module):
    """x + multi-head self-attention of x."""

    def __init__(self, width: int, p: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, 2, dropout=p, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, H) -> (N, T, H)."""
        return x + self.attention(x, x, x, need_weights=False)[0]


class Residual(nn.Module):
    """x + DropPath(linear(x)): a residual branch under stochastic depth."""

    def __init__(self, width: int, p: float) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.drop_path = DropPath(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T, H) -> (N, T, H)."""
        return x + self.drop_path(self.linear(x))


class MeanSteps(nn.Module):
    """(N, T, H) -> (N, H): the mean over the steps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Average the steps away."""
        return x.mean(dim=1)


def encoder_layer(p: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(WIDTH, 2, dim_feedforward=32, dropout=p, batch_first=True)


def sequence_net(p: float = 0.2) -> nn.Sequential:
    """Every carrier kind, a one-layer LSTM (no dropout to reach) and a BatchNorm."""
    return nn.Sequential(
        OrderedDict(
            lstm=Steps(nn.LSTM(FEATURES, WIDTH, num_layers=2, dropout=p, batch_first=True)),
            gru=Steps(nn.GRU(WIDTH, WIDTH, num_layers=2, dropout=p, batch_first=True)),
            single=Steps(nn.LSTM(WIDTH, WIDTH, batch_first=True)),
            encoder=encoder_layer(p),
            attention=SelfAttention(WIDTH, p),
            residual=Residual(WIDTH, p),
            pool=MeanSteps(),
            norm=nn.BatchNorm1d(WIDTH),
            dropout=nn.Dropout(p),
            head=nn.Linear(WIDTH, CLASSES),
        )
    )


def token_net(p: float = 0.2) -> nn.Sequential:
    """Embedding -> a 2-layer nn.TransformerEncoder -> mean over the steps -> head."""
    return nn.Sequential(
        OrderedDict(
            embedding=nn.Embedding(VOCAB, WIDTH),
            encoder=nn.TransformerEncoder(encoder_layer(p), 2, enable_nested_tensor=False),
            pool=MeanSteps(),
            head=nn.Linear(WIDTH, CLASSES),
        )
    )


# The carriers of sequence_net by name; `single` (num_layers == 1) is none.
CARRIERS_OF_SEQUENCE_NET = {
    "lstm.rnn": "recurrent",
    "gru.rnn": "recurrent",
    "encoder.self_attn": "attention",
    "encoder.dropout": "dropout",
    "encoder.dropout1": "dropout",
    "encoder.dropout2": "dropout",
    "attention.attention": "attention",
    "residual.drop_path": "drop_path",
    "dropout": "dropout",
}


def carrier_names(net: nn.Module) -> dict[str, str]:
    """name -> kind of every carrier dropout_carriers finds."""
    names = {id(m): name for name, m in net.named_modules()}
    return {names[id(m)]: kind for kind, m in dropout_carriers(net)}


class Sequences(L.LightningDataModule):
    """Random sequences (float features, or token ids with `tokens`) with class labels."""

    def __init__(self, tokens: bool = False, n: int = 64) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        if tokens:
            self.x = torch.randint(0, VOCAB, (n, STEPS), generator=generator)
        else:
            self.x = torch.randn(n, STEPS, FEATURES, generator=generator)
        self.y = torch.randint(0, CLASSES, (n,), generator=generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=32)

    test_dataloader = val_dataloader


def module_with(net: nn.Module) -> RegLabModule:
    """A classification RegLabModule whose net is replaced by `net`."""
    module = RegLabModule({"layers": ["flatten"]}, [FEATURES], CLASSES)
    module.net = net
    return module


# --- sequence nets: the carriers ------------------------------------------------------------------


def test_every_kind_of_carrier_is_found_and_a_one_layer_rnn_is_none():
    net = sequence_net(0.2)
    assert carrier_names(net) == CARRIERS_OF_SEQUENCE_NET
    assert dropout_rates(net) == pytest.approx(dict.fromkeys(CARRIERS_OF_SEQUENCE_NET, 0.2))
    assert carrier_counts(net) == {"attention": 2, "drop_path": 1, "dropout": 4, "recurrent": 2}
    assert len(dropout_modules(net)) == 4  # still torch's Dropout layers only
    assert audit_counts(net) == "4 dropout, 2 attention, 1 drop path, 2 recurrent, 1 batchnorm"
    plain = nn.Sequential(nn.Linear(3, 3), nn.Dropout(), nn.Dropout2d())
    assert audit_counts(plain) == "2 dropout, 0 batchnorm"  # the line as before issue 11


def test_set_dropout_p_sets_every_rate_and_leaves_a_one_layer_rnn_alone():
    net = sequence_net(0.2)
    set_dropout_p(net, 0.4)
    assert dropout_rates(net) == pytest.approx(dict.fromkeys(CARRIERS_OF_SEQUENCE_NET, 0.4))
    assert net.lstm.rnn.dropout == 0.4 and net.encoder.self_attn.dropout == 0.4
    assert net.residual.drop_path.p == 0.4
    assert net.single.rnn.dropout == 0.0  # torch ignores it with num_layers == 1
    set_dropout_p(net, 0.1, kinds=["drop_path", "Recurrent"])
    rates = dropout_rates(net)
    changed = {
        name
        for name, kind in CARRIERS_OF_SEQUENCE_NET.items()
        if kind in ("drop_path", "recurrent")
    }
    assert {name for name, rate in rates.items() if rate == pytest.approx(0.1)} == changed
    assert all(rates[name] == pytest.approx(0.4) for name in rates.keys() - changed)


@pytest.mark.parametrize("part", ["lstm", "gru", "encoder", "attention", "residual"])
def test_the_rate_set_is_the_rate_the_module_applies_in_train_mode(part):
    net = sequence_net(0.0)
    module = getattr(net, part).train()
    torch.manual_seed(0)
    x = torch.randn(16, STEPS, FEATURES if part == "lstm" else WIDTH)
    with torch.no_grad():
        assert torch.equal(module(x), module(x))  # rate 0: deterministic
        set_dropout_p(module, 0.5)
        assert not torch.allclose(module(x), module(x))  # the attribute drives the randomness


# --- sequence nets: schedules ---------------------------------------------------------------------


def test_a_schedule_drives_recurrent_attention_and_drop_path_rates_each_epoch():
    seen, evaluated = [], []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                training = {m.training for _, m in dropout_carriers(pl_module.net)}
                seen.append((trainer.current_epoch, dropout_rates(pl_module.net), training))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 0 and not trainer.sanity_checking:
                evaluated.append({m.training for _, m in dropout_carriers(pl_module.net)})

    schedule = DropoutSchedule("linear", p_start=0.0, p_end=0.3, epochs=4)
    module = module_with(sequence_net(0.2))
    quiet_trainer(max_epochs=4, callbacks=[schedule, Record()]).fit(module, datamodule=Sequences())
    assert [epoch for epoch, _, _ in seen] == [0, 1, 2, 3]
    for epoch, rates, training in seen:
        expected = 0.0 + epoch / (4 - 1) * (0.3 - 0.0)  # linear: p_start -> p_end at epochs - 1
        assert set(rates) == set(CARRIERS_OF_SEQUENCE_NET)
        assert all(rate == pytest.approx(expected) for rate in rates.values()), (epoch, rates)
        assert training == {True}
    assert evaluated == [{False}] * 4  # Lightning's eval mode turns every carrier off
    assert module.net.single.rnn.dropout == 0.0


def test_a_schedule_limited_to_drop_path_drives_stochastic_depth_only():
    module = module_with(sequence_net(0.2))
    schedule = DropoutSchedule("constant", kinds=["drop_path"], p=0.35)
    quiet_trainer(max_epochs=1, callbacks=[schedule]).fit(module, datamodule=Sequences())
    rates = dropout_rates(module.net)
    assert rates.pop("residual.drop_path") == pytest.approx(0.35)
    assert rates == pytest.approx(dict.fromkeys(rates, 0.2))


def test_controls_refuse_a_net_without_any_carrier():
    # A one-layer LSTM has a dropout attribute that torch ignores: nothing to reach.
    module = module_with(
        nn.Sequential(Steps(nn.LSTM(FEATURES, WIDTH, batch_first=True)), MeanSteps())
    )
    with pytest.raises(ConfigError, match="no dropout layer for the schedule to set") as error:
        DropoutSchedule().check(module)
    assert error.value.key == "" and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="MC dropout needs a model with dropout") as error:
        MCDropout().check(module)
    assert error.value.key == "" and "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="no dropout of kind attention") as error:
        DropoutSchedule(kinds=["attention"]).check(module_with(nn.Sequential(nn.Dropout())))
    assert error.value.key == "kinds"
    with pytest.raises(
        ConfigError, match="valid: attention, drop_path, dropout, recurrent"
    ) as error:
        DropoutSchedule(kinds=["dropout", "recurent"])
    assert error.value.key == "kinds[1]"
    # One carrier of any kind is enough.
    for net in (nn.Sequential(DropPath(0.1)), nn.Sequential(encoder_layer(0.1))):
        DropoutSchedule().check(module_with(net))
        MCDropout().check(module_with(net))


def test_the_kinds_of_a_schedule_are_checked_under_the_dropout_group(make_cfg):
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", "dropout=schedule", "dropout.kinds=[recurrent]"))
    assert error.value.key == "dropout.kinds" and "no dropout of kind recurrent" in str(error.value)
    with pytest.raises(ConfigError) as error:
        train(make_cfg("model=mlp", "dropout=schedule", "dropout.kinds=[dropout,atention]"))
    assert error.value.key == "dropout.kinds[1]"


# --- sequence nets: MC dropout --------------------------------------------------------------------


def test_mc_passes_run_with_every_carrier_on_and_only_them_and_restore_every_mode():
    torch.manual_seed(0)
    net = sequence_net(0.3)
    net(torch.randn(8, STEPS, FEATURES))  # BatchNorm running statistics away from their init
    net.eval()
    net.head.train()  # a mixed state, to be restored as it was
    before = modes(net)
    buffers = {
        k: v.clone() for k, v in net.state_dict().items() if "running" in k or "tracked" in k
    }
    seen: dict[str, set[bool]] = {}
    # (A hook on any of its modules keeps a TransformerEncoderLayer off its fused eval path, so
    # every carrier is seen here; test_mc_passes_through_a_transformer_encoder_stack has no hooks.)
    watched = [*CARRIERS_OF_SEQUENCE_NET, "norm", "encoder.linear1", "encoder.norm1", "head"]
    handles = [
        net.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.setdefault(name, set()).add(m.training)
        )
        for name in watched
    ]
    x = torch.randn(5, STEPS, FEATURES)
    passes = mc_predict(net, x, 3)
    for handle in handles:
        handle.remove()
    assert passes.shape == (3, 5, CLASSES)
    torch.testing.assert_close(passes.sum(-1), torch.ones(3, 5))
    assert not torch.allclose(passes[0], passes[1])
    assert {name: seen[name] for name in CARRIERS_OF_SEQUENCE_NET} == dict.fromkeys(
        CARRIERS_OF_SEQUENCE_NET, {True}
    )
    assert seen["norm"] == {False} and seen["encoder.linear1"] == {False}
    assert seen["encoder.norm1"] == {False} and seen["head"] == {True}
    assert modes(net) == before
    for name, value in buffers.items():
        assert torch.equal(net.state_dict()[name], value), name


@pytest.mark.parametrize("kind", ["dropout", "drop_path", "recurrent", "attention"])
def test_mc_passes_sample_each_kind_of_dropout(kind):
    torch.manual_seed(0)
    net = sequence_net(0.0).eval()
    x = torch.randn(16, STEPS, FEATURES)
    passes = mc_predict(net, x, 2)
    assert torch.equal(passes[0], passes[1])  # every rate 0: nothing else is random
    set_dropout_p(net, 0.5, kinds=[kind])
    passes = mc_predict(net, x, 2)
    assert not torch.allclose(passes[0], passes[1])


def test_mc_passes_through_a_transformer_encoder_stack():
    # No hook attached: in eval mode each encoder layer would take its fused path, which skips its
    # dropout; the layers' dropout is the net's only randomness.
    torch.manual_seed(0)
    net = token_net(0.2).eval()
    x = torch.randint(0, VOCAB, (5, STEPS))
    passes = mc_predict(net, x, 2)
    assert not torch.allclose(passes[0], passes[1])
    assert set(modes(net).values()) == {"eval"}


def test_the_mc_callback_samples_a_sequence_net_and_restores_its_modes():
    torch.manual_seed(0)
    module = module_with(sequence_net(0.3)).eval()
    data = Sequences()
    before = [m.training for m in module.modules()]
    plain = quiet_trainer().test(module, datamodule=data, verbose=False)[0]
    with_mc = quiet_trainer(callbacks=[MCDropout(4)]).test(module, datamodule=data, verbose=False)[
        0
    ]
    assert with_mc["test/mc_spread"] > 1e-4
    assert with_mc["test/acc"] == plain["test/acc"]
    assert [m.training for m in module.modules()] == before


# --- sequence nets: eval mode ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [sequence_net, token_net])
def test_eval_mode_turns_every_carrier_off_on_the_fast_path_and_off_it(make):
    torch.manual_seed(0)
    net = make(0.5)
    x = (
        torch.randn(5, STEPS, FEATURES)
        if make is sequence_net
        else torch.randint(0, VOCAB, (5, STEPS))
    )
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))  # p = 0.5 in training
    net.eval()
    with torch.no_grad():  # no gradient: the encoder layers' fused fast path
        fast = net(x)
        assert torch.equal(fast, net(x))
    slow = net(x)  # gradients on: the layers' own path, through their (inactive) dropout
    assert torch.equal(slow, net(x))
    torch.testing.assert_close(slow.detach(), fast, rtol=1e-4, atol=1e-5)


# --- sequence nets: the audit ---------------------------------------------------------------------


def test_the_audit_counts_the_carriers_in_its_one_line(caplog):
    caplog.set_level(logging.INFO, logger="reglab")
    module = module_with(sequence_net(0.2))
    trainer = quiet_trainer(max_epochs=1, callbacks=[EvalModeAudit()])
    trainer.fit(module, datamodule=Sequences())
    lines = [r.getMessage() for r in caplog.records if "eval mode ok" in r.getMessage()]
    assert lines == [
        "reglab: eval mode ok: 4 dropout, 2 attention, 1 drop path, 2 recurrent, 1 batchnorm"
    ]


def test_the_audit_catches_an_lstm_left_in_train_mode():
    class ForgetsEval(L.Callback):
        def on_validation_epoch_start(self, trainer, pl_module):
            pl_module.net.lstm.rnn.train()  # a buggy hook: recurrent dropout on during validation

    module = module_with(sequence_net(0.2))
    trainer = quiet_trainer(max_epochs=1, callbacks=[ForgetsEval(), EvalModeAudit()])
    with pytest.raises(
        RuntimeError, match=r"validation ran with modules in train mode .*: lstm\.rnn$"
    ):
        trainer.fit(module, datamodule=Sequences())


# --- sequence nets: the activation monitor --------------------------------------------------------


def test_first_tensor_takes_what_a_layer_passes_on():
    out, h, c = torch.ones(2, 3, 4), torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)
    assert first_tensor(out) is out
    assert first_tensor((out, (h, c))) is out  # nn.LSTM
    assert first_tensor((None, out)) is out
    assert first_tensor(None) is None


def _monitored(net: nn.Module, data: Sequences) -> tuple[dict, list[torch.dtype]]:
    """The monitor's record of `net` as initialized, and the dtypes the net's first layer got."""
    dtypes = []
    first = next(net.children())
    first.register_forward_pre_hook(lambda m, inputs: dtypes.append(inputs[0].dtype))
    monitor = ActivationMonitor(every_n_epochs=1, max_samples=64)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=[monitor])
    trainer.fit(module_with(net), datamodule=data)
    assert [r["epoch"] for r in monitor.records] == [-1, 0]
    for record in monitor.records:
        for stat in ("mean", "var"):
            assert all(torch.isfinite(torch.tensor(v)) for v in record[stat].values())
    return monitor.records[0], dtypes


def test_the_monitor_measures_recurrent_and_attention_layers():
    torch.manual_seed(0)
    record, _ = _monitored(sequence_net(0.2), Sequences())
    mean, var = record["mean"], record["var"]
    for name in ("lstm.rnn", "gru.rnn", "single.rnn"):  # tanh-bounded sequences (N, T, H)
        assert abs(mean[name]) < 1 and 0 < var[name] < 1, name
    # The encoder layer as a whole, and its children: the hook takes it off its fused path.
    assert {"encoder", "encoder.linear1", "encoder.norm2", "attention.attention"} <= set(mean)
    assert mean["encoder"] == pytest.approx(mean["encoder.norm2"])  # post-norm: its output
    assert abs(mean["encoder.norm2"]) < 1e-4 and var["encoder.norm2"] == pytest.approx(1, abs=0.02)
    assert var["residual.linear"] > 0 and "residual.drop_path" in mean
    assert {"lstm.rnn.weight_hh_l1", "encoder.self_attn.in_proj_weight"} <= set(
        record["weight_norm"]
    )


def test_the_monitor_feeds_token_ids_as_integers():
    torch.manual_seed(0)
    record, dtypes = _monitored(token_net(0.2), Sequences(tokens=True))
    assert set(dtypes) == {torch.int64}  # training and the monitor's passes alike
    assert record["var"]["embedding"] > 0 and record["var"]["encoder.layers.1"] > 0
    assert "encoder.layers.0.linear1" in record["mean"]


# --- sequence nets: end to end: the catalogue's lstm and transformer_encoder entries, through the CLI config ---


def test_a_schedule_on_lstm_net_drives_the_lstm_dropout_in_a_run(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="reglab")
    rates = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                rates.append(dropout_rates(pl_module.net))

    overrides = [
        "model=lstm_net",
        "model.width=16",
        "data.layout=sequence",
        "dropout=schedule",
        "dropout.p_start=0.0",
        "dropout.p_end=0.4",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=3",
        "logger=none",
    ]
    run_one(compose_config(overrides, tmp_path / "run"), extra_callbacks=[Record()])
    # The spec's lstm entry holds the nn.LSTM as `.rnn`; its rate follows the linear schedule.
    assert [set(row) for row in rates] == [{"lstm.rnn"}] * 3
    assert [row["lstm.rnn"] for row in rates] == pytest.approx([0.0, 0.2, 0.4])
    history = read_metrics(tmp_path / "run")["history"]
    assert [row["dropout/p"] for row in history] == pytest.approx([0.0, 0.2, 0.4])
    lines = [r.getMessage() for r in caplog.records if "eval mode ok" in r.getMessage()]
    assert lines == ["reglab: eval mode ok: 0 dropout, 1 recurrent, 0 batchnorm"]


def test_mc_dropout_on_transformer_net_samples_inside_the_encoder_layers(tmp_path):
    overrides = [
        "model=transformer_net",
        "model.width=16",
        "model.heads=2",
        "model.depth=1",
        "data.layout=tokens",
        "dropout=mc",
        "dropout.samples=3",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "logger=none",
    ]
    run_one(compose_config(overrides, tmp_path / "run"))
    # The encoder layer's dropout is the net's only randomness, and in eval mode (no hooks
    # attached) the layer takes its fused path, which skips it: the MC passes left that path.
    assert read_metrics(tmp_path / "run")["test"]["test/mc_spread"] > 1e-4
