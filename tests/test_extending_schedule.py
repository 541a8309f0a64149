"""A new dropout schedule is one registered function and one YAML file, from this file alone.

The toy `cosine` schedule has a knob the built-in ones lack (`period`), with its own check (a
whole number >= 1) carried by its registry entry: its YAML, written by the test into its own config
folder (added through `hydra.searchpath`), inherits every shared knob from `dropout/schedule.yaml`
and adds `period`. Nothing else in reglab is touched.
"""

from __future__ import annotations

import math

import pytest

from conftest import SMALL_RUN, run_records, run_train_in_process
from reglab.callbacks import DropoutSchedule
from reglab.callbacks.dropout_schedule import SCHEDULES, Schedule, dropout_p, positive_int
from reglab.errors import ConfigError


def cosine(epoch: int, p: float, period: int) -> float:
    """p at epoch 0, falling along half a cosine to 0 at epoch `period`, back to p at 2 * period."""
    return p * 0.5 * (1 + math.cos(math.pi * epoch / period))


YAML = """\
# Cosine dropout (a toy schedule registered by a test).
defaults:
  - schedule
schedule: cosine
period: 4
"""


OPTION = ("dropout", "cosine", YAML)  # conftest's conf_dir writes it into a config folder


@pytest.fixture
def cosine_schedule(register) -> None:
    register(SCHEDULES, "cosine", Schedule(cosine, {"p": dropout_p, "period": positive_int}))


def _run_args(conf_dir: str) -> list[str]:
    return [conf_dir, *SMALL_RUN, "trainer.max_epochs=3", "callbacks=none", "early_stopping=none"]


def test_the_schedule_gets_only_its_own_knobs_and_checks_the_shared_ones(cosine_schedule):
    # The YAML carries every knob; cosine is called with p and period only.
    schedule = DropoutSchedule("cosine", p=0.4, period=2, p_start=0.0, switch_epoch=5, gamma=0.5)
    assert schedule.knobs == {"p": 0.4, "period": 2}
    assert [schedule.p_at(epoch) for epoch in range(5)] == pytest.approx([0.4, 0.2, 0, 0.2, 0.4])
    with pytest.raises(ConfigError) as error:
        DropoutSchedule("cosine", p=1.0, period=2)  # the shared knob keeps its range check
    assert error.value.key == "p"
    with pytest.raises(ConfigError) as error:
        DropoutSchedule("cosine", p=0.4)  # its own knob, without a default, is required
    assert error.value.key == "period"


@pytest.mark.parametrize("period", [0, 1.5, "four"])
def test_the_schedule_checks_its_own_knob(cosine_schedule, period):
    with pytest.raises(ConfigError) as error:
        DropoutSchedule("cosine", p=0.4, period=period)
    assert error.value.key == "period" and "\n" not in error.value.message
    # Another schedule picked: the YAML still carries period, and its check still holds.
    with pytest.raises(ConfigError) as error:
        DropoutSchedule("constant", p=0.4, period=period)
    assert error.value.key == "period"
    SCHEDULES.unregister("cosine")  # no schedule takes period now: a typo
    with pytest.raises(ConfigError, match="no dropout schedule takes it") as error:
        DropoutSchedule("constant", p=0.4, period=4)
    assert error.value.key == "period"


def test_a_check_of_a_knob_the_schedule_does_not_take_is_refused_at_registration():
    with pytest.raises(ValueError, match="perod"):
        Schedule(cosine, {"perod": positive_int})


def test_a_bad_period_in_a_run_is_one_line_naming_the_key(
    cosine_schedule, conf_dir, tmp_path, capsys
):
    code = run_train_in_process(
        [*_run_args(conf_dir), "dropout=cosine", "dropout.period=0"], cwd=tmp_path
    )
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("reglab: error: dropout.period")


def test_a_schedule_giving_p_outside_the_range_is_refused(register):
    def rising(epoch: int, p: float = 0.5) -> float:
        return p + 0.3 * epoch  # reaches 1.1 at epoch 2

    register(SCHEDULES, "rising", Schedule(rising))
    schedule = DropoutSchedule("rising", p=0.5)
    assert schedule.p_at(1) == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="rising gave p = 1.1.* at epoch 2") as error:
        schedule.p_at(2)
    assert error.value.key == "schedule"


def test_a_run_with_the_new_option_follows_its_formula(cosine_schedule, conf_dir, tmp_path):
    code = run_train_in_process([*_run_args(conf_dir), "dropout=cosine"], cwd=tmp_path)
    assert code == 0
    (record,) = run_records(tmp_path)
    assert record["status"] == "ok"
    expected = [cosine(epoch, p=0.5, period=4) for epoch in range(3)]  # p from schedule.yaml
    assert [row["dropout/p"] for row in record["history"]] == pytest.approx(expected, abs=1e-6)


def test_a_sweep_over_a_built_in_and_the_new_schedule(cosine_schedule, conf_dir, tmp_path):
    code = run_train_in_process(
        ["-m", *_run_args(conf_dir), "dropout=constant,cosine"], cwd=tmp_path
    )
    assert code == 0
    records = run_records(tmp_path)
    assert len(records) == 2
    assert all(record["status"] == "ok" for record in records)
    by_option = {
        next(o for o in record["overrides"] if o.startswith("dropout=")): record
        for record in records
    }
    assert [row["dropout/p"] for row in by_option["dropout=constant"]["history"]] == (
        pytest.approx([0.5, 0.5, 0.5])
    )
    assert by_option["dropout=cosine"]["history"][1]["dropout/p"] == pytest.approx(
        cosine(1, p=0.5, period=4), abs=1e-6
    )
