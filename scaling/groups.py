"""Grouped fits: one loss law per data set (or evaluation set) with shared exponents, and each set's
compute multiplier against a reference set.

The form, for group g (Hoffmann et al. 2022 notation):

    L_g(N, D) = E_g + A/N^alpha + B/(k_g D)^beta,    k_ref = 1,

so each group has its own irreducible loss E_g and its own data constant B_g = B k_g^(-beta); A, alpha
and beta are shared. Why this form:

- Data of different quality: a token of group g is worth k_g tokens of the reference, an effective-data
  multiplier on D in the data term of Kaplan et al. 2020 and Hoffmann et al. 2022. The model-size term
  A/N^alpha is the model's capacity, which the data do not change, so it is shared.
- Evaluation sets of one training run: Kaplan et al. 2020 (sec. 3.2.2) found the loss on another
  distribution to track the training loss with a nearly constant offset, which is E_g - E_ref.
- One form covers both, at one constant per group more than either alone; the fit then says which the
  data need (an offset near 0, or k_g near 1). Freeing A per group too would make each group its own
  Chinchilla law with shared exponents, more than a small sweep can pin down.

The compute multiplier of group g at a budget C (FLOPs, C = 6ND) is the compute the reference needs to
reach g's compute-optimal loss at C, divided by C. The compute-optimal loss under C = 6ND is (from
Hoffmann et al. 2022, eq. 4, substituted into eq. 2)

    L*_g(C) = E_g + K_g (C/6)^(-gamma),  gamma = alpha beta/(alpha + beta),  K_g = (1 + alpha/beta) A G_g^(-alpha),

with G_g = (alpha A/(beta B_g))^(1/(alpha + beta)), so m_g(C) = (6/C) ((L*_g(C) - E_ref)/K_ref)^(-1/gamma).
With E_g = E_ref it is k_g at every C; with an offset it changes with C, so it is reported at stated
budgets (the smallest and the largest in the data), and it is infinite where g's loss lies at or below
the reference's E (no reference compute reaches it).

Fitting: the Approach 3 objective (log-space Huber, delta = 1e-3, scaling/chinchilla.py) inside chinchilla.py's
box (each E_g below its group's smallest loss), in numpy: variable projection over a grid of (alpha, beta) (the
law is linear in A and every E_g and B_g there: non-negative least squares), its best local minima and the best
of Chinchilla's start grid each run 100 L-BFGS-B iterations, and the two best run to convergence. On the data
lever's table and 40 synthetic grouped sets it reached the optimum of the earlier search (4500 starts on a
batched JAX L-BFGS) within 5e-10 of the objective everywhere; the command takes 1.7 s cold instead of 4.2-4.7 s.
The bootstrap still refits its resamples at once on the batched JAX L-BFGS.

Intervals: percentile bootstrap (Besiroglu et al. 2024) resampling within groups: each group's points
(or its runs, when a `run` column labels them) are drawn with replacement from that group, so every
resample keeps every group; a run with points in several groups (evaluation sets of one run) is drawn
whole, which keeps the sets paired.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import jax, jnp, optimize
from smallest_loss.scaling.bootstrap import interval, resample_within_groups
from smallest_loss.scaling.chinchilla import CHINCHILLA_GRID, E_FLOOR, ChinchillaLaw, chinchilla_bounds
from smallest_loss.scaling.fitbase import blocked
from smallest_loss.scaling.optimize import (
    BOUND_TOL,
    DEFAULT_DELTA,
    GRAD_TOL,
    GroupWeights,
    batched_lbfgs,
    huber,
)
from smallest_loss.scaling.points import FitPoints, budget_labels
from smallest_loss.scaling.projection import GRID_SIZE, local_minima

MIN_GROUP_POINTS = 4  # each group adds two constants (E_g, k_g) to the three shared ones
POLISH_STARTS = 8  # starts from the variable-projection grid and from Chinchilla's grid (`_starts`)
SCREEN_ITERS = 100  # L-BFGS-B iterations of every start; the FINAL_STARTS best then run to convergence
FINAL_STARTS = 2


def group_names(points: FitPoints) -> list[str]:
    """The data sets in the order they first appear."""
    if points.dataset is None:
        return []
    _, first = np.unique(points.dataset, return_index=True)
    return [str(points.dataset[i]) for i in np.sort(first)]


def reference_index(names: list[str], reference: str | None) -> int:
    """Index of the reference group: `reference` when given, else the first group."""
    if reference is None:
        return 0
    if reference not in names:
        found = ", ".join(names) if names else "none: the CSV has no 'group' column"
        raise UserError(f"--reference {reference!r} is not a group of these points (groups: {found})")
    return names.index(reference)


def check_groups(points: FitPoints, reference: str | None) -> tuple[list[str], int]:
    """The group names and the reference's index; one clear line for a group the fit cannot use."""
    names = group_names(points)
    ref = reference_index(names, reference)
    for name in names:
        mine = points.dataset == name
        if mine.sum() < MIN_GROUP_POINTS:
            raise UserError(
                f"group {name!r} has {int(mine.sum())} point(s); a grouped fit needs at least "
                f"{MIN_GROUP_POINTS} per group (each group fits its own E and data multiplier)"
            )
        if len(np.unique(points.D[mine])) < 2:
            raise UserError(
                f"group {name!r}: all its points share one D, so its E and data multiplier cannot "
                "be told apart; give it runs with several token counts"
            )
    return names, ref


# ---------------------------------------------------------------------------------------------------
# The objective. Coordinates u = (a', alpha, beta, e_1..e_G, b'_1..b'_G), centred as in scaling/chinchilla.py:
# a' = log A - alpha mean(log N), b'_g = log B_g - beta mean(log D), e_g = log E_g.


def _grouped_one(u: jax.Array, w: jax.Array, data: tuple) -> jax.Array:
    """sum_i w_i Huber(LSE(a' - alpha xN_i, b'_g(i) - beta xD_i, e_g(i)) - log L_i) (Hoffmann et al. 2022, eq. 3)."""
    xN, xD, logL, delta, onehot = data
    G = onehot.shape[1]
    e, b = onehot @ u[3 : 3 + G], onehot @ u[3 + G :]
    pred = jnp.logaddexp(jnp.logaddexp(u[0] - u[1] * xN, b - u[2] * xD), e)
    return jnp.sum(w * huber(pred - logL, delta)[0])


def _grouped_vg(u: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    """Objective and gradient of every start (rows of u); w shared (P,) or per start (S, P)."""
    return jax.vmap(jax.value_and_grad(_grouped_one), in_axes=(0, 0 if w.ndim == 2 else None, None))(u, w, data)


@dataclass(frozen=True)
class _Setup:
    """The data of a grouped fit in the optimiser's terms: centring, data tuple, box, group index."""

    mu: tuple[float, float]
    data: tuple
    box: np.ndarray  # (2, 3 + 2G)
    index: np.ndarray  # (P,) group of each point

    @property
    def G(self) -> int:
        return self.data[4].shape[1]


def _setup(points: FitPoints, names: list[str], delta: float) -> _Setup:
    sorted_names, inverse = np.unique(points.dataset, return_inverse=True)
    index = np.array([names.index(str(n)) for n in sorted_names])[inverse.ravel()]
    mu = (float(np.log(points.N).mean()), float(np.log(points.D).mean()))
    data = (np.log(points.N) - mu[0], np.log(points.D) - mu[1], np.log(points.loss), np.float64(delta),
            np.eye(len(names))[index])  # fmt: skip
    box5 = chinchilla_bounds(points)  # (a', b', e, alpha, beta) on all points
    low = np.log([points.loss[index == g].min() for g in range(len(names))])
    G = len(names)
    box = np.array([[box5[0, 0], box5[0, 3], box5[0, 4], *(low + math.log(E_FLOOR)), *[box5[0, 1]] * G],
                    [box5[1, 0], box5[1, 3], box5[1, 4], *low, *[box5[1, 1]] * G]])  # fmt: skip
    return _Setup(mu, data, box, index)


def _grid_starts(setup: _Setup) -> np.ndarray:
    """Chinchilla's 4500 grid starts (Hoffmann et al. 2022), every group at the grid's e and b, in the box."""
    a, b, e, alpha, beta = np.array(list(itertools.product(*CHINCHILLA_GRID.values()))).T
    G = setup.G
    u = np.column_stack([a - alpha * setup.mu[0], alpha, beta, *[e] * G, *[b - beta * setup.mu[1]] * G])
    return np.unique(np.round(np.clip(u, setup.box[0], setup.box[1]), 12), axis=0)


def _log_pred(U: np.ndarray, setup: _Setup) -> tuple[np.ndarray, np.ndarray]:
    """log pred at every point for each row of U (S, 3 + 2G), and each of the three terms' share of pred."""
    xN, xD, _, _, onehot = setup.data
    G = onehot.shape[1]
    terms = np.stack([U[:, :1] - U[:, 1:2] * xN, U[:, 3 + G :] @ onehot.T - U[:, 2:3] * xD, U[:, 3 : 3 + G] @ onehot.T])
    top = terms.max(axis=0)
    share = np.exp(terms - top)
    total = share.sum(axis=0)
    return top + np.log(total), share / total


def _objectives(U: np.ndarray, setup: _Setup) -> np.ndarray:
    """The objective (every point once) at each row of U, in numpy."""
    _, _, logL, delta, _ = setup.data
    return huber(_log_pred(U, setup)[0] - logL, delta, np)[0].sum(axis=1)


def grouped_objective(u: np.ndarray, setup: _Setup) -> tuple[float, np.ndarray]:
    """The objective of `_grouped_one` (every point once) and its gradient in u, in numpy float64."""
    xN, xD, logL, delta, onehot = setup.data
    log_pred, share = _log_pred(u[None], setup)
    value, slope = huber(log_pred[0] - logL, delta, np)
    s1, s2, s3 = slope * share[:, 0]
    return float(value.sum()), np.r_[s1.sum(), -(xN @ s1), -(xD @ s2), onehot.T @ s3, onehot.T @ s2]


def _projected_starts(setup: _Setup, count: int) -> np.ndarray:
    """Variable projection (scaling/projection.py's method for one group): on a grid of (alpha, beta) the law is
    linear in A, every B_g and every E_g, solved exactly by non-negative least squares on the relative errors; the
    grid's `count` best local minima (by the Huber objective, each clipped into the box) are the polish's starts."""
    xN, xD, logL, _, onehot = setup.data
    G, box, P = setup.G, setup.box, len(xN)
    alphas, betas = (np.linspace(box[0, k], box[1, k], GRID_SIZE) for k in (1, 2))
    inverse = np.exp(-logL)
    powers_N, powers_D = np.exp(-np.outer(alphas, xN)) * inverse, np.exp(-np.outer(betas, xD))
    Phi = np.zeros((P, 1 + 2 * G))
    Phi[:, 1 + G :] = onehot * inverse[:, None]
    c = np.zeros((GRID_SIZE, GRID_SIZE, 1 + 2 * G))
    for i, j in itertools.product(range(GRID_SIZE), range(GRID_SIZE)):
        Phi[:, 0] = powers_N[i]
        Phi[:, 1 : 1 + G] = Phi[:, 1 + G :] * powers_D[j][:, None]
        c[i, j] = optimize.nnls(Phi, np.ones(P), maxiter=50 * Phi.shape[1])[0]
    with np.errstate(divide="ignore"):
        logs = np.log(c.reshape(-1, 1 + 2 * G))
    exponents = np.array(list(itertools.product(alphas, betas)))
    U = np.clip(np.column_stack([logs[:, 0], exponents, logs[:, 1 + G :], logs[:, 1 : 1 + G]]), box[0], box[1])
    return U[local_minima(_objectives(U, setup), (GRID_SIZE, GRID_SIZE), count)]


def _starts(setup: _Setup, count: int) -> np.ndarray:
    """The polish's starts: the variable-projection grid's `count` best local minima, and the `count` best of
    Chinchilla's grid by the objective itself (where a term runs to a bound, an exponent the projection leaves flat
    can still lower the objective: Chinchilla's grid starts some at its ends)."""
    grid = _grid_starts(setup)
    return np.vstack([_projected_starts(setup, count), grid[np.argsort(_objectives(grid, setup))[:count]]])


def _finite_f(result: tuple[np.ndarray, float, float]) -> float:
    return result[1] if np.isfinite(result[1]) else np.inf


def _polish(setup: _Setup, u: np.ndarray, maxiter: int = 2000) -> tuple[np.ndarray, float, float]:
    """Continue from u with scipy's L-BFGS-B (tight tolerances, same box) in float64 for at most `maxiter`
    iterations; returns the point, its objective and its largest projected gradient."""
    res = optimize.minimize(grouped_objective, u, args=(setup,), jac=True, method="L-BFGS-B",
                            bounds=list(zip(*setup.box, strict=True)),
                            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-12})  # fmt: skip
    x = res.x if np.isfinite(res.fun) and res.fun <= grouped_objective(u, setup)[0] else u
    f, g = grouped_objective(x, setup)
    return x, f, float(np.max(np.abs(np.where(blocked(x, g, setup.box), 0.0, g))))


# ---------------------------------------------------------------------------------------------------
# The fit.


@dataclass(frozen=True)
class GroupedFit:
    """Shared A, alpha, beta; per-group E and B (data multiplier k = (B_ref/B)^(1/beta)); the fit's state."""

    names: tuple[str, ...]
    reference: int
    A: float
    alpha: float
    beta: float
    E: np.ndarray  # (G,)
    B: np.ndarray  # (G,)
    points: np.ndarray  # (G,) points per group
    objective: float
    grad_norm: float
    converged: bool
    warnings: tuple[str, ...]
    seconds: float
    u: np.ndarray  # fitted coordinates (for the bootstrap)
    setup: _Setup

    def law(self, g: int) -> ChinchillaLaw:
        """Group g's law E_g + A/N^alpha + B_g/D^beta."""
        return ChinchillaLaw(E=self.E[g], A=self.A, B=self.B[g], alpha=self.alpha, beta=self.beta)

    @property
    def k(self) -> np.ndarray:
        """Each group's data multiplier against the reference (`data_multiplier`)."""
        return data_multiplier(self.B, self.beta, self.reference)


def _constants(u: np.ndarray, mu: tuple[float, float], G: int) -> dict[str, np.ndarray]:
    """Natural constants from coordinates u (..., 3 + 2G)."""
    alpha, beta = u[..., 1], u[..., 2]
    return {"A": np.exp(u[..., 0] + alpha * mu[0]), "alpha": alpha, "beta": beta,
            "E": np.exp(u[..., 3 : 3 + G]), "B": np.exp(u[..., 3 + G :] + beta[..., None] * mu[1])}  # fmt: skip


def _at_bound_warnings(u: np.ndarray, setup: _Setup, names: list[str]) -> list[str]:
    span = setup.box[1] - setup.box[0]
    lower, upper = np.abs(u - setup.box[0]) <= BOUND_TOL * span, np.abs(u - setup.box[1]) <= BOUND_TOL * span
    labels = ["A", "alpha", "beta", *(f"E of {n!r}" for n in names), *(f"B of {n!r}" for n in names)]
    return [f"{labels[i]} ran to its {'lower' if lower[i] else 'upper'} bound: the points do not pin it down"
            for i in np.flatnonzero(lower | upper)]  # fmt: skip


def _run(setup: _Setup, starts: np.ndarray, weights: GroupWeights | None = None, **kwargs: Any) -> dict:
    """optimize.py's batched L-BFGS on the grouped objective, float64, weights always per start (every point
    once when not given), so the fit and its bootstrap share compiled code."""
    if weights is None:
        P = len(setup.index)
        weights = GroupWeights(np.ones((1, P), np.float32), np.arange(P), np.zeros(len(starts), np.int64))
    return batched_lbfgs(_grouped_vg, starts, weights, setup.data, bounds=setup.box, **kwargs)


def fit_groups(points: FitPoints, reference: str | None = None, delta: float = DEFAULT_DELTA) -> GroupedFit:
    """Fit L_g = E_g + A/N^alpha + B_g/D^beta to the points of every group at once (module docstring)."""
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive (Chinchilla used 1e-3)")
    names, ref = check_groups(points, reference)
    if len(names) < 2:
        raise UserError("a grouped fit needs a 'group' column naming at least two groups")
    begin = time.perf_counter()
    setup = _setup(points, names, delta)
    screened = sorted((_polish(setup, u0, SCREEN_ITERS) for u0 in _starts(setup, POLISH_STARTS)), key=_finite_f)
    polished = [_polish(setup, u0) for u0, _, _ in screened[:FINAL_STARTS]]
    u, objective, grad_norm = min(polished, key=_finite_f)
    if not np.isfinite(objective):
        raise UserError("no start gave a finite objective; check that the losses are sensible")
    c = _constants(u, setup.mu, len(names))
    warnings = _at_bound_warnings(u, setup, names)
    tol = GRAD_TOL * max(1.0, len(points) / 1000)
    if grad_norm > tol:
        warnings.append(f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {tol:g}; check the data")
    return GroupedFit(
        names=tuple(names), reference=ref, A=float(c["A"]), alpha=float(c["alpha"]), beta=float(c["beta"]),
        E=c["E"], B=c["B"], points=np.bincount(setup.index, minlength=len(names)), objective=objective,
        grad_norm=grad_norm, converged=grad_norm <= tol, warnings=tuple(warnings),
        seconds=time.perf_counter() - begin, u=u, setup=setup,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Multipliers.


def data_multiplier(B: np.ndarray, beta: Any, reference: int) -> np.ndarray:
    """k_g = (B_ref/B_g)^(1/beta) for every group (last axis of B): with B_g = B_ref k_g^(-beta), one token
    of group g is worth k_g tokens of the reference."""
    return (B[..., reference : reference + 1] / B) ** (1.0 / np.asarray(beta, np.float64)[..., None])


def compute_multiplier(E: np.ndarray, B: np.ndarray, A: Any, alpha: Any, beta: Any, reference: int,
                       C: float) -> np.ndarray:  # fmt: skip
    """m_g(C) = C_ref / C for every group (last axis of E and B; A, alpha, beta broadcast over the rest):
    the compute the reference needs to reach group g's compute-optimal loss at budget C (module docstring).
    Infinite where that loss is at or below the reference's E."""
    A, alpha, beta = (np.asarray(v, np.float64)[..., None] for v in (A, alpha, beta))
    gamma = alpha * beta / (alpha + beta)
    G = (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))  # Hoffmann et al. 2022, eq. 4
    K = (1.0 + alpha / beta) * A * G**-alpha
    x = C / 6.0
    gap = E + K * x**-gamma - E[..., reference : reference + 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = (np.where(gap > 0, gap, np.nan) / K[..., reference : reference + 1]) ** (-1.0 / gamma) / x
    return np.where(gap > 0, m, np.inf)


def frontier_budgets(points: FitPoints) -> list[float]:
    """The budgets the multipliers are reported at: the smallest and the largest in the data (each the
    geometric mean of its points' budgets, points.budgets grouped by `budget_labels`)."""
    labels, log_C = budget_labels(points.budgets), np.log(points.budgets)
    ends = sorted({int(labels.min()), int(labels.max())})
    return [float(np.exp(log_C[labels == label].mean())) for label in ends]


# ---------------------------------------------------------------------------------------------------
# Bootstrap.


@dataclass(frozen=True)
class GroupBootstrap:
    """Constants refitted on resamples: A, alpha, beta (R,); E, B (R, G)."""

    samples: dict[str, np.ndarray]
    level: float
    n_boot: int
    n_converged: int
    seconds: float
    warnings: tuple[str, ...]


def bootstrap_groups(points: FitPoints, fit: GroupedFit, n_boot: int = 1000, seed: int = 0, starts: int = 4,
                     level: float = 0.95) -> GroupBootstrap:  # fmt: skip
    """Refit on `n_boot` resamples drawn within groups (module docstring), all at once; each resample
    starts from the fit and `starts - 1` perturbations of it, and keeps its best."""
    if n_boot < 2 or starts < 1 or not 0 < level < 1:
        raise UserError(f"need n_boot >= 2, starts >= 1 and 0 < level < 1; got {n_boot}, {starts}, {level}")
    begin, rng, setup = time.perf_counter(), np.random.default_rng(seed), fit.setup
    counts, unit = resample_within_groups(points, setup.index, n_boot, rng)
    G = setup.G
    scale = np.r_[0.3, 0.1, 0.1, [0.1] * G, [0.3] * G]  # log terms, exponents, log E: as scaling/bootstrap.py
    x0 = np.clip(np.vstack([fit.u, fit.u + rng.normal(size=(starts - 1, len(fit.u))) * scale]), *setup.box)
    res = _run(setup, np.tile(x0, (n_boot, 1)), GroupWeights(counts, unit, np.repeat(np.arange(n_boot), starts)))
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf).reshape(n_boot, starts)
    pick = np.arange(n_boot) * starts + np.argmin(f, axis=1)
    n_converged = int(np.sum(np.max(np.abs(res["g"][pick]), axis=1) <= GRAD_TOL * max(1.0, len(points) / 1000)))
    warnings = (
        []
        if n_converged >= 0.9 * n_boot
        else [f"only {n_converged} of {n_boot} bootstrap refits converged; intervals may be too wide"]
    )
    return GroupBootstrap(
        samples=_constants(res["x"][pick], setup.mu, G),
        level=level,
        n_boot=n_boot,
        n_converged=n_converged,
        seconds=time.perf_counter() - begin,
        warnings=tuple(warnings),
    )


# ---------------------------------------------------------------------------------------------------
# Summaries: per-group constants and multipliers, the reference's law with intervals.


def group_summary(fit: GroupedFit, boot: GroupBootstrap | None, budgets: list[float]) -> list[dict[str, Any]]:
    """One dict per group: points, E, B, data multiplier k, offset E - E_ref, and the compute multiplier at
    each budget, with intervals when bootstrapped (None where a value is infinite)."""
    ref, s = fit.reference, boot.samples if boot else None
    values = {"E": fit.E, "B": fit.B, "k": fit.k, "offset": fit.E - fit.E[ref]}
    draws = {} if s is None else {"E": s["E"], "B": s["B"], "k": data_multiplier(s["B"], s["beta"], ref),
                                  "offset": s["E"] - s["E"][:, ref : ref + 1]}  # fmt: skip
    for C in budgets:
        values[C] = compute_multiplier(fit.E, fit.B, fit.A, fit.alpha, fit.beta, ref, C)
        if s is not None:
            draws[C] = compute_multiplier(s["E"], s["B"], s["A"], s["alpha"], s["beta"], ref, C)
    rows = []
    for g, name in enumerate(fit.names):
        row: dict[str, Any] = dict(name=name, reference=g == ref, points=int(fit.points[g]))
        for key in ("E", "B", "k", "offset"):
            row[key] = float(values[key][g])
            row[f"{key}_interval"] = list(interval(draws[key][:, g], boot.level)) if boot else None
        row["multiplier"] = [dict(C=C, value=_finite(values[C][g]),
                                  interval=[_finite(v) for v in interval(draws[C][:, g], boot.level)] if boot else None)
                             for C in budgets]  # fmt: skip
        rows.append(row)
    return rows


def _finite(value: float) -> float | None:
    """JSON has no infinity: an unreachable multiplier is written as null."""
    return float(value) if math.isfinite(value) else None


def reference_samples(fit: GroupedFit, boot: GroupBootstrap) -> dict[str, np.ndarray]:
    """Bootstrap samples of the reference group's law, keyed as `bootstrap_chinchilla`'s (law JSON `samples`)."""
    s, ref = boot.samples, fit.reference
    alpha, beta = s["alpha"], s["beta"]
    return {"E": s["E"][:, ref], "A": s["A"], "B": s["B"][:, ref], "alpha": alpha, "beta": beta,
            "n_exponent": beta / (alpha + beta), "d_exponent": alpha / (alpha + beta)}  # fmt: skip
