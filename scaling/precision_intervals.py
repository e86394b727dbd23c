"""Calibrated intervals for the precision law (scaling/precision_law.py): the same calibration as the Chinchilla
law's (scaling/intervals.py), from the precision law's own residuals, so that a plan's interval is that of a new
run's loss at the precision planned, not the bootstrap's spread of the constants alone.

- The runs' scatter: the log residuals of every training row (a run once) around the precision law at its own
  bits, with the profile g(x) = 1 + c x^2 in x, the decades between the run's N and the unquantised law's N_opt at
  its compute, over n - p degrees of freedom, p the constants the form fitted (E, A, B, alpha, beta, a gamma per
  free group, the additive form's C, gamma_D, gamma_N).
- One budget up: with at least `STEP_MIN_BUDGETS` budgets, the law (same form) refitted on every budget but the
  largest predicts the largest one's rows at their bits; the ratio of those errors to the refit's scatter.
- The law's part: the bootstrap's robust spread times `LAW_FACTOR`, and `FALLBACK_FACTOR` when the form fell back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.intervals import (
    FALLBACK_FACTOR,
    LAW_FACTOR,
    IntervalCalibration,
    optimum_distance,
    residual_scale,
    scale_ratio,
    top_budget,
)
from smallest_loss.scaling.precision_law import KINDS, PrecisionLaw
from smallest_loss.scaling.precision_table import PrecisionPoints


def _residuals(
    law: PrecisionLaw, data: PrecisionPoints, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(log residuals at each row's bits, decades from the unquantised law's N_opt) of the rows (all: None)."""
    p = data.points
    rows = np.arange(len(p)) if rows is None else rows
    N, D = p.N[rows], p.D[rows]
    predicted = np.asarray(law.loss(N, D, *(data.bits[k][rows] for k in KINDS)), float)
    main = ChinchillaLaw(law.E, law.A, law.B, law.alpha, law.beta)
    return np.log(p.loss[rows]) - np.log(predicted), optimum_distance(main, N, D)


def precision_step_ratio(data: PrecisionPoints, form: str, n_params: int,
                         fit_fn: Callable[[PrecisionPoints, str], Any]) -> float:  # fmt: skip
    """rho one budget up (module docstring); 1 with fewer than `STEP_MIN_BUDGETS` budgets or when the refit is
    refused. `fit_fn(data, form)` is the precision fit (scaling/precision_fit.py, which imports this module)."""
    top = top_budget(data.points.budgets)
    if top is None:
        return 1.0
    try:
        below = data.take(~top)
        refit = fit_fn(below, form).law
    except UserError:
        return 1.0
    s, shape = residual_scale(*_residuals(refit, below), n_params)
    if not s > 0:
        return 1.0
    error, x = _residuals(refit, data, np.flatnonzero(top))
    return scale_ratio(error, x, s, shape)


def calibrate_precision(law: PrecisionLaw, data: PrecisionPoints, n_params: int, fell_back: bool,
                        step_ratio: float = 1.0) -> IntervalCalibration:  # fmt: skip
    """The calibration of a precision law fitted with `n_params` free constants to `data`'s training rows."""
    r, x = _residuals(law, data)
    s, shape = residual_scale(r, x, n_params)
    factor = LAW_FACTOR * (FALLBACK_FACTOR if fell_back else 1.0)
    return IntervalCalibration(s, len(r), n_params, law_factor=factor, shape=shape, step_ratio=step_ratio)
