"""Approaches 1 and 2 recover the allocation exponents of a known law."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.isoflop import LearningCurve, approach1, approach2, fit_power_law, fit_profile, group_budgets
from smallest_loss.scaling.laws import CHINCHILLA_PUBLISHED, EPOCH_REPLICATION


def isoflop_runs(law, budgets, per_budget=9, noise=1e-4, seed=0):
    """Runs at each budget on a log grid of sizes centred (roughly) on the optimum."""
    rng = np.random.default_rng(seed)
    C, N, L = [], [], []
    for c in budgets:
        n_opt, _ = law.optimal_allocation(c)
        ns = n_opt * np.exp(np.linspace(-1.2, 1.2, per_budget) + rng.uniform(-0.3, 0.3))
        C += [c * (1 + 1e-5 * rng.normal())] * per_budget  # budgets as logged: not exactly equal
        N += list(ns)
        L += list(law.loss(ns, c / (6 * ns)) * np.exp(rng.normal(0, noise, per_budget)))
    return np.array(C), np.array(N), np.array(L)


@pytest.mark.parametrize("law", [EPOCH_REPLICATION, CHINCHILLA_PUBLISHED])
def test_approach2_recovers_exponents(law):
    result = approach2(*isoflop_runs(law, np.geomspace(1e18, 1e21, 7)))
    assert len(result.profiles) == 7
    assert result.a == pytest.approx(law.n_exponent, abs=0.02)
    assert result.b == pytest.approx(law.d_exponent, abs=0.02)
    assert result.a + result.b == pytest.approx(1.0, abs=1e-9)  # D_opt = C / (6 N_opt)
    for p in result.profiles:
        assert p.N_opt == pytest.approx(law.optimal_allocation(p.C)[0], rel=0.1)
        assert 6 * p.N_opt * p.D_opt == pytest.approx(p.C)


def test_approach2_warns_when_minimum_is_extrapolated():
    law = EPOCH_REPLICATION
    C = np.repeat([1e19, 1e20], 4)
    N = np.concatenate([law.optimal_allocation(c)[0] * np.geomspace(2, 8, 4) for c in (1e19, 1e20)])
    result = approach2(C, N, law.loss(N, C / (6 * N)))
    assert len(result.warnings) == 2 and "outside the sampled" in result.warnings[0]


def test_approach2_errors():
    law = EPOCH_REPLICATION
    C, N, L = isoflop_runs(law, [1e19, 1e20])
    with pytest.raises(UserError, match="at least 3"):
        approach2(np.r_[C, 1e21, 1e21], np.r_[N, 1e9, 2e9], np.r_[L, 2.5, 2.4])
    with pytest.raises(UserError, match="opens downward"):
        fit_profile(1e20, np.array([1e8, 1e9, 1e10]), np.array([2.0, 3.0, 2.0]))
    with pytest.raises(UserError, match="at least 2 budgets"):
        approach2(C[:9], N[:9], L[:9])
    with pytest.raises(UserError, match="same length"):
        approach2(C, N[:-1], L)
    with pytest.raises(UserError, match="positive"):
        approach2(C, -N, L)


def test_group_budgets_and_power_law():
    labels = group_budgets(np.array([1e20, 1e19, 1.00001e20, 1e21, 0.99999e19]))
    assert list(labels) == [1, 0, 1, 2, 0]
    x = np.geomspace(1e18, 1e22, 5)
    fit = fit_power_law(x, 3.0 * x**0.5)
    assert fit.exponent == pytest.approx(0.5) and fit.coefficient == pytest.approx(3.0) and fit.r2 == pytest.approx(1)
    assert fit(1e20) == pytest.approx(3e10)
    with pytest.raises(UserError):
        fit_power_law(np.array([1.0, 1.0]), np.array([2.0, 3.0]))


def synthetic_curves(law, sizes, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    curves = []
    for n in sizes:
        D = np.geomspace(1e8, 1e12, 300)
        loss = law.loss(n, D) * np.exp(rng.normal(0, noise, len(D)))
        curves.append(LearningCurve(N=n, flops=6 * n * D, loss=loss, tokens=D))
    return curves


def test_approach1_lower_envelope_recovers_exponent():
    law = EPOCH_REPLICATION
    result = approach1(synthetic_curves(law, np.geomspace(1e7, 1e10, 30)))
    assert result.a == pytest.approx(law.n_exponent, abs=0.03)
    assert result.b == pytest.approx(law.d_exponent, abs=0.03)
    np.testing.assert_allclose(6 * result.N_opt * result.D_opt, result.C, rtol=1e-6)
    assert np.all(np.diff(result.N_opt) >= 0)  # bigger budgets never pick smaller models here


def test_approach1_errors():
    law = EPOCH_REPLICATION
    with pytest.raises(UserError, match="at least 2"):
        approach1(synthetic_curves(law, [1e8]))
    with pytest.raises(UserError, match="one run"):
        approach1(synthetic_curves(law, [1e8, 1e9]))  # interior-only leaves nothing to fit
    with pytest.raises(UserError, match="increasing"):
        LearningCurve(N=1e8, flops=np.array([2.0, 1.0]), loss=np.array([3.0, 2.0]))
    with pytest.raises(UserError, match="positive"):
        LearningCurve(N=1e8, flops=np.array([1.0, 2.0]), loss=np.array([3.0, -2.0]))
