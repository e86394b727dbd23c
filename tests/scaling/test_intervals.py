"""The calibrated intervals (scaling/intervals.py): properties on synthetic samples, the law file's calibration, the
planner's use of it, and a tiny run of the coverage simulation (loose properties, never an exact coverage)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.spaces import get_space
from smallest_loss.experiments.scripts.coverage_study import CPU_LAW, replicate
from smallest_loss.scaling.budget import parse_budget
from smallest_loss.scaling.intervals import (
    IntervalCalibration,
    calibrate,
    constant_intervals,
    largest_budget_interval,
    prediction_interval,
    scatter,
    student_t,
)
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile, load_law
from smallest_loss.scaling.plan import PlanInputs
from smallest_loss.scaling.planner import plan_with_inputs
from smallest_loss.scaling.points import FitPoints

KEYS = ("E", "A", "B", "alpha", "beta")


def law_file(scatter: float | None = 0.01, spread: float = 0.02) -> LawFile:
    rng = np.random.default_rng(0)
    samples = {k: getattr(CHINCHILLA_PUBLISHED, k) * (1 + spread * rng.standard_normal(200)) for k in KEYS}
    diagnostics = dict(fitted_range=dict(N=[1e8, 1e10], D=[1e9, 1e11], C=[1e19, 1e21]))
    if scatter is not None:
        diagnostics["calibration"] = IntervalCalibration(scatter, n_points=30, n_params=5).to_dict()
    return LawFile(CHINCHILLA_PUBLISHED, samples=samples, diagnostics=diagnostics)


def test_intervals_contain_the_prediction_and_nest():
    span = prediction_interval(law_file(), [1e9, 1e10], [2e10, 2e11])
    assert np.all(span.low < span.mean_low) and np.all(span.mean_low < span.predicted)
    assert np.all(span.predicted < span.mean_high) and np.all(span.mean_high < span.high)
    np.testing.assert_allclose(span.predicted, CHINCHILLA_PUBLISHED.loss(span.N, span.D))


def test_more_scatter_widens_only_the_new_run_interval():
    narrow = prediction_interval(law_file(0.005), 1e9, 2e10)
    wide = prediction_interval(law_file(0.03), 1e9, 2e10)
    assert wide.half_width[0] > narrow.half_width[0]
    np.testing.assert_allclose([wide.mean_low, wide.mean_high], [narrow.mean_low, narrow.mean_high])
    # With no law uncertainty at all, a new run's interval is Student's t times the scatter (in log loss).
    exact = dataclasses.replace(law_file(0.02, spread=0.0), intervals=None)
    span, cal = prediction_interval(exact, 1e9, 2e10), IntervalCalibration(0.02, 30, 5)
    np.testing.assert_allclose(np.log(span.high / span.predicted), cal.t(0.95) * 0.02 * cal.prediction_factor)


def test_constant_and_n_opt_intervals_contain_the_fit():
    out = constant_intervals(law_file(), C=[1e21, 1e22])
    for k in KEYS:
        lo, hi = out.intervals[k]
        assert lo < getattr(CHINCHILLA_PUBLISHED, k) < hi
    assert np.all(out.n_opt_low < out.n_opt) and np.all(out.n_opt < out.n_opt_high)


def test_old_law_file_loads_and_plans_as_before(tmp_path):
    old = law_file(scatter=None)
    path = old.save(tmp_path / "law.json")
    assert "calibration" not in json.loads(path.read_text())["diagnostics"]
    loaded = load_law(path)
    assert largest_budget_interval(loaded) is None  # nothing printed by fit for it
    with pytest.raises(UserError, match="no calibration"):
        prediction_interval(loaded, 1e9, 2e10)
    inputs = PlanInputs(get_space("chinchilla"))
    before = plan_with_inputs(parse_budget("1e21"), loaded, inputs, top=3)
    after = plan_with_inputs(parse_budget("1e21"), load_law(law_file().save(tmp_path / "new.json")), inputs, top=3)
    assert [r.params for r in before.rows] == [r.params for r in after.rows]  # the ranking does not change
    assert before.interval_kind == "law bootstrap" and after.interval_kind == "a new run's loss, calibrated"
    for old_row, new_row in zip(before.rows, after.rows, strict=True):
        assert new_row.loss == old_row.loss and new_row.loss_interval != old_row.loss_interval
        assert old_row.loss_interval[0] < old_row.loss < old_row.loss_interval[1]
        assert new_row.loss_interval[0] < new_row.loss < new_row.loss_interval[1]


def test_scatter_measures_the_noise_and_shrugs_off_one_wild_run():
    rng = np.random.default_rng(0)
    N = np.geomspace(1e7, 1e9, 200)
    D = 20 * N * rng.uniform(0.3, 3, 200)
    loss = CHINCHILLA_PUBLISHED.loss(N, D) * np.exp(0.01 * rng.standard_normal(200))
    points = FitPoints(N, D, loss)
    assert scatter(CHINCHILLA_PUBLISHED, FitPoints(N, D, CHINCHILLA_PUBLISHED.loss(N, D))) == 0
    assert 0.008 < scatter(CHINCHILLA_PUBLISHED, points) < 0.012
    wild = FitPoints(N, D, np.where(np.arange(200) == 0, 3 * loss, loss))
    assert scatter(CHINCHILLA_PUBLISHED, wild) < 0.015  # clipped at 4 robust standard deviations


def test_calibration_refuses_malformed_entries():
    with pytest.raises(UserError, match="calibration"):
        IntervalCalibration.from_dict({"scatter": "x"})
    with pytest.raises(UserError, match="scatter"):
        IntervalCalibration(float("nan"), 10, 5)


def test_tiny_simulation_gives_sane_verdicts():
    rng = np.random.default_rng(1)
    r = replicate(CPU_LAW, (1e11, 2.7e12), 3, 3, 0.01, 20, rng)
    for key in ("const", "mean", "new", "nopt"):
        assert all(isinstance(v, bool) for v in r[key + "_before"] + r[key + "_after"])
        assert all(np.isfinite(r[key + "_ratio"])) and min(r[key + "_ratio"]) >= 0
    assert r["scatter"] > 0 and all(h > 0 for h in r["new_half_after"])


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 117])
def test_student_t_matches_scipy(df):
    from scipy import stats

    for level in (0.8, 0.95):
        assert student_t(level, df) == pytest.approx(stats.t.ppf(0.5 + level / 2, df), rel=1e-9)


def test_a_fallback_form_widens_the_law_part():
    N = np.geomspace(1e7, 1e9, 12)
    points = FitPoints(N, 20 * N, CHINCHILLA_PUBLISHED.loss(N, 20 * N) * (1 + 0.01 * np.sin(np.arange(12))))
    full, fixed = calibrate(CHINCHILLA_PUBLISHED, points, "full"), calibrate(CHINCHILLA_PUBLISHED, points, "fixed_E")
    assert fixed.inflation > full.inflation and fixed.n_params == 4
    with pytest.raises(UserError, match="form"):
        calibrate(CHINCHILLA_PUBLISHED, points, "kaplan")
