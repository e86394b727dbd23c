"""Approach 3 fit, batched L-BFGS, bootstrap and Kaplan fit, on synthetic data with known constants."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling import fit as F  # noqa: N812
from smallest_loss.scaling.laws import EPOCH_REPLICATION, KaplanLaw, load_law, save_law
from smallest_loss.scaling.points import FitPoints

SMALL_GRID = {"a": (5.0, 10.0), "b": (5.0, 10.0), "e": (0.0, 1.0), "alpha": (0.3, 0.6), "beta": (0.3, 0.6)}


def synthetic(n: int, noise: float, seed: int, law=EPOCH_REPLICATION) -> FitPoints:
    """N log-uniform in 1e7..1e10, D in 1e9..1e12, multiplicative lognormal noise."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    return FitPoints(N, D, law.loss(N, D) * np.exp(rng.normal(0.0, noise, n)))


def _reference_objective(params: np.ndarray, pts: FitPoints, delta: float) -> float:
    """Independent: Huber (scipy.special) of log(E + A N^-alpha + B D^-beta) - log L."""
    a, b, e, alpha, beta = params
    pred = np.log(np.exp(e) + np.exp(a) * pts.N**-alpha + np.exp(b) * pts.D**-beta)
    return float(np.sum(special.huber(delta, pred - np.log(pts.loss))))


@pytest.mark.parametrize(
    "params", [[6.2, 7.6, 0.6, 0.35, 0.37], [3.0, 12.0, -0.5, 0.1, 0.7], [6.0, 8.0, 0.6, 0.3, 0.4]]
)
def test_objective_and_gradient_against_reference(params):
    pts = synthetic(40, 0.01, seed=1)
    params = np.array(params)
    for delta in (1e-3, 1e-1):
        f, g = F.chinchilla_objective(params, pts, delta)
        assert f == pytest.approx(_reference_objective(params, pts, delta), rel=1e-10)
        h = 1e-6
        fd = [
            (_reference_objective(params + h * np.eye(5)[i], pts, delta)
             - _reference_objective(params - h * np.eye(5)[i], pts, delta)) / (2 * h)
            for i in range(5)
        ]  # fmt: skip
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)


def test_batched_jax_objective_matches_numpy_and_autodiff():
    pts = synthetic(40, 0.01, seed=2)
    mu_N, mu_D = F._centring(pts)
    params = np.array([[6.2, 7.6, 0.6, 0.35, 0.37], [3.0, 12.0, -0.5, 0.1, 0.7]])
    weights = np.random.default_rng(0).integers(0, 3, size=(2, 40)).astype(float)
    with jax.enable_x64(True):
        data = tuple(jnp.asarray(d) for d in F._chinchilla_data(pts, 1e-3))
        z = jnp.asarray(F._to_internal(params, mu_N, mu_D))
        f, g = F._chinchilla_vg(z, jnp.asarray(weights), data)
        auto = jax.vmap(jax.grad(lambda zi, wi: F._chinchilla_vg(zi[None], wi[None], data)[0][0]))(z, weights)
    np.testing.assert_allclose(g, auto, rtol=1e-9, atol=1e-12)
    for i in range(2):
        f_np, g_np = F.chinchilla_objective(params[i], pts, 1e-3, weights[i])
        assert float(f[i]) == pytest.approx(f_np, rel=1e-12)
        # centred coordinates: d/dalpha' = d/dalpha + mu_N d/da
        np.testing.assert_allclose(g[i], g_np + np.r_[0, 0, 0, mu_N * g_np[0], mu_D * g_np[1]], rtol=1e-8)


def _quadratic_vg(z, w, data):
    """Weighted least squares sum_j w_j (z . x_j - y_j)^2: convex, exact answer by lstsq."""
    X, y = data
    r = z @ X.T - y
    return jnp.sum(w * r**2, -1), 2 * (w * r) @ X


def test_batched_lbfgs_refill_tail_and_per_start_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.01 * rng.normal(size=30)  # small residual: f ~ 1e-2
    w = rng.integers(1, 4, size=(150, 30)).astype(float)
    x0 = rng.normal(size=(150, 4)) * 5
    res = F.batched_lbfgs(_quadratic_vg, x0, w, (X, y), pool_size=64, gtol=1e-7, ftol=0.0, window_ftol=0.0)
    assert res["converged"].all()
    for i in (0, 77, 149):
        sw = np.sqrt(w[i])
        exact = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        np.testing.assert_allclose(res["x"][i], exact, atol=1e-7)


def test_default_grid_recovers_constants():
    """The full 4500-start Chinchilla grid on 100 points with 0.3% noise."""
    law = EPOCH_REPLICATION
    result = F.fit_chinchilla(synthetic(100, 0.003, seed=0))
    assert result.n_starts == 4500 and result.converged and result.warnings == ()
    fitted = result.law
    assert abs(fitted.alpha - law.alpha) < 0.02 and abs(fitted.beta - law.beta) < 0.02
    assert fitted.E == pytest.approx(law.E, rel=0.02)
    assert fitted.A == pytest.approx(law.A, rel=0.1) and fitted.B == pytest.approx(law.B, rel=0.3)
    assert result.grad_norm <= F.GRAD_TOL and result.n_at_best > 1
    np.testing.assert_allclose(result.params[:3], np.log([fitted.A, fitted.B, fitted.E]))
    # no start does better than the reported optimum
    assert result.objective <= _reference_objective(np.log([law.A, law.B, law.E]).tolist() + [law.alpha, law.beta],
                                                    synthetic(100, 0.003, seed=0), 1e-3)  # fmt: skip


def test_small_grid_fit_and_diagnostics():
    result = F.fit_chinchilla(synthetic(60, 0.002, seed=3), grid=SMALL_GRID)
    assert result.n_starts == 32 and result.converged
    assert abs(result.law.alpha - 0.348) < 0.02 and abs(result.law.beta - 0.366) < 0.03
    diag = result.diagnostics
    assert diag["n_starts"] == 32 and set(diag["params"]) == set(F.CHINCHILLA_PARAMS)


def test_grid_edge_and_convergence_warnings():
    grid = {**SMALL_GRID, "alpha": (1.0, 1.5)}  # the truth (0.348) lies below this grid
    result = F.fit_chinchilla(synthetic(60, 0.002, seed=3), grid=grid, grad_tol=0.0)
    assert any("alpha=" in w and "edge of the start grid [1, 1.5]" in w for w in result.warnings)
    assert not result.converged and any("did not converge" in w for w in result.warnings)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(grid={"a": (0.0,), "b": (0.0,)}), "exactly the keys"),
        (dict(grid={**SMALL_GRID, "e": ()}), "non-empty"),
        (dict(grid={**SMALL_GRID, "e": (float("nan"),)}), "finite"),
        (dict(delta=0.0), "delta"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, message):
    with pytest.raises(UserError, match=message):
        F.fit_chinchilla(synthetic(20, 0.01, seed=0), **kwargs)


def test_resample_weights_follow_groups():
    pts = synthetic(12, 0.01, seed=0)
    pts = FitPoints(pts.N, pts.D, pts.loss, group=np.repeat(np.arange(4), 3))
    w = F._resample_weights(pts, 50, np.random.default_rng(0))
    assert w.shape == (50, 12)
    np.testing.assert_array_equal(w.sum(axis=1), 12)  # 4 groups of 3 drawn 4 times
    np.testing.assert_array_equal(w[:, 0::3], w[:, 1::3])


def test_bootstrap_intervals_cover_truth_at_nominal_rate():
    """20 synthetic draws x 200 resamples: alpha's 90% interval should cover the truth ~90% of the time."""
    law = EPOCH_REPLICATION
    covered = {"alpha": 0, "beta": 0, "n_exponent": 0}
    for draw in range(20):
        pts = synthetic(40, 0.005, seed=100 + draw)
        boot = F.bootstrap_chinchilla(pts, n_boot=200, seed=draw, starts=4, level=0.9, grid=SMALL_GRID)
        assert boot.n_converged >= 190 and boot.samples["alpha"].shape == (200,)
        truth = {"alpha": law.alpha, "beta": law.beta, "n_exponent": law.n_exponent}
        for name in covered:
            lo, hi = boot.intervals[name]
            covered[name] += lo <= truth[name] <= hi
    assert 0.7 <= covered["alpha"] / 20 <= 1.0
    assert 0.6 <= covered["beta"] / 20 <= 1.0 and 0.6 <= covered["n_exponent"] / 20 <= 1.0


def test_bootstrap_1000_resamples_is_fast(tmp_path):
    pts = synthetic(50, 0.01, seed=7)
    fit = F.fit_chinchilla(pts, grid=SMALL_GRID)
    start = time.perf_counter()
    boot = F.bootstrap_chinchilla(pts, n_boot=1000, seed=0, fit=fit)
    assert time.perf_counter() - start < 60
    assert boot.n_boot == 1000 and boot.n_converged >= 950 and boot.fit is fit
    for name in ("E", "A", "B", "alpha", "beta", "n_exponent", "d_exponent"):
        lo, hi = boot.intervals[name]
        assert boot.samples[name].shape == (1000,) and lo < hi
    np.testing.assert_allclose(boot.samples["n_exponent"] + boot.samples["d_exponent"], 1.0)
    assert boot.intervals["alpha"][0] < fit.law.alpha < boot.intervals["alpha"][1]
    loaded = load_law(save_law(tmp_path / "law.json", fit.law, boot.intervals, boot.samples, fit.diagnostics))
    assert loaded.law == fit.law and loaded.intervals == boot.intervals
    np.testing.assert_array_equal(loaded.samples["beta"], boot.samples["beta"])
    assert loaded.diagnostics["n_starts"] == fit.n_starts


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(UserError):
        F.bootstrap_chinchilla(synthetic(20, 0.01, seed=0), n_boot=1)
    with pytest.raises(UserError):
        F.bootstrap_chinchilla(synthetic(20, 0.01, seed=0), level=1.5)


def test_kaplan_fit_recovers_constants():
    truth = KaplanLaw(Nc=8.8e13, Dc=5.4e13, aN=0.076, aD=0.095)
    base = synthetic(60, 0.0, seed=4)
    noise = np.exp(np.random.default_rng(4).normal(0.0, 0.002, 60))
    result = F.fit_kaplan(FitPoints(base.N, base.D, truth.loss(base.N, base.D) * noise))
    assert result.n_starts == 576 and result.converged
    assert result.law.aN == pytest.approx(truth.aN, rel=0.05)
    assert result.law.aD == pytest.approx(truth.aD, rel=0.05)
    assert result.objective == pytest.approx(F.kaplan_objective(result.params, FitPoints(
        base.N, base.D, truth.loss(base.N, base.D) * noise)))  # fmt: skip
