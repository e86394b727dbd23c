"""The other forms of the recipe laws, fitted on the cells of scaling/recipe.py, and their held-out comparison.

Batch. Beside McCandlish et al.'s D_min (1 + B/B_crit), which only charges large batches, the optimal-batch
form (recipe.py `OptimalBatchLaw`): at each (N, D) point the cells' best losses follow
    log L*(g, B) = c_g + gamma (log B - log b0 - b_d log D - b_n log N)^2,
a U in log batch around B_opt = b0 D^b_d N^b_n. For fixed (b0, b_d, b_n) the rest is linear (closed-form
c_g and gamma), so the fit is Nelder-Mead over the three from a start that regresses each point's parabola
vertex on log D. b_n is fitted only when asked (`with_n`): Zhang et al. (2024) and Bergsma et al. (2025) find
the best batch grows with the tokens, not the model size.

Learning rate. Beside log eta* = c0 + a log N + b log B, the form of Li et al. (2025, "Predictable Scale"):
log eta* = c0 + a log N + b log D, by least squares over the bracketed cells.

Comparison (`compare_forms`): each form is refitted without (a) the held-out batch sizes and (b) the held-out
(N, D) points (the largest), and predicts them. Batch forms predict the cells' best losses; each held-out
point's level (c_g, or a_g of McCandlish's) is fitted on its own cells, so what is compared is the shape in
batch, not the level a loss law would give. Rate forms predict log eta*. The winner has the lower mean of the
two errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import optimize
from smallest_loss.scaling.recipe import Cell, LRLaw, OptimalBatchLaw, fit_batch_law, fit_lr_law


def _arrays(cells: Sequence[Cell]) -> tuple[np.ndarray, ...]:
    groups = np.unique([c.group for c in cells], return_inverse=True)[1]
    logs = (np.log([getattr(c, k) for c in cells]) for k in ("batch_tokens", "D", "N", "loss_star"))
    return (groups, *logs)


def _profile(z: np.ndarray, groups: np.ndarray, lB: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple:
    """(sse, gamma, c_g) of log L = c_g + gamma (lB - X z)^2 with the closed-form gamma and group constants."""
    u2 = (lB - X @ z) ** 2
    onehot = np.eye(groups.max() + 1)[groups]
    count = onehot.sum(0)
    u2c = u2 - ((u2 @ onehot) / count) @ onehot.T
    yc = y - ((y @ onehot) / count) @ onehot.T
    gamma = float(np.sum(u2c * yc) / max(float(np.sum(u2c**2)), 1e-300))
    c = (y @ onehot - gamma * (u2 @ onehot)) / count
    sse = float(np.sum((y - c @ onehot.T - gamma * u2) ** 2))
    return (sse if gamma > 0 else math.inf), gamma, c


def _columns(lD: np.ndarray, lN: np.ndarray, with_n: bool) -> np.ndarray:
    """The regressors of log B_opt: 1, log D (when D varies), log N (when asked)."""
    cols = [np.ones_like(lD)]
    if np.ptp(lD) > 1e-9:
        cols.append(lD)
    if with_n:
        cols.append(lN)
    X = np.column_stack(cols)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise UserError("the optimal-batch law in N and D needs points whose N and D do not vary together")
    return X


def _start(groups: np.ndarray, lB: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each point's parabola vertex in log B, regressed on X (one row per point); the middle batch without any."""
    rows, vertices = [], []
    for g in np.unique(groups):
        m = groups == g
        if len(np.unique(lB[m])) >= 3:
            c2, c1, _ = np.polyfit(lB[m], y[m], 2)
            if c2 > 0:
                rows.append(X[m][0])
                vertices.append(min(max(-c1 / (2 * c2), lB[m].min()), lB[m].max()))
    z = np.zeros(X.shape[1])
    if len(rows) >= X.shape[1]:
        return np.linalg.lstsq(np.array(rows), np.array(vertices), rcond=None)[0]
    z[0] = float(np.median(lB))
    return z


def fit_optimal_batch(cells: Sequence[Cell], with_n: bool = False) -> OptimalBatchLaw:
    """The optimal-batch law on the cells' best losses (module docstring)."""
    if len({c.batch_tokens for c in cells}) < 3:
        raise UserError("the optimal-batch law needs cells at three or more batch sizes")
    groups, lB, lD, lN, y = _arrays(cells)
    X = _columns(lD, lN, with_n)
    starts = [_start(groups, lB, X, y)]
    if X.shape[1] > 1:  # also from B_opt ~ D^0.5 through the middle batch, in case the vertices mislead
        starts.append(np.array([np.median(lB) - 0.5 * np.median(lD), 0.5, *([0.0] * (X.shape[1] - 2))]))
    best = None
    for z0 in starts:
        res = optimize.minimize(lambda z: _profile(z, groups, lB, X, y)[0], z0, method="Nelder-Mead",
                       options=dict(xatol=1e-6, fatol=1e-14, maxiter=4000))  # fmt: skip
        if best is None or res.fun < best.fun:
            best = res
    z = best.x
    sse, gamma, _ = _profile(z, groups, lB, X, y)
    if not math.isfinite(sse):
        raise UserError("the cells' best losses do not rise on both sides of any batch: no optimal batch to fit")
    has_d = X.shape[1] > (2 if with_n else 1)
    return OptimalBatchLaw(
        log_b0=float(z[0]),
        d_exponent=float(z[1]) if has_d else 0.0,
        n_exponent=float(z[-1]) if with_n else 0.0,
        gamma=gamma,
        batch_range=(float(np.exp(lB.min())), float(np.exp(lB.max()))),
        residual_rms=math.sqrt(sse / len(y)),
    )


def optimal_predict(law: OptimalBatchLaw, cells: Sequence[Cell], level_from: Sequence[Cell]) -> np.ndarray:
    """Best losses of `cells` under the optimal-batch law, each point's level c_g from its cells in
    `level_from`."""

    def log_factor(cs: Sequence[Cell]) -> np.ndarray:
        return np.log(law.factor([c.batch_tokens for c in cs], [c.N for c in cs], [c.D for c in cs]))

    lf = log_factor(level_from)
    y = np.log([c.loss_star for c in level_from])
    level = {g: float(np.mean((y - lf)[[c.group == g for c in level_from]])) for g in {c.group for c in level_from}}
    return np.exp(np.array([level[c.group] for c in cells]) + log_factor(cells))


def mccandlish_predict(cells: Sequence[Cell], fit_on: Sequence[Cell], level_from: Sequence[Cell]) -> np.ndarray:
    """Best losses of `cells` under McCandlish's law fitted on `fit_on`, each point's level a_g from its cells in
    `level_from` (K, beta and B_crit held)."""
    law = fit_batch_law(list(fit_on), n_boot=0)
    K = float(_mccandlish_K(fit_on, law.beta, law.b_crit))

    def x(cs: Sequence[Cell]) -> np.ndarray:
        return (np.array([c.D for c in cs]) / (1 + np.array([c.batch_tokens for c in cs]) / law.b_crit)) ** -law.beta

    resid = np.array([c.loss_star for c in level_from]) - K * x(level_from)
    level = {g: float(np.mean(resid[[c.group == g for c in level_from]])) for g in {c.group for c in level_from}}
    return np.array([level[c.group] for c in cells]) + K * x(cells)


def _mccandlish_K(cells: Sequence[Cell], beta: float, b_crit: float) -> float:
    """K of McCandlish's law at (beta, B_crit), the group constants profiled out (as `batch_predict` does)."""
    groups = np.unique([c.group for c in cells], return_inverse=True)[1]
    xv = (np.array([c.D for c in cells]) / (1 + np.array([c.batch_tokens for c in cells]) / b_crit)) ** -beta
    L = np.array([c.loss_star for c in cells])
    onehot = np.eye(groups.max() + 1)[groups]
    xc = xv - ((xv @ onehot) / onehot.sum(0)) @ onehot.T
    Lc = L - ((L @ onehot) / onehot.sum(0)) @ onehot.T
    return float(np.sum(xc * Lc) / max(float(np.sum(xc * xc)), 1e-300))


def fit_lr_nd(cells: Sequence[Cell]) -> LRLaw:
    """log eta* = c0 + a log N + b log D over the bracketed cells (Li et al. 2025)."""
    use = [c for c in cells if c.bracketed]
    X = np.column_stack([np.ones(len(use)), np.log([c.N for c in use]), np.log([c.D for c in use])])
    if len(use) < 4 or np.linalg.matrix_rank(X) < 3:
        raise UserError("the learning-rate law in N and D needs bracketed cells at points whose N and D do not "
                        "vary together")  # fmt: skip
    y = np.log([c.lr_star for c in use])
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    return LRLaw(
        c0=float(coef[0]),
        n_exponent=float(coef[1]),
        batch_exponent=0.0,
        N_range=(min(c.N for c in use), max(c.N for c in use)),
        batch_range=(min(c.batch_tokens for c in use), max(c.batch_tokens for c in use)),
        residual_rms=float(np.sqrt(np.mean((y - X @ coef) ** 2))),
        form="N,D",
        d_exponent=float(coef[2]),
    )


def fit_lr_form(cells: Sequence[Cell], form: str) -> LRLaw:
    """The learning-rate law of `form` ("N,B" or "N,D") without intervals."""
    return fit_lr_nd(cells) if form == "N,D" else fit_lr_law(list(cells), n_boot=0)
