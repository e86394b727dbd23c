"""`fit --curves --csv`, `predict --csv --run` and `fit --csv --best-of` end to end on small synthetic tables: the
files written, and bad tables refused in one line with exit 2 and nothing written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from smallest_loss.experiments.cli import main
from smallest_loss.scaling.points import best_of_rows, sweep_table, sweep_warning

from tests.scaling.test_curve_table import RUNS, rows, write


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return write(tmp_path_factory.mktemp("table") / "curves.csv", rows(200))


@pytest.mark.slow
def test_fit_curves_csv_writes_the_law_and_predict_reads_the_run(table, tmp_path, capsys):
    out = tmp_path / "law.json"
    assert main(["fit", "--curves", "--csv", str(table), "--bootstrap", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fitted to the eval losses logged in" in text and "final eval loss from the first 50%" in text
    report = json.loads(out.read_text())
    assert report["curve_table"] == str(table) and report["curve_loss"] == "eval"
    assert [r["runs"] for r in report["shapes"]] == [[name for name, _, _ in RUNS]]
    assert out.with_suffix(".png").is_file()
    assert main(["predict", "--csv", str(table), "--run", "c", "--fraction", "0.5", "--steps", "3000",
                 "--schedule", "wsd"]) == 0  # fmt: skip
    assert "the run is finished" in capsys.readouterr().out
    assert main(["predict", "--csv", str(table), "--run", "a", "--curve-law", str(out), "--steps", "3000"]) == 0
    assert "scaled by" in capsys.readouterr().out


@pytest.mark.slow
def test_a_tensorboard_export_fits_with_its_schedule_filled_in(tmp_path, capsys):
    """`Wall time,Step,Value`, one run's loss: the schedule comes from --fill."""
    path = tmp_path / "tb.csv"
    logged = [r for r in rows(100, RUNS[:1])]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Wall time", "Step", "Value"])
        w.writerows([1.7e9 + r["step"], r["step"], r["loss"]] for r in logged)
    fill = "run=a,schedule=cosine,peak_lr=3e-3,warmup_steps=150,total_steps=3000,final_lr=3e-4"
    args = ["fit", "--curves", "--csv", str(path), "--columns", "step=Step,loss=Value", "--fill", fill]
    assert main([*args, "--bootstrap", "0"]) == 0
    assert "N=0" in capsys.readouterr().out  # no N: one shape


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: [{k: v for k, v in r.items() if k != "loss"} for r in t], "lacks column loss"),
        (lambda t: [r | (dict(lr=-1.0) if i == 3 else {}) for i, r in enumerate(t)], "line 5: lr=-1"),
        (lambda t: t[:-9], "run d has one logged eval point"),
        (lambda t: [r | (dict(step=200) if i == 2 else {}) for i, r in enumerate(t)], "line 4: run a's step 200"),
        (lambda t: [r | (dict(loss="nan") if i == 6 else {}) for i, r in enumerate(t)], "line 8: loss=nan"),
    ],
)
def test_bad_tables_exit_2_in_one_line_with_nothing_written(tmp_path, capsys, change, message):
    path = write(tmp_path / "bad.csv", change(rows(200)))
    out = tmp_path / "out" / "law.json"
    assert main(["fit", "--curves", "--csv", str(path), "--bootstrap", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.parent.exists()
    assert main(["predict", "--csv", str(path), "--run", "a", "--steps", "3000"]) == 2


def _sweep(path):
    """4 N x 3 D, each at 3 rates and 2 batches; the loss rises away from lr 3e-3 and at batch 32."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "D", "lr", "batch", "loss"])
        for N in (1e6, 3e6, 1e7, 3e7):
            for D in (2e7, 6e7, 2e8):
                for lr in (1e-3, 3e-3, 1e-2):
                    for b in (32, 128):
                        best = 1.7 + 400 / N**0.34 + 410 / D**0.28
                        w.writerow([N, D, lr, b, best * (1 + 0.05 * np.log(lr / 3e-3) ** 2 + 0.01 * (b == 32))])
    return path


def test_fit_csv_warns_on_a_sweep_and_best_of_keeps_each_points_best_run(tmp_path, capsys):
    path = _sweep(tmp_path / "sweep.csv")
    table = sweep_table(path)
    assert sweep_warning(table).startswith(
        "warning: 12 (N, D) points have several runs (72 rows, differing in lr or batch)"
    )
    kept = best_of_rows(table, "lr,batch")
    assert len(kept) == 12 and set(table.numbers["lr"][kept]) == {3e-3} and set(table.numbers["batch"][kept]) == {128}
    assert len(best_of_rows(table, "lr")) == 24  # the best rate at each batch
    assert sweep_warning(table.take(kept)) is None
    assert main(["fit", "--csv", str(path), "--bootstrap", "0", "--json", "--best-of", "lr,batch"]) == 0
    captured = capsys.readouterr()
    law = json.loads(captured.out)
    assert "several runs" not in captured.err
    assert abs(law["alpha"] - 0.34) < 0.02 and abs(law["E"] - 1.7) < 0.05  # the best runs: the law they follow
    assert main(["fit", "--csv", str(path), "--bootstrap", "0", "--best-of", "seed"]) == 2
    assert "--best-of 'seed'" in capsys.readouterr().err
