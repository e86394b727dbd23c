"""The variable-projection fit (scaling/projection.py): its derivatives, its bounded linear solve, its Newton
polish against the paper's many-start L-BFGS, and weighted (bootstrap) refits."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import optimize as sp_optimize
from smallest_loss.scaling import projection
from smallest_loss.scaling.bootstrap import bootstrap_chinchilla as bootstrap
from smallest_loss.scaling.chinchilla import chinchilla_bounds, fit_chinchilla, make_form
from smallest_loss.scaling.points import FitPoints, centring

from tests.scaling.test_chinchilla import MEDIUM_GRID, synthetic, tiny_isoflop


def _data(pts: FitPoints, form) -> projection.Data:
    return projection.make_data(pts, centring(pts), 1e-3, form.M, form.z0, form.box)


@pytest.mark.parametrize("name", ["full", "tied_fixed_E"])
def test_gradient_and_hessian_match_finite_differences(name):
    """Per-start weights (S, P), a full and a tied form with E fixed: f, g, H against central differences."""
    pts = synthetic(30, 0.02, seed=5)
    box = chinchilla_bounds(pts)
    form = make_form("full", box) if name == "full" else make_form(name, box, e_fixed=0.4, ratio=1.2)
    d = _data(pts, form)
    rng = np.random.default_rng(0)
    u = np.array([[0.1, 0.2, 0.5, 0.35, 0.37], [-0.3, 0.4, 0.4, 0.2, 0.3]]) * form.M.any(axis=0)
    w = rng.integers(0, 3, size=(2, len(pts))).astype(float)
    f, g, H = projection.derivatives(u, w, d)
    np.testing.assert_allclose(f, projection.objective(u, w, d))
    h = 1e-6
    for i in range(5):
        step = np.zeros(5)
        step[i] = h
        fp, gp, _ = projection.derivatives(u + step, w, d)
        fm, gm, _ = projection.derivatives(u - step, w, d)
        np.testing.assert_allclose(g[:, i], (fp - fm) / (2 * h), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(H[:, :, i], (gp - gm) / (2 * h), rtol=1e-4, atol=1e-7)


def test_bounded_least_squares_is_the_box_optimum():
    """The face enumeration finds scipy's bounded least-squares optimum, also when bounds bind."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(8, 20, 3))
    y = rng.normal(size=(8, 20))
    lo, hi = np.array([0.0, -0.1, 0.05]), np.array([0.5, 0.2, 1.0])
    G, b = np.einsum("kpi,kpj->kij", X, X), np.einsum("kpi,kp->ki", X, y)
    got = projection._bounded_lsq(G, b, lo, hi)
    for k in range(8):
        ref = sp_optimize.lsq_linear(X[k], y[k], bounds=(lo, hi), tol=1e-12).x
        assert np.sum((X[k] @ got[k] - y[k]) ** 2) <= np.sum((X[k] @ ref - y[k]) ** 2) * (1 + 1e-9) + 1e-12
    assert np.all(got >= lo) and np.all(got <= hi)
    assert any(np.any(np.isclose(got[k], lo) | np.isclose(got[k], hi)) for k in range(8))  # some bound binds


@pytest.mark.parametrize(
    "make", [lambda: tiny_isoflop(0), pytest.param(lambda: synthetic(30, 0.03, seed=4), marks=pytest.mark.slow)]
)
def test_projection_reaches_the_many_start_optimum(make):
    """Same optimum (objective within 1e-9 relative, or lower) as L-BFGS run to convergence from every start."""
    pts = make()
    vp = fit_chinchilla(pts)
    lbfgs = fit_chinchilla(pts, grid=MEDIUM_GRID, exhaustive=True)
    assert vp.form == lbfgs.form and vp.converged
    assert vp.objective <= lbfgs.objective * (1 + 1e-9)


def test_a_weighted_refit_is_the_fit_of_the_repeated_points():
    """A bootstrap resample's weights (counts) refit the same optimum as the points repeated that many times."""
    pts = synthetic(40, 0.01, seed=6)
    fit = fit_chinchilla(pts)
    counts = np.random.default_rng(2).multinomial(40, np.ones(40) / 40).astype(float)
    d = _data(pts, fit.chinchilla_form)
    res = projection.newton(fit.free[None], counts[None], d, 1e-6, stop_tol=1e-12)
    keep = np.repeat(np.arange(40), counts.astype(int))
    rep = FitPoints(pts.N[keep], pts.D[keep], pts.loss[keep])
    d_rep = projection.make_data(rep, centring(pts), 1e-3, d.M, d.z0, d.box)
    ref = projection.newton(fit.free[None], np.ones(len(rep)), d_rep, 1e-6, stop_tol=1e-12)
    assert res["converged"][0] and res["f"][0] == pytest.approx(ref["f"][0], rel=1e-9)
    np.testing.assert_allclose(res["x"][0], ref["x"][0], atol=1e-6)


def test_local_minima_of_the_grid():
    f = np.array([[3.0, 2.0, 3.0], [2.5, 4.0, 1.0], [0.5, 3.0, 2.0]]).ravel()
    assert projection.local_minima(f, (3, 3), 5).tolist() == [6, 5]
    assert projection.local_minima(np.array([1.0, 0.0, 2.0, 1.5, 3.0]), (5,), 1).tolist() == [1]
    assert list(itertools.islice(projection.local_minima(np.full(4, np.inf), (4,), 2), 1)) == [0]


# A 14-run CPU sweep (a quickstart's, 2026-12-05) whose bootstrap refits meet near-singular Hessians: undamped Newton
# steps overshot there and a seventh of the refits stopped unconverged.
QUICK_RUNS = (
    (29560, 59392, 3.537878), (7216, 278528, 3.050995), (7216, 229376, 3.269518), (7216, 2.3552e06, 2.198506),
    (13128, 1.26874e06, 2.182264), (20576, 809984, 2.216885), (32928, 505856, 2.181344),
    (20576, 1.61997e06, 2.017165), (32928, 1.01171e06, 1.960075), (67824, 490496, 2.066582),
    (13128, 4.18918e06, 1.960142), (20576, 278528, 2.571882), (165368, 337920, 2.071521),
    (578592, 1.08237e06, 1.471551),
)  # fmt: skip


def test_damped_newton_converges_where_the_hessian_is_nearly_singular():
    N, D, loss = (np.array(c, dtype=float) for c in zip(*QUICK_RUNS, strict=True))
    pts = FitPoints(N, D, loss)
    fit = fit_chinchilla(pts)
    assert fit.converged
    boot = bootstrap(pts, n_boot=200, fit=fit)
    assert boot.n_converged >= 0.95 * 200
