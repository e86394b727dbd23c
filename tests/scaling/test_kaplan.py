"""The Kaplan fit (scaling/kaplan.py) recovers known constants from synthetic points."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.scaling.kaplan import KaplanLaw, fit_kaplan, kaplan_objective
from smallest_loss.scaling.points import FitPoints

from tests.scaling.test_chinchilla import synthetic


def test_kaplan_fit_recovers_constants():
    truth = KaplanLaw(Nc=8.8e13, Dc=5.4e13, aN=0.076, aD=0.095)
    base = synthetic(60, 0.0, seed=4)
    noise = np.exp(np.random.default_rng(4).normal(0.0, 0.002, 60))
    loss = ((truth.Nc / base.N) ** (truth.aN / truth.aD) + truth.Dc / base.D) ** truth.aD * noise
    pts = FitPoints(base.N, base.D, loss)
    grid = {"log_Nc": (25.0, 35.0), "log_Dc": (25.0, 35.0), "aN": (0.05, 0.1), "aD": (0.05, 0.1)}
    result = fit_kaplan(pts, grid=grid)
    assert result.n_starts == 16 and result.converged and result.form == "kaplan"
    assert result.law.aN == pytest.approx(truth.aN, rel=0.05)
    assert result.law.aD == pytest.approx(truth.aD, rel=0.05)
    assert result.objective == pytest.approx(kaplan_objective(result.params, pts))
