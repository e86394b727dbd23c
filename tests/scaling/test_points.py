"""Fit input points and the fit CSV reader: every user mistake is a UserError that says where."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.points import FitPoints, budget_labels, read_fit_csv, read_fit_table


def _arrays(n: int = 8) -> dict[str, np.ndarray]:
    return {"N": np.geomspace(1e7, 1e9, n), "D": np.geomspace(1e9, 1e11, n), "loss": np.linspace(3.0, 2.5, n)}


def _write(tmp_path, text: str):
    path = tmp_path / "points.csv"
    path.write_text(text)
    return path


GOOD = "N,D,loss\n" + "".join(f"{1e7 * (i + 1)},{1e9 * (i + 1)},{3.0 - 0.1 * i}\n" for i in range(8))


def test_fit_points_default_groups_and_labels():
    pts = FitPoints(**_arrays())
    assert len(pts) == 8 and pts.N.dtype == np.float64
    index, n_groups = pts.group_index
    assert n_groups == 8 and list(index) == list(range(8))
    pts = FitPoints(**_arrays(), group=np.array(["r1", "r1", "r2", "r2", "r3", "r3", "r4", "r4"]))
    index, n_groups = pts.group_index
    assert n_groups == 4 and list(index) == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(N=np.geomspace(1e7, 1e9, 7)), "same length"),
        (dict(loss=np.r_[np.linspace(3, 2.5, 7), np.nan]), "loss must be positive and finite"),
        (dict(D=np.r_[-1.0, np.geomspace(1e9, 1e11, 7)]), "D must be positive"),
        (dict(N=np.r_[0.0, np.geomspace(1e7, 1e9, 7)]), "N must be positive"),
        (dict(N=np.r_[np.inf, np.geomspace(1e7, 1e9, 7)]), "N must be positive and finite"),
    ],
)
def test_fit_points_validation(change, message):
    with pytest.raises(UserError, match=message):
        FitPoints(**{**_arrays(), **change})


def test_fit_points_too_few():
    with pytest.raises(UserError, match="at least 6"):
        FitPoints(**_arrays(5))
    with pytest.raises(UserError, match="labels"):
        FitPoints(**_arrays(), group=np.arange(3))


def test_read_good_csv(tmp_path):
    pts = read_fit_csv(_write(tmp_path, GOOD))
    assert len(pts) == 8
    assert pts.N[1] == 2e7 and pts.D[7] == 8e9 and pts.loss[0] == 3.0


def test_extra_columns_ignored_and_run_column_groups(tmp_path):
    rows = "".join(f"x{i},{1e7 * (i + 1)},{i // 2},{1e9 * (i + 1)},{3.0 - 0.1 * i},note\n" for i in range(8))
    pts = read_fit_csv(_write(tmp_path, "name,N,run,D,loss,comment\n" + rows))
    assert len(pts) == 8 and pts.loss[7] == pytest.approx(2.3)
    assert pts.group_index[1] == 4


def test_csv_header_whitespace_tolerated(tmp_path):
    assert len(read_fit_csv(_write(tmp_path, GOOD.replace("N,D,loss", "N, D , loss")))) == 8


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("N,D,loss", "params,D,loss"), "lacks column\\(s\\) N"),
        (GOOD.replace("N,D,loss", "N,tokens,val"), "lacks column\\(s\\) D, loss"),
        (GOOD.replace("3.0\n", "abc\n", 1), "row 2: loss='abc' is not a number"),
        (GOOD.replace("2.8\n", "nan\n", 1), "row 4: loss='nan' is not finite"),
        (GOOD.replace("2.8\n", "inf\n", 1), "not finite"),
        (GOOD.replace("20000000.0,", "-20000000.0,", 1), "row 3: N='-20000000.0' must be positive"),
        (GOOD.replace("3000000000.0", "0", 1), "row 4: D='0' must be positive"),
        (GOOD.replace("3000000000.0", "", 1), "row 4: column D is empty"),
        ("N,D,loss\n1e7,1e9,3\n2e7,2e9,2.9\n", "2 rows; need at least 6"),
        ("", "lacks column"),
    ],
)
def test_bad_csv(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserError, match=message) as err:
        read_fit_csv(path)
    assert str(path) in str(err.value)


def test_missing_csv(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_fit_csv(tmp_path / "missing.csv")
    with pytest.raises(UserError, match="is a directory, not a file"):
        read_fit_csv(tmp_path)


def test_blank_lines_skipped_and_rows_numbered_as_in_the_file(tmp_path):
    text = GOOD.replace("\n", "\n\n", 2)  # two blank lines after the header and the first row
    assert len(read_fit_csv(_write(tmp_path, text))) == 8
    with pytest.raises(UserError, match="row 5: loss='x' is not a number"):
        read_fit_csv(_write(tmp_path, text.replace("2.9\n", "x\n", 1)))


def test_budget_column_and_group_column(tmp_path):
    rows = "".join(f"{1e7 * (i + 1)},{1e9},{3.0 - 0.1 * i},{[1e18, 3e18][i % 2]:g},{'ab'[i // 4]} \n" for i in range(8))
    pts = read_fit_csv(_write(tmp_path, "N,D,loss,C,group\n" + rows))
    assert list(pts.C) == [1e18, 3e18] * 4 and list(pts.budgets) == list(pts.C)
    assert list(pts.dataset) == ["a"] * 4 + ["b"] * 4  # labels stripped
    assert pts.group_index[1] == 8  # the group column does not group the bootstrap: each point is its own run


def test_budget_is_6ND_without_a_C_column(tmp_path):
    pts = read_fit_csv(_write(tmp_path, GOOD))
    assert pts.C is None and pts.dataset is None
    assert pts.budgets == pytest.approx(6 * pts.N * pts.D)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "N,D,loss,C\n" + "".join(f"{1e7 * (i + 1)},1e9,3,1e18\n" for i in range(7)) + "1e8,1e9,3,-1\n",
            "row 9: C='-1' must be positive",
        ),
        (
            "N,D,loss,group\n" + "".join(f"{1e7 * (i + 1)},1e9,3,a\n" for i in range(7)) + "1e8,1e9,3, \n",
            "row 9: column group is empty",
        ),
    ],
)
def test_bad_budget_or_group_cell(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_fit_csv(_write(tmp_path, text))


def test_budget_labels_group_within_a_few_percent_without_chaining():
    C = np.array([1.0, 1.01, 0.99, 3.0, 3.05, 10.0])
    assert list(budget_labels(C)) == [0, 0, 0, 1, 1, 2]
    spread = np.geomspace(1.0, 2.0, 200)  # neighbours 0.35% apart: a chain would make this one budget
    labels = budget_labels(spread)
    assert labels.max() > 10
    for label in np.unique(labels):
        mine = spread[labels == label]
        assert mine.max() <= mine.min() * 1.03


def test_take_keeps_labels_and_budgets():
    pts = FitPoints(**_arrays(), C=np.full(8, 1e18), dataset=np.array(list("aabbccdd")), group=np.arange(8) // 2)
    part = pts.take(np.arange(8) >= 2)
    assert len(part) == 6 and list(part.dataset) == list("bbccdd") and list(part.C) == [1e18] * 6
    assert list(part.group) == [1, 1, 2, 2, 3, 3]


def test_a_fit_table_from_json_lines_or_with_other_names_reads_as_the_csv(tmp_path):
    """The one run-table reader behind `fit --csv`: JSON lines and a column map give the CSV's points exactly."""
    import json as json_module

    from smallest_loss.scaling.points import read_fit_table

    rows = [dict(N=1e6 * (i + 1), D=2e8 / (i + 1), C=6e14, loss=3.0 + 0.1 * i, run=f"r{i}") for i in range(6)]
    lines = ["N,D,C,loss,run"] + [f"{r['N']},{r['D']},{r['C']},{r['loss']},{r['run']}" for r in rows]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "t.jsonl").write_text("".join(json_module.dumps(r) + "\n" for r in rows))
    renamed = ["params,tokens,C,eval/loss,run"] + lines[1:]
    (tmp_path / "w.csv").write_text("\n".join(renamed) + "\n")
    want = read_fit_table(tmp_path / "t.csv")
    for got in (
        read_fit_table(tmp_path / "t.jsonl"),
        read_fit_table(tmp_path / "w.csv", "N=params,D=tokens,loss=eval/loss"),
    ):
        assert np.array_equal(got.N, want.N) and np.array_equal(got.loss, want.loss) and np.array_equal(got.C, want.C)
        assert list(got.group) == list(want.group)
    (tmp_path / "bad.jsonl").write_text("".join(json_module.dumps({**r, "D": -1.0}) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"bad.jsonl line 1: D=-1 must be positive"):
        read_fit_table(tmp_path / "bad.jsonl")


def test_tokens_from_the_budget_column_when_a_table_has_no_D(tmp_path):
    """A table of N, C and loss (as published fits often are): D = C / (6N), in the CSV reader and the mapped one."""
    N = np.array([1e6, 2e6, 4e6, 1e6, 2e6, 4e6, 8e6])
    C = np.array([1e13, 1e13, 1e13, 4e13, 4e13, 4e13, 4e13])
    path = tmp_path / "nc.csv"
    path.write_text(
        "N,C,loss\n" + "".join(f"{n},{c},{3.0 + i / 10}\n" for i, (n, c) in enumerate(zip(N, C, strict=True)))
    )
    plain = read_fit_table(path)
    np.testing.assert_allclose(plain.D, C / (6 * N))
    np.testing.assert_allclose(plain.C, C)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(path.read_text().replace("N,C,loss", "Model Size,Training FLOP,loss"))
    mapped = read_fit_table(renamed, columns="N=Model Size,C=Training FLOP")
    np.testing.assert_allclose(mapped.D, plain.D)
    (tmp_path / "none.csv").write_text("N,loss\n" + "".join(f"{n},3.0\n" for n in N))
    with pytest.raises(UserError, match="lacks column"):
        read_fit_table(tmp_path / "none.csv")
    with pytest.raises(UserError, match="budgets C"):
        read_fit_table(tmp_path / "none.csv", columns="N=N")
