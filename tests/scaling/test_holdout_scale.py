"""Order-by-scale hold-outs (scaling/holdout_scale.py) through the API and `fit`: on a small table of four IsoFLOP
budgets both hold-outs are reported by default, fitted on fewer points, with finite errors; too few budgets or no
shared budgets are named, not refused; `--no-holdout` skips them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from smallest_loss.experiments.cli import main

import smallest_loss as sl


def _isoflop(budgets=(1e18, 3e18, 1e19, 3e19), seed=0) -> tuple[np.ndarray, ...]:
    """Four sizes around the optimum at each budget of a Chinchilla-like law, 0.3% noise on loss."""
    rng = np.random.default_rng(seed)
    C = np.repeat(budgets, 4)
    N = np.sqrt(C / 6) / 4 * np.tile(np.geomspace(0.3, 3, 4), len(budgets))
    D = C / (6 * N)
    loss = (1.82 + 482 / N**0.348 + 2085 / D**0.366) * np.exp(rng.normal(0.0, 0.003, len(C)))
    return N, D, loss


def _write(path, N, D, loss):
    path.write_text("N,D,loss\n" + "".join(f"{n},{d},{x}\n" for n, d, x in zip(N, D, loss, strict=True)))
    return str(path)


def test_both_holdouts_on_an_isoflop_table():
    N, D, loss = _isoflop()
    report = sl.holdout_by_scale(sl.FitPoints(N, D, loss))
    assert isinstance(report, sl.HoldoutReport) and report.skipped == {}
    assert (report.points, report.budgets) == (16, 4)
    for one, held in ((report.budget, 4), (report.size, 1)):  # the largest N appears at the largest budget only
        assert one.held_points == held and one.fitted_points == 16 - held
        assert len(one.runs) == held
        errors = (one.mean_abs_rel_error, one.max_abs_rel_error, one.mean_rel_error)
        assert all(math.isfinite(e) for e in errors) and one.max_abs_rel_error >= one.mean_abs_rel_error
        assert abs(one.mean_rel_error) <= one.mean_abs_rel_error + 1e-12
    assert math.isclose(report.budget.value, 3e19, rel_tol=1e-9) and report.size.value == pytest.approx(N.max())
    assert set(report.budget.optimum["rel_error"]) == {"N", "D", "loss"} and report.size.optimum is None
    assert json.loads(json.dumps(report.to_dict()))["budget"]["held_points"] == 4


def test_too_few_budgets_or_sizes_or_none_shared_are_named_without_fitting():
    C, N = np.repeat([1e18, 1e19], 4), np.tile([1e7, 3e7], 4)  # two budgets, two model sizes
    D = C / (6 * N)
    report = sl.holdout_by_scale(sl.FitPoints(N, D, 1.8 + 400 / N**0.34 + 400 / D**0.28))
    assert (report.budget, report.size) == (None, None)
    assert "2 budget(s)" in report.skipped["budget"] and "at least 3" in report.skipped["budget"]
    assert "2 model size(s)" in report.skipped["N"]
    N, D = np.tile([1e7, 1e9], 4), np.geomspace(1e9, 1e11, 8)  # every point its own 6ND
    report = sl.holdout_by_scale(sl.FitPoints(N, D, 1.8 + 400 / N**0.34 + 400 / D**0.28))
    assert report.budget is None and "has its own budget" in report.skipped["budget"]


def test_fit_reports_them_by_default_and_keeps_them_in_the_law_json(tmp_path, capsys):
    path = _write(tmp_path / "iso.csv", *_isoflop(seed=1))
    assert main(["fit", "--csv", path, "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "order-by-scale hold-outs" in out and "fit without budget 3e+19, predicting its 4 points" in out
    assert "fit without the largest model size N =" in out and "(12 points fitted)" in out
    assert main(["fit", "--csv", path, "--bootstrap", "0", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)["diagnostics"]["holdout"]
    assert set(held) == {"points", "budgets", "sizes", "budget", "size", "skipped"}
    assert held["budget"]["fitted_points"] < held["points"] and math.isfinite(held["size"]["mean_abs_rel_error"])
    assert main(["fit", "--csv", path, "--bootstrap", "0", "--json", "--no-holdout"]) == 0
    assert "holdout" not in json.loads(capsys.readouterr().out)["diagnostics"]
    assert main(["fit", "--csv", path, "--bootstrap", "0", "--no-holdout"]) == 0
    assert "hold-out" not in capsys.readouterr().out


def test_holdout_largest_and_no_holdout_together_are_refused(tmp_path, capsys):
    path = _write(tmp_path / "iso.csv", *_isoflop())
    assert main(["fit", "--csv", path, "--bootstrap", "0", "--holdout-largest", "--no-holdout"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --holdout-largest") and "\n" not in err


def test_holdout_largest_insists_on_three_budgets(tmp_path, capsys):
    path = _write(tmp_path / "two.csv", *_isoflop(budgets=(1e18, 1e19)))
    assert main(["fit", "--csv", path, "--bootstrap", "0", "--holdout-largest"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --holdout-largest needs at least 3 budgets, found 2"
