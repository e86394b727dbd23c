"""The one run-table reader: CSV, JSON lines and DataFrames, the column map, and one-line refusals naming the line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.tables import parse_columns, read_run_table


def test_csv_and_json_lines_read_the_same_columns(tmp_path):
    (tmp_path / "t.csv").write_text("run,N,loss,lr,extra\na,1e6,3.5,,x\nb,2e6,nan,0.001,y\n")
    with (tmp_path / "t.jsonl").open("w") as fh:
        fh.write(json.dumps(dict(run="a", N=1e6, loss=3.5, lr=None)) + "\n\n")
        fh.write(json.dumps(dict(run="b", N=2e6, loss=float("nan"), lr=0.001)) + "\n")
    for name, lines in (("t.csv", [2, 3]), ("t.jsonl", [1, 3])):
        table = read_run_table(tmp_path / name, ["N", "loss"], ["lr", "C"], ["run"])
        assert list(table.texts["run"]) == ["a", "b"] and list(table.lines) == lines
        assert table.numbers["N"].tolist() == [1e6, 2e6] and np.isnan(table.numbers["loss"][1])
        assert np.isnan(table.numbers["lr"][0]) and "C" not in table and "lr" in table
        assert table.where(1) == f"{tmp_path / name} line {lines[1]}"


def test_the_column_map_reads_other_tools_names(tmp_path):
    (tmp_path / "wandb.csv").write_text("Step,eval/c4/CrossEntropyLoss,optim/lr\n100,3.2,0.001\n200,3.0,0.002\n")
    columns = "step=Step,loss=eval/c4/CrossEntropyLoss,lr=optim/lr"
    table = read_run_table(tmp_path / "wandb.csv", ["step", "loss", "lr"], columns=columns)
    assert table.numbers["loss"].tolist() == [3.2, 3.0] and table.numbers["step"].tolist() == [100, 200]
    assert parse_columns("loss=a,b/c,lr=x") == {"loss": "a,b/c", "lr": "x"}  # a file's column may hold commas


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("N,loss\n1,2\n", dict(columns="los=x"), "--columns maps los, which the table does not read"),
        ("N,loss\n1,2\n", dict(columns="loss"), "is not NAME=COLUMN"),
        ("N,x\n1,2\n", dict(columns="loss=y"), r"lacks column\(s\) y \(for loss\)"),
        ("N\n1\n", {}, r"lacks column\(s\) loss"),
        ("N,loss\n1,\n", {}, "line 2: column loss is empty"),
        ("N,loss\n1,2\n3,abc\n", {}, "line 3: loss='abc' is not a number"),
        ("N,loss\n", {}, "has no rows"),
        ("", {}, "is empty"),
    ],
)
def test_bad_tables_are_refused_in_one_line_naming_the_row(tmp_path, text, kwargs, message):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(UserError, match=message):
        read_run_table(tmp_path / "t.csv", ["N", "loss"], **kwargs)


def test_value_checks_name_the_first_bad_row(tmp_path):
    (tmp_path / "t.csv").write_text("N,lr,loss\n1,0.1,3\n1,-0.1,3\n1,-2,inf\n")
    table = read_run_table(tmp_path / "t.csv", ["N", "lr", "loss"])
    with pytest.raises(UserError, match=r"line 3: lr=-0.1 must be positive \(and 1 more rows\)"):
        table.positive("N", "lr")
    with pytest.raises(UserError, match="line 4: loss=inf is not a finite number"):
        table.finite("loss")
    assert len(table.take(np.array([0]))) == 1
    with pytest.raises(UserError, match="does not exist"):
        read_run_table(tmp_path / "nope.csv", ["N"])
    with pytest.raises(UserError, match="line 1: not a JSON object"):
        (tmp_path / "t.jsonl").write_text("{bad\n")
        read_run_table(tmp_path / "t.jsonl", ["N"])


def test_a_dataframe_reads_like_a_file():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(dict(N=[1e6, 2e6], loss=[3.0, None], run=["a", None], status=["ok", float("nan")]))
    table = read_run_table(frame, ["N", "loss"], [], ["run", "status"])  # a NaN loss (diverged) is a number
    assert table.source == "DataFrame" and np.isnan(table.numbers["loss"][1]) and table.where(0) == "DataFrame row 1"
    assert list(table.texts["run"]) == ["a", ""] and list(table.texts["status"]) == ["ok", ""]
    with pytest.raises(UserError, match="DataFrame row 2: column N is empty"):
        read_run_table(pd.DataFrame(dict(N=pd.array([1, None], dtype="Int64"), loss=[1.0, 2.0])), ["N", "loss"])
