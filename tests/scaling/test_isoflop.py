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
    """N_opt ~ C^a, D_opt ~ C^b with the generating law's a = beta / (alpha + beta), b = alpha / (alpha + beta)
    (Hoffmann et al. 2022, eq. 4), written out here from its constants.

    Two errors, bounded separately: the parabola's bias (the IsoFLOP profile is not a parabola in ln N; on
    noise-free runs a is within 5e-4 of the truth over 100 seeds of the sampled sizes, bounded at 1e-3), and
    the loss noise's, whose standard deviation sigma_a follows from the noise by propagating it through each
    budget's parabola vertex and the slope across budgets (it matches the spread over 100 seeds within 6%).
    """
    budgets, noise = np.geomspace(1e18, 1e21, 7), 1e-3
    a_true, b_true = law.beta / (law.alpha + law.beta), law.alpha / (law.alpha + law.beta)
    G = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    clean = approach2(*isoflop_runs(law, budgets, noise=0.0))
    assert abs(clean.a - a_true) < 1e-3 and abs(clean.b - b_true) < 1e-3
    C, N, L = isoflop_runs(law, budgets, noise=noise)  # the same sizes and budgets, the losses with noise
    result = approach2(C, N, L)
    assert len(result.profiles) == 7
    # sigma_a: loss noise (multiplicative, sd `noise`) through each least-squares parabola c2 x^2 + c1 x + c0 in
    # x = ln N to its vertex x* = -c1 / (2 c2), then through the least-squares slope of x* against ln C.
    var_vertex, log_c = [], []
    for p in result.profiles:
        at = np.isclose(C, p.C, rtol=1e-3)
        x = np.log(N[at])
        X = np.c_[x**2, x, np.ones_like(x)]
        c2, c1, _ = p.coeffs
        grad = np.array([c1 / (2 * c2**2), -1 / (2 * c2), 0.0])
        var_vertex.append(grad @ ((noise * L[at].mean()) ** 2 * np.linalg.inv(X.T @ X)) @ grad)
        log_c.append(np.log(p.C))
    centred = np.array(log_c) - np.mean(log_c)
    sigma_a = np.sqrt(np.sum((centred / np.sum(centred**2)) ** 2 * np.array(var_vertex)))
    assert 1e-4 < sigma_a < 1e-2  # the noise matters here, and still pins the exponents down
    assert abs(result.a - clean.a) < 4 * sigma_a and abs(result.b - clean.b) < 4 * sigma_a
    assert abs(result.a - a_true) < 1e-3 + 4 * sigma_a and abs(result.b - b_true) < 1e-3 + 4 * sigma_a
    for p in result.profiles:  # each vertex near the optimum N_opt = G (C/6)^a (within 6% over 100 seeds)
        assert p.N_opt == pytest.approx(G * (p.C / 6) ** a_true, rel=0.1)
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
