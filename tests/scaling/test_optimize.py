"""The batched projected L-BFGS (scaling/optimize.py) on a problem with a known answer, and the bootstrap's
resample counts (scaling/bootstrap.py) as per-start weights."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy import optimize as scipy_optimize
from smallest_loss.scaling import optimize
from smallest_loss.scaling.bootstrap import resample_counts
from smallest_loss.scaling.optimize import GroupWeights, batched_lbfgs


def _quadratic_vg(z, w, data):
    """Weighted least squares sum_j w_j (z . x_j - y_j)^2: convex, exact answer by lstsq."""
    X, y = data
    r = z @ X.T - y
    return jnp.sum(w * r**2, -1), 2 * (w * r) @ X


def test_batched_lbfgs_group_weights_bounds_and_small_pools(monkeypatch):
    """Per-resample group weights, a box, and a pool capped by the element budget (4 rows of 30 points)."""
    monkeypatch.setattr(optimize, "ELEMENT_BUDGET", 4 * 30)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.01 * rng.normal(size=30)
    counts = rng.integers(0, 4, size=(10, 15)).astype(float)  # 10 resamples of 15 groups of 2 points
    weights = GroupWeights(counts, np.repeat(np.arange(15), 2), np.repeat(np.arange(10), 3))
    box = np.array([[-np.inf, -1.0, -np.inf, -np.inf], [np.inf, np.inf, 0.2, np.inf]])
    res = batched_lbfgs(_quadratic_vg, rng.normal(size=(30, 4)) * 5, weights, (X, y), bounds=box, gtol=1e-5,
                          ftol=0.0, window_ftol=0.0)  # fmt: skip
    assert res["converged"].all()
    for start in range(30):
        sw = np.sqrt(weights.take(np.array([start]))[0])
        exact = scipy_optimize.lsq_linear(X * sw[:, None], y * sw, bounds=box, tol=1e-12).x
        np.testing.assert_allclose(res["x"][start], exact, atol=1e-6)
    assert res["x"][:, 1].min() >= -1.0 and res["x"][:, 2].max() <= 0.2


def test_resample_counts_follow_groups():
    counts = resample_counts(4, 50, np.random.default_rng(0))
    assert counts.shape == (50, 4)
    np.testing.assert_array_equal(counts.sum(axis=1), 4)
    weights = GroupWeights(counts, np.repeat(np.arange(4), 3), np.arange(50)).take(np.arange(50))
    assert weights.shape == (50, 12)
    np.testing.assert_array_equal(weights[:, 0::3], weights[:, 1::3])
