"""Chinchilla Approach 3 the way Hoffmann et al. 2022 ran it: L-BFGS from each of a grid of starts, in JAX.

The default fit (scaling/chinchilla.py) goes by variable projection in numpy (scaling/projection.py). This module
keeps the paper's method for what needs it: a fit from a user's own start grid, the exhaustive fit that the
benchmark (experiments/scripts/bench_fit.py) checks the default against, and objectives for JAX callers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from smallest_loss.configs.lazy import jax, jnp
from smallest_loss.scaling.optimize import Problem, evaluator, huber, minimise
from smallest_loss.scaling.points import FitPoints

if TYPE_CHECKING:
    from smallest_loss.scaling.chinchilla import ChinchillaForm


def _chinchilla_vg(z: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    """Huber(log(exp(a' - alpha*xN) + exp(b' - beta*xD) + exp(e)) - log L) summed with weights.

    The gradient is analytic. No max-shift in the log-sum-exp: inside the bounds every exponent is
    moderate, and outside them an overflow gives a non-finite value that the line search rejects.
    """
    xN, xD, logL, delta = data[:4]
    a, b, e, alpha, beta = (z[:, i : i + 1] for i in range(5))
    e1, e2, e3 = jnp.exp(a - alpha * xN), jnp.exp(b - beta * xD), jnp.exp(e)
    total = e1 + e2 + e3
    h, slope = huber(jnp.log(total) - logL, delta)
    q = w * slope / total
    q1, q2 = q * e1, q * e2
    g = jnp.stack([q1.sum(-1), q2.sum(-1), q.sum(-1) * e3[:, 0], -(q1 * xN).sum(-1), -(q2 * xD).sum(-1)], axis=-1)
    return jnp.sum(w * h, axis=-1), g


def form_vg(u: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    """The Chinchilla objective in a form's free coordinates u: z = z0 + u M^T, gradient M^T g_z."""
    M, z0 = data[4], data[5]
    f, g = _chinchilla_vg(z0 + u @ M.T, w, data)
    return f, g @ M


def form_problem(form: ChinchillaForm, mu: tuple[float, float], delta: float) -> Problem:
    """The form's objective, its data for any points (centred on `mu`) and its box, for scaling/optimize.py."""

    def data_for(pts: FitPoints) -> tuple:
        return (np.log(pts.N) - mu[0], np.log(pts.D) - mu[1], np.log(pts.loss), np.float64(delta), form.M, form.z0)

    return Problem(form_vg, data_for, form.box)


def objective_lbfgs(
    params: np.ndarray, points: FitPoints, delta: float, weights: np.ndarray
) -> tuple[float, np.ndarray]:
    """The Approach 3 objective and gradient in uncentred (a, b, e, alpha, beta), evaluated in JAX."""
    data = (np.log(points.N), np.log(points.D), np.log(points.loss), np.float64(delta))
    return evaluator(_chinchilla_vg, data, weights)(np.asarray(params, np.float64))


def minimise_lbfgs(form: ChinchillaForm, points: FitPoints, mu: tuple[float, float], delta: float,
                   starts: np.ndarray, max_evals: int, exhaustive: bool) -> tuple[np.ndarray, int]:  # fmt: skip
    """The best u of the form from `starts` by scaling/optimize.py's batched L-BFGS (screened unless
    `exhaustive`), and how many starts reached it."""
    return minimise(form_problem(form, mu, delta), points, starts, max_evals, exhaustive)
