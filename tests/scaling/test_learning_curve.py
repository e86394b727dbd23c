"""Learning-curve extrapolation L(S) = L_inf + k S^-a (Kaplan et al. 2020) on synthetic curves."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.learning_curve import extrapolation_error, fit_learning_curve

STEPS = np.unique(np.geomspace(1, 10_000, 300).round())


def power_curve(S, L_inf=2.0, k=5.0, a=0.3):
    return L_inf + k * S**-a


def test_exact_power_law_is_recovered():
    fit = fit_learning_curve(STEPS[50:], power_curve(STEPS[50:]))
    assert (fit.L_inf, fit.k, fit.a) == pytest.approx((2.0, 5.0, 0.3), rel=1e-5)
    assert fit.predict(1e6) == pytest.approx(power_curve(1e6), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("L_inf, k, a", [(2.0, 5.0, 0.3), (1.2, 20.0, 0.6), (3.0, 1.0, 0.1)])
def test_extrapolation_within_one_percent(L_inf, k, a):
    rng = np.random.default_rng(0)
    losses = power_curve(STEPS, L_inf, k, a) * np.exp(rng.normal(0, 0.002, len(STEPS)))
    result = extrapolation_error(STEPS, losses, fraction=0.5)
    assert abs(result.rel_error) < 0.01
    assert result.S_final == STEPS[-1] and result.actual == losses[-1]
    assert result.fit.S_hi <= 0.5 * STEPS[-1] and result.fit.S_lo > 0.1 * STEPS[-1]


def test_warmup_is_skipped():
    losses = power_curve(STEPS)
    warm = STEPS <= 500
    losses[warm] = 5.6 + (1 - STEPS[warm] / 500)  # a warmup plateau that is no power law
    result = extrapolation_error(STEPS, losses, fraction=0.5, warmup_steps=500)
    assert abs(result.rel_error) < 0.01
    assert result.fit.S_lo > 500


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=STEPS[:-1]), "same length"),
        (dict(losses=-power_curve(STEPS)), "positive"),
        (dict(steps=STEPS[::-1].copy()), "increasing"),
        (dict(fraction=1.0), "fraction"),
        (dict(skip_fraction=0.6), "skip_fraction"),
        (dict(warmup_steps=4999), "only"),
    ],
)
def test_extrapolation_errors(kwargs, message):
    args = dict(steps=STEPS, losses=power_curve(STEPS)) | kwargs
    with pytest.raises(UserError, match=message):
        extrapolation_error(**args)


def test_too_few_points_to_fit():
    with pytest.raises(UserError, match="at least 4"):
        fit_learning_curve(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.5, 2.4]))
