"""The scatter's profile in the distance from N_opt and the check one budget up (scaling/intervals.py) on tiny
synthetic IsoFLOP tables: narrower near the optimum and wider far from it than one scatter for every run, still
covering; loose properties, never an exact coverage."""

from __future__ import annotations

import numpy as np
from smallest_loss.experiments.scripts.coverage_study import CPU_LAW, replicate
from smallest_loss.scaling.chinchilla import fit_chinchilla
from smallest_loss.scaling.intervals import (
    IntervalCalibration,
    calibrate,
    optimum_distance,
    prediction_interval,
    scatter_shape,
    step_ratio,
)
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, LawFile
from smallest_loss.scaling.points import FitPoints

LAW = CHINCHILLA_PUBLISHED
KEYS = ("E", "A", "B", "alpha", "beta")
BUDGETS = np.geomspace(1e18, 1e20, 5)
OFFSETS = np.linspace(-0.9, 0.9, 13)  # decades of N from each budget's optimum


def sweep(noise: float, hetero: float, seed: int = 0, bias: float = 0.0) -> FitPoints:
    """An IsoFLOP table of LAW: 5 budgets x 13 runs, lognormal noise sigma noise (1 + hetero x^2), x the decades from
    N_opt; the largest budget's losses times exp(bias)."""
    rng = np.random.default_rng(seed)
    C = np.repeat(BUDGETS, len(OFFSETS))
    N = np.asarray(LAW.optimal_allocation(C)[0]) * 10 ** np.tile(OFFSETS, len(BUDGETS))
    D = C / (6 * N)
    sigma = noise * (1 + hetero * optimum_distance(LAW, N, D) ** 2)
    loss = LAW.loss(N, D) * np.exp(sigma * rng.standard_normal(len(N)) + bias * (C == C.max()))
    return FitPoints(N, D, loss, C=C)


def law_file(points: FitPoints, **kw) -> LawFile:
    """The fitted law with a tight synthetic bootstrap (the runs' scatter dominates) and its calibration."""
    fit = fit_chinchilla(points)
    rng = np.random.default_rng(1)
    samples = {k: getattr(fit.law, k) * (1 + 0.002 * rng.standard_normal(100)) for k in KEYS}
    calibration = calibrate(fit.law, points, fit.form, **kw).to_dict()
    return LawFile(fit.law, samples=samples, diagnostics=dict(calibration=calibration))


def test_a_heteroscedastic_table_gets_narrow_intervals_near_the_optimum_and_wide_far_from_it():
    points = sweep(0.005, 12.0)
    new, old = law_file(points), law_file(points, profile=False, step=False)
    C = BUDGETS[-1]
    n_opt = float(LAW.optimal_allocation(C)[0])
    N = n_opt * 10 ** np.array([0.0, 0.85])
    D = C / (6 * N)
    a, b = prediction_interval(new, N, D), prediction_interval(old, N, D)
    assert a.calibration.shape > 0 and b.calibration.shape == 0
    assert a.half_width[0] < 0.8 * b.half_width[0]  # near the optimum: narrower
    assert a.half_width[1] > 1.2 * b.half_width[1]  # 0.85 decades off: wider
    rng = np.random.default_rng(2)  # fresh runs at both points fall inside their new intervals
    sigma = 0.005 * (1 + 12.0 * optimum_distance(LAW, N, D) ** 2)
    runs = LAW.loss(N, D) * np.exp(sigma * rng.standard_normal((400, 2)))
    inside = np.mean((a.low <= runs) & (runs <= a.high), axis=0)
    assert np.all(inside > 0.85)


def test_homoscedastic_residuals_get_no_profile_and_the_old_scatter():
    flat = [scatter_shape(np.tile(OFFSETS, 5), 0.01 * np.random.default_rng(s).standard_normal(65)) for s in range(20)]
    assert sum(c > 0 for c in flat) <= 3  # a spurious slope is rare (t > 2, one-sided)
    x = np.tile(OFFSETS, 5)
    steep = 0.01 * (1 + 10 * x**2) * np.random.default_rng(0).standard_normal(65)
    assert scatter_shape(x, steep) > 2


def test_the_step_up_check_widens_where_the_form_misses_the_trend_with_scale():
    clean, biased = sweep(0.01, 0.0, seed=3), sweep(0.01, 0.0, seed=3, bias=0.06)
    assert 1 <= step_ratio(clean) < 2.5
    assert step_ratio(biased) > 3
    three = clean.C <= BUDGETS[2]
    few = FitPoints(clean.N[three], clean.D[three], clean.loss[three], C=clean.C[three])
    assert step_ratio(few) == 1  # fewer than four budgets: no check
    N = np.geomspace(1e7, 1e9, 20)  # each run its own 6ND: no shared budgets
    assert step_ratio(FitPoints(N, 20 * N, LAW.loss(N, 20 * N) * (1 + 0.01 * np.sin(np.arange(20))))) == 1


def test_old_calibrations_load_with_one_scatter():
    raw = IntervalCalibration(0.02, 30, 5).to_dict()
    old = {k: raw[k] for k in ("scatter", "n_points", "n_params", "law_factor", "prediction_factor")}
    cal = IntervalCalibration.from_dict(old)
    assert cal.shape == 0 and cal.step_ratio == 1 and float(cal.noise(0.7)) == 0.02


def test_tiny_heteroscedastic_simulation_gives_sane_verdicts():
    r = replicate(CPU_LAW, (1e11, 2.7e12), 4, 3, 0.01, 20, np.random.default_rng(1), hetero=3.0, misfit=0.05)
    for key in ("one", "cur"):
        assert len(r[key + "_in"]) == 5 and all(isinstance(v, bool) for v in r[key + "_in"])
        assert all(h > 0 for h in r[key + "_half"])
    assert r["step_ratio"] >= 1 and r["shape"] >= 0
