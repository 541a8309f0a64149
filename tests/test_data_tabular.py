"""data=tabular reads a CSV (or, with pyarrow, Parquet) table with a target column (fabricated here).

Numeric columns standardized and categorical ones one-hot encoded with the training rows only
(a category unseen there is all zeros), the task read from the target (auto) or forced, missing
values refused with the column and line unless filled, one error line per bad file or key, and a
run that trains.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from conftest import compose_config
from reglab.data import TabularDataModule
from reglab.errors import ConfigError
from reglab.run import run_one
from reglab.tasks import CLASSIFICATION, REGRESSION

COLORS = ("red", "green", "blue")


def rows(n: int = 60, seed: int = 0) -> list[dict]:
    """`n` rows: age (whole numbers), color (text), size (real), code (numbers that are codes),
    label (text, two classes) and price (real, a function of the others)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        age, size = int(rng.integers(20, 60)), float(rng.normal())
        out.append(
            {
                "age": age,
                "color": COLORS[i % 3],
                "size": round(size, 3),
                "code": [3, 7][i % 2],
                "label": ("yes", "no")[i % 2],
                "price": round(0.1 * age + 2 * size + 0.5 * (i % 3), 3),
            }
        )
    return out


def write_csv(path, table: list[dict], delimiter: str = ",") -> str:
    header = list(table[0])
    lines = [delimiter.join(header)]
    lines += [delimiter.join(str(row[c]) for c in header) for row in table]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def csv_file(tmp_path):
    return write_csv(tmp_path / "table.csv", rows())


def test_features_are_standardized_and_one_hot_encoded_with_training_rows(csv_file):
    module = TabularDataModule(path=csv_file, target="label", categorical=["code"])
    assert module.task == CLASSIFICATION and module.class_names == ["no", "yes"]
    assert module.num_classes == 2 and module.input_shape == (8,)
    splits = module.splits
    assert module.feature_names == [
        "age",
        "color=blue",
        "color=green",
        "color=red",
        "size",
        "code=3",
        "code=7",
        "price",
    ]
    assert sum(len(s.x) for s in splits.values()) == 60 and len(splits["test"].x) == 12
    train = splits["train"].x.numpy()
    numeric = train[:, [0, 4, 7]]
    assert np.allclose(numeric.mean(0), 0, atol=1e-5) and np.allclose(numeric.std(0), 1, atol=1e-5)
    one_hot = train[:, [1, 2, 3, 5, 6]]
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    assert np.all(train[:, 1:4].sum(1) == 1) and np.all(train[:, 5:7].sum(1) == 1)
    # the test rows are scaled with the training rows' statistics, not their own
    parts = module.split(module.load_arrays())  # the same seeded split of the rows
    ages = np.array([r["age"] for r in rows()], dtype=float)
    train_ages = ages[parts["train"][0]]
    expected = (ages[parts["test"][0]] - train_ages.mean()) / train_ages.std()
    assert np.allclose(splits["test"].x[:, 0].numpy(), expected, atol=1e-5)
    assert not np.allclose(splits["test"].x[:, 0].mean(), 0, atol=1e-3)


def test_a_category_unseen_in_training_is_all_zeros(tmp_path):
    table = rows()
    module = TabularDataModule(path=write_csv(tmp_path / "t.csv", table), target="label")
    test_rows = module.split(module.load_arrays())["test"][0]
    table[int(test_rows[0])]["color"] = "purple"  # only in a test row
    module = TabularDataModule(path=write_csv(tmp_path / "t.csv", table), target="label")
    test = module.splits["test"].x
    assert "color=purple" not in module.feature_names
    assert test[0, 1:4].tolist() == [0.0, 0.0, 0.0]  # the color columns
    assert torch.all(test[1:, 1:4].sum(1) == 1)


@pytest.mark.parametrize(
    ("target", "task", "expected"),
    [
        ("label", "auto", CLASSIFICATION),  # text
        ("code", "auto", CLASSIFICATION),  # two whole numbers
        ("price", "auto", REGRESSION),  # real numbers
        ("age", "auto", REGRESSION),  # whole numbers, more than 20 values
        ("code", CLASSIFICATION, CLASSIFICATION),
        ("code", REGRESSION, REGRESSION),
    ],
)
def test_the_task_is_read_from_the_target_or_forced(csv_file, target, task, expected):
    module = TabularDataModule(path=csv_file, target=target, task=task)
    assert module.task == expected
    splits = module.splits
    if expected == REGRESSION:
        assert module.num_classes is None and splits["train"].y.shape[1:] == (1,)
        y = splits["train"].y.numpy()  # standardized with the training rows
        assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-4
    else:
        values = sorted({r[target] for r in rows()})
        assert module.class_names == [str(v) for v in values]
        assert splits["train"].y.dtype == torch.long


def test_a_regression_run_trains_in_process(csv_file, tmp_path):
    data = ["data=tabular", f"data.path={csv_file}", "data.target=price", "data.categorical=[code]"]
    small = [
        "model=mlp",
        "model.width=8",
        "trainer.max_epochs=1",
        "logger=none",
        "monitor=val/loss",
    ]
    run_one(compose_config([*data, *small], tmp_path / "run"))
    assert (tmp_path / "run" / "metrics.json").exists()


def test_missing_values_are_refused_naming_column_and_line_unless_filled(tmp_path):
    table = rows()
    table[4]["size"], table[9]["color"] = "", "NA"
    path = write_csv(tmp_path / "holes.csv", table)
    with pytest.raises(ConfigError) as error:
        TabularDataModule(path=path, target="label")
    assert error.value.key == "path"
    assert error.value.message == (
        f"column 'color' has no value in line 11 of {path}: fill it in, or set "
        "data.fill_missing=true"
    )
    module = TabularDataModule(path=path, target="label", fill_missing=True)
    x = module.splits
    row = {int(r): k for k, r in enumerate(module.split(module.load_arrays())["train"][0])}
    train = x["train"].x
    if 9 in row:
        assert train[row[9], 1:4].tolist() == [0.0, 0.0, 0.0]
    if 4 in row:  # the training mean, standardized: 0
        assert abs(float(train[row[4], 4])) < 1e-6
    table[7]["label"] = "?"
    with pytest.raises(ConfigError) as error:
        TabularDataModule(
            path=write_csv(tmp_path / "holes.csv", table), target="label", fill_missing=True
        )
    assert "column 'label' has no value in line 9" in error.value.message
    assert "remove the row" in error.value.message


BAD_FILES = [
    ("ragged row", "a,b,y\n1,2,0\n3,0\n", "line 3 of", "2 fields, the header 3"),
    ("empty", "", "", "is empty"),
    ("infinite", "a,b,y\n1,2,0\ninf,1,1\n", "", "'inf' in line 3 of"),
    ("infinite target", "a,b,y\n1,2,0\n3,1,-inf\n", "", "'-inf' in line 3 of"),
    ("repeated column", "a,a,y\n1,2,0\n", "", "names the column 'a' twice"),
    ("header only", "a,b,y\n", "", "has no rows"),
]


@pytest.mark.parametrize(
    ("text", "where", "fragment"), [b[1:] for b in BAD_FILES], ids=[b[0] for b in BAD_FILES]
)
def test_a_bad_csv_is_one_error_naming_it(tmp_path, text, where, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        TabularDataModule(path=str(path), target="y")
    assert error.value.key == "path" and str(path) in error.value.message
    assert where in error.value.message and fragment in error.value.message
    assert "\n" not in error.value.message


@pytest.mark.parametrize(
    ("settings", "key", "fragment"),
    [
        ({"target": "lable"}, "target", "did you mean label?"),
        ({"target": "label", "categorical": ["colour"]}, "categorical", "did you mean color?"),
        ({"target": "label", "task": "ranking"}, "task", "auto, classification, regression"),
        ({"target": "label", "task": REGRESSION}, "target", "'yes' in line 2 of"),
        ({"target": "label", "fill_missing": "yes"}, "fill_missing", "true or false"),
        ({"target": "label", "path": "table.xlsx"}, "path", "must end in .csv, .parquet, .pq"),
        ({"target": "label", "path": "none.csv"}, "path", "is not a file"),
    ],
)
def test_bad_settings_name_their_key(csv_file, tmp_path, settings, key, fragment):
    settings = {**settings, "path": str(tmp_path / settings.get("path", "table.csv"))}
    with pytest.raises(ConfigError) as error:
        TabularDataModule(**settings)
    assert error.value.key == key and fragment in error.value.message


def test_a_delimiter_reads_other_separators(tmp_path):
    path = write_csv(tmp_path / "t.tsv.csv", rows(), delimiter=";")
    module = TabularDataModule(path=path, target="label", delimiter=";")
    assert module.input_shape == (7,)


def test_parquet_without_pyarrow_names_the_install(tmp_path, monkeypatch):
    path = tmp_path / "table.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if absent
    with pytest.raises(ConfigError) as error:
        TabularDataModule(path=str(path), target="label")
    assert error.value.key == "path" and "pip install pyarrow" in error.value.message


def test_parquet_gives_what_csv_gives(csv_file, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = rows()
    columns = {name: [row[name] for row in table] for name in table[0]}
    columns["size"][5] = float("nan")  # missing in Parquet: null or NaN (filled below as in CSV)
    columns["color"][8] = None
    parquet = tmp_path / "table.parquet"
    pq.write_table(pa.table(columns), parquet)
    csv_table = rows()
    csv_table[5]["size"], csv_table[8]["color"] = "", ""
    csv_path = write_csv(tmp_path / "same.csv", csv_table)
    with pytest.raises(ConfigError) as error:
        TabularDataModule(path=str(parquet), target="label")
    assert f"column 'color' has no value in row 9 of {parquet}" in error.value.message
    kwargs = {"target": "label", "fill_missing": True, "categorical": ["code"]}
    from_parquet = TabularDataModule(path=str(parquet), **kwargs)
    from_csv = TabularDataModule(path=csv_path, **kwargs)
    assert from_parquet.feature_names == from_csv.feature_names  # (after splits)
    for name, split in from_parquet.splits.items():
        assert torch.allclose(split.x, from_csv.splits[name].x)
        assert torch.equal(split.y, from_csv.splits[name].y)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError) as error:
        TabularDataModule(path=str(garbage), target="label")
    assert error.value.key == "path" and "cannot be read as Parquet" in error.value.message
