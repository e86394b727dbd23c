"""scaling/design.py: proposed runs stay within the compute and the candidates' bounds, target the constants a fit
could not identify, and (the criterion) shrink the linearised target variance more than random affordable runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.chinchilla import ChinchillaLaw, fit_chinchilla
from smallest_loss.scaling.design import PRIOR_SD, candidates, jacobian, suggest_runs, target_gradients
from smallest_loss.scaling.points import FitPoints, centring

LAW = ChinchillaLaw(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.36)


def isoflop(budgets, sizes, noise: float, seed: int = 0) -> FitPoints:
    rng = np.random.default_rng(seed)
    C = np.repeat(budgets, sizes)
    N = np.concatenate([np.sqrt(c / 6) / 3 * np.geomspace(0.3, 3, sizes) for c in budgets])
    D = C / (6 * N)
    return FitPoints(N, D, LAW.loss(N, D) * np.exp(rng.normal(0.0, noise, len(N))))


@pytest.fixture(scope="module")
def narrow():
    """Two close small budgets, 2% noise: neither E nor the exponents are identified (the fit ties and fixes)."""
    points = isoflop([1e17, 2e17], 4, 0.02, seed=1)
    return points, fit_chinchilla(points)


@pytest.mark.slow
def test_an_under_identified_table_gets_affordable_runs_that_target_what_failed(narrow):
    points, fit = narrow
    assert fit.form != "full"
    spend = 5e18
    design = suggest_runs(points, 1e21, spend, runs=4, fit=fit)
    assert 1 <= len(design.runs) <= 4
    assert design.cost <= spend * (1 + 1e-9)
    cheapest = float((6 * points.N * points.D).min())
    assert all(r.C >= cheapest / 10 * (1 - 1e-9) for r in design.runs)
    assert all(math.isclose(r.C, 6 * r.N * r.D, rel_tol=1e-9) for r in design.runs)
    assert design.identify  # the fit's reasons name constants, and the design aims at them
    assert design.loss_width_after < design.loss_width_before
    assert design.nopt_width_after < design.nopt_width_before


def _criterion(theta, mu, sigma, prior, grads, weights, logN, logD):
    J = jacobian(theta, logN, logD, mu)
    cov = np.linalg.inv(np.diag(prior) + J.T @ J / sigma**2)
    return float(np.einsum("qi,ij,qj->q", grads, cov, grads) @ weights)


def test_the_suggested_run_shrinks_the_target_variance_more_than_random_affordable_runs():
    points = isoflop([1e17, 3e17, 1e18, 3e18], 5, 0.005, seed=1)
    fit = fit_chinchilla(points)
    assert fit.form == "full"
    spend, target = 3e19, 1e22
    design = suggest_runs(points, target, spend, runs=1, fit=fit)
    (run,) = design.runs
    mu, law = centring(points), fit.law
    theta = np.array([math.log(law.A) - law.alpha * mu[0], math.log(law.B) - law.beta * mu[1], law.E, law.alpha,
                      law.beta])  # fmt: skip
    prior = 1.0 / (np.array(PRIOR_SD) * np.array([1, 1, points.loss.min(), 1, 1])) ** 2
    grads = target_gradients(theta, mu, target, ())
    logN, logD = np.log(points.N), np.log(points.D)
    J = jacobian(theta, logN, logD, mu)
    before = np.einsum("qi,ij,qj->q", grads, np.linalg.inv(np.diag(prior) + J.T @ J / design.sigma**2), grads)
    value = lambda n, d: _criterion(theta, mu, design.sigma, prior, grads, 1 / before, np.append(logN, n),  # noqa: E731
                                    np.append(logD, d))  # fmt: skip
    suggested = value(math.log(run.N), math.log(run.D))
    cand = candidates(points, spend)
    pick = np.random.default_rng(0).choice(len(cand[0]), 40, replace=False)
    random_values = [value(cand[0][i], cand[1][i]) for i in pick]
    assert suggested < 2.0  # the criterion before the run: each quantity weighted by its own variance, so 2
    assert np.mean(np.array(random_values) > suggested) >= 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(target=-1.0, spend=1e19), "--target"),
        (dict(target=1e21, spend=float("nan")), "--spend"),
        (dict(target=1e21, spend=1e19, runs=0), "--runs"),
        (dict(target=1e21, spend=1e10), "buys no run"),
    ],
)
def test_bad_arguments_are_one_line_errors(narrow, kwargs, message):
    points, fit = narrow
    with pytest.raises(UserError, match=message) as err:
        suggest_runs(points, fit=fit, **kwargs)
    assert "\n" not in str(err.value)
