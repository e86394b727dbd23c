"""The Kaplan law L(N, D) = ((Nc/N)^(aN/aD) + Dc/D)^aD (Kaplan et al. 2020, eq. 1.5) and its fit.

The fit minimises the log-space Huber objective of Approach 3 (Hoffmann et al. 2022, eq. 3; scaling/chinchilla.py)
with the same batched L-BFGS and fast path (scaling/optimize.py), from `KAPLAN_GRID` (576 starts), unbounded.
Exponents are optimised as logs (they must be positive) and log Nc, log Dc centred on the data.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import jax, jnp
from smallest_loss.scaling.chinchilla import FitResult
from smallest_loss.scaling.optimize import (
    DEFAULT_DELTA,
    GRAD_TOL,
    Problem,
    evaluate,
    grid_starts,
    huber,
    minimise,
    scaled_tol,
)
from smallest_loss.scaling.points import ArrayLike, FitPoints, centring, check_spread


@dataclass(frozen=True)
class KaplanLaw:
    """L(N, D) = ((Nc/N)^(aN/aD) + Dc/D)^aD (Kaplan et al. 2020, eq. 1.5)."""

    Nc: float
    Dc: float
    aN: float
    aD: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float | np.floating | np.integer) or not math.isfinite(value):
                raise UserError(f"KaplanLaw.{f.name}={value!r} must be a finite number")
            if not value > 0:
                raise UserError(f"KaplanLaw.{f.name}={value!r} must be positive")
            object.__setattr__(self, f.name, float(value))

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Predicted loss ((Nc/N)^(aN/aD) + Dc/D)^aD, broadcast over N and D."""
        N = np.asarray(N, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        out = ((self.Nc / N) ** (self.aN / self.aD) + self.Dc / D) ** self.aD
        return float(out) if np.ndim(out) == 0 else out


KAPLAN_PARAMS = ("log_Nc", "log_Dc", "aN", "aD")
# A grid around Kaplan et al. 2020's Nc ~ 8.8e13, Dc ~ 5.4e13, aN ~ 0.076, aD ~ 0.095: 6 * 6 * 4 * 4 = 576 starts.
KAPLAN_GRID: dict[str, tuple[float, ...]] = {
    "log_Nc": (15.0, 20.0, 25.0, 30.0, 35.0, 40.0),
    "log_Dc": (15.0, 20.0, 25.0, 30.0, 35.0, 40.0),
    "aN": (0.05, 0.1, 0.2, 0.4),
    "aD": (0.05, 0.1, 0.2, 0.4),
}


def _kaplan_one(z: jax.Array, w: jax.Array, data: tuple) -> jax.Array:
    """Huber(log L_kaplan - log L); log L_kaplan = aD * LSE((aN/aD)(log Nc - log N), log Dc - log D)."""
    xN, xD, logL, delta = data
    lnc, ldc, log_aN, log_aD = z[0], z[1], z[2], z[3]
    aN, aD = jnp.exp(log_aN), jnp.exp(log_aD)
    pred = aD * jnp.logaddexp(aN / aD * (lnc - xN), ldc - xD)
    return jnp.sum(w * huber(pred - logL, delta)[0])


def _kaplan_vg(z: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    """Objective and gradient of every start (rows of z) by autodiff; w shared (P,) or per start (S, P)."""
    w_axis = 0 if w.ndim == 2 else None
    return jax.vmap(jax.value_and_grad(_kaplan_one), in_axes=(0, w_axis, None))(z, w, data)


def kaplan_objective(params: np.ndarray, points: FitPoints, delta: float = DEFAULT_DELTA) -> float:
    """sum_i Huber_delta(log L_kaplan(N_i, D_i) - log L_i) at (log Nc, log Dc, aN, aD) (Kaplan et al. 2020)."""
    log_Nc, log_Dc, aN, aD = np.asarray(params, dtype=np.float64)
    pred = aD * np.logaddexp(aN / aD * (log_Nc - np.log(points.N)), log_Dc - np.log(points.D))
    return float(np.sum(huber(pred - np.log(points.loss), delta, np)[0]))


def fit_kaplan(
    points: FitPoints,
    delta: float = DEFAULT_DELTA,
    grid: dict[str, Any] | None = None,
    grad_tol: float = GRAD_TOL,
    max_evals: int = 1000,
    exhaustive: bool = False,
) -> FitResult:
    """Fit L = ((Nc/N)^(aN/aD) + Dc/D)^aD (Kaplan et al. 2020, eq. 1.5) by the same log-space Huber
    objective and minimiser as Approach 3, from `KAPLAN_GRID` (576 starts). Exponents are optimised as
    logs (they must be positive) and log Nc, log Dc centred on the data.
    """
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive")
    check_spread(points)
    begin = time.perf_counter()
    starts, _ = grid_starts(grid, KAPLAN_GRID)
    if np.any(starts[:, 2:] <= 0):
        raise UserError("Kaplan grid values for aN and aD must be positive")
    mu = centring(points)
    shift = np.array([mu[0], mu[1], 0.0, 0.0])
    unbounded = np.array([[-np.inf] * 4, [np.inf] * 4])
    problem = Problem(_kaplan_vg, lambda pts: (np.log(pts.N) - mu[0], np.log(pts.D) - mu[1], np.log(pts.loss),
                                               np.float64(delta)), unbounded)  # fmt: skip
    z, n_at_best = minimise(problem, points, np.c_[starts[:, :2] - shift[:2], np.log(starts[:, 2:])], max_evals,
                            exhaustive)  # fmt: skip
    params = np.r_[z[:2] + shift[:2], np.exp(z[2:])]
    grad = evaluate(problem, points, z)[1] / np.r_[1.0, 1.0, params[2:]]  # d/d(log x) = x d/dx
    grad_norm = float(np.max(np.abs(grad)))
    grad_tol = scaled_tol(grad_tol, len(points))
    warnings = (
        []
        if grad_norm <= grad_tol
        else [f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {grad_tol:g}; check the data"]
    )
    return FitResult(
        law=KaplanLaw(Nc=np.exp(params[0]), Dc=np.exp(params[1]), aN=params[2], aD=params[3]),
        params=params, param_names=KAPLAN_PARAMS, objective=kaplan_objective(params, points, delta),
        grad_norm=grad_norm, converged=grad_norm <= grad_tol, n_starts=len(starts), warnings=tuple(warnings),
        seconds=time.perf_counter() - begin, delta=delta, n_at_best=n_at_best, form="kaplan",
        form_description="Kaplan et al. 2020 form: Nc, Dc, aN, aD fitted",
    )  # fmt: skip
