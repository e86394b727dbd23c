"""Fitting the MoE laws of scaling/moe_law.py: variable projection, identification, bootstrap, hold-outs.

For fixed exponents the joint law (Ludziejewski et al. 2025) is linear in (a, b, c), the granularity law (Krajewski et
al. 2024) in (a, b, c, g). The fit is by variable projection (Golub and Pereyra 1973), as scaling/projection.py fits
Chinchilla: at given exponents the linear constants are the bounded least-squares fit of the relative errors
(pred - L)/L (first order in log pred - log L); the outer problem, the Huber objective of the projected residuals
log pred - log L (delta = 1e-3, Hoffmann et al. 2022), is minimised over the exponents within bounds from a small
Latin hypercube of starts by scipy's trust-region least squares with its Huber loss (at f_scale = delta it is
Huber's). L-BFGS-B with numerical gradients was tried first: it needed about ten times the evaluations, and its
per-iteration cost dominated on a loaded machine. The best few optima are then polished on the exact Huber objective
in all constants at once, with the analytic Jacobian (`_polish`).

Coordinates are centred as in scaling/chinchilla.py: x_N = ln N - mean ln N (D likewise), so a, b (and g) are the
terms at the data's geometric-mean N and D, and the joint law's delta, omega are the expert effects there; the
natural constants are recovered at the end (`_natural`).

Identification. The interaction exponents gamma and zeta need the N (D) slope measured at several expert counts;
delta and omega need several expert counts at all. A table with too few (`_design_form`) is fitted in a reduced form,
and so is a fit whose constants run to a bound, whose Jacobian is ill-conditioned or whose exponents are not
determined (`_not_identified`): "full" -> "reduced" (gamma = zeta = 0) -> "no_experts" (delta = omega = 0 too: the
Chinchilla law in N_act and D); the granularity form falls back to "no_granularity" (g = gamma_g = 0). The result
says which form and why.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares
from scipy.stats import qmc
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.bootstrap import interval
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.fitbase import DEFAULT_DELTA, huber
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.moe_law import (
    E_MAX,
    E_START,
    MIN_MOE_POINTS,
    MOE_FORMS,
    MoeLaw,
    MoePoints,
    effective_experts,
)
from smallest_loss.scaling.points import budget_labels

NONLINEAR = {"joint": ("alpha", "beta", "gamma", "zeta", "delta", "omega"), "granularity": ("alpha", "beta", "gamma_g")}
LINEAR = {"joint": ("a", "b", "c"), "granularity": ("a", "b", "c", "g")}
BOUNDS = {"alpha": (0.01, 2.0), "beta": (0.01, 2.0), "gamma": (-0.3, 0.3), "zeta": (-0.3, 0.3),
          "delta": (-3.0, 3.0), "omega": (-3.0, 3.0), "gamma_g": (0.0, 2.0)}  # fmt: skip
# (delta and omega bound the centred values: the expert effect at the data's geometric-mean N and D)
FIXED = {  # each form's exponents held at 0
    "full": (), "reduced": ("gamma", "zeta"), "no_experts": ("gamma", "zeta", "delta", "omega"),
    "no_granularity": ("gamma_g",),
}  # fmt: skip
DESCRIPTIONS = {
    "full": "joint MoE law, all nine constants fitted",
    "reduced": "joint MoE law without the interactions (gamma = zeta = 0)",
    "no_experts": "the Chinchilla law in N_act and D (one expert count: no expert terms)",
    "granularity": "granularity law, all seven constants fitted",
    "no_granularity": "the Chinchilla law in N_act and D (one granularity: g = gamma_g = 0)",
}
LATIN_STARTS = 12  # outer L-BFGS-B starts from a Latin hypercube over the free exponents (plus one central)
POLISH = 3  # distinct best outer optima polished on the exact objective
OUTER_EVALS = 60  # the outer search finds basins (Jacobian evaluations aside); the polish converges
E_FLOOR, TERM_BOUNDS = 0.01, (1e-4, 10.0)  # as scaling/chinchilla.py: c >= 0.01 min(loss); terms in bounds
COND_MAX = 1e8  # largest condition number of the column-scaled Jacobian of log predictions
BOUND_TOL = 1e-3  # an exponent within this fraction of its range from a bound is at it
MIN_EXPERT_COUNTS = 3  # distinct expert counts the interactions need (two of them with several N and D)
MIN_BUDGETS = 3  # the largest-budget hold-out leaves at least two budgets


@dataclass(frozen=True)
class _Problem:
    """A form's data in centred coordinates: which exponents are free, the linear constants' box."""

    law_form: str
    form: str
    xN: np.ndarray
    xD: np.ndarray
    lE: np.ndarray  # ln Ehat
    lG: np.ndarray  # ln G (granularity form)
    logL: np.ndarray
    mu: tuple[float, float]
    lin_box: np.ndarray  # (2, k)
    delta: float

    @property
    def free(self) -> np.ndarray:
        return np.array([n not in FIXED[self.form] for n in NONLINEAR[self.law_form]])

    @property
    def box(self) -> np.ndarray:
        return np.array([BOUNDS[n] for n in NONLINEAR[self.law_form]]).T

    def take(self, index: np.ndarray) -> _Problem:
        return _Problem(self.law_form, self.form, self.xN[index], self.xD[index], self.lE[index], self.lG[index],
                        self.logL[index], self.mu, self.lin_box, self.delta)  # fmt: skip

    def with_form(self, form: str) -> _Problem:
        return _Problem(self.law_form, form, self.xN, self.xD, self.lE, self.lG, self.logL, self.mu, self.lin_box,
                        self.delta)  # fmt: skip


def _problem(points: MoePoints, law_form: str, form: str, delta: float, e_max: float) -> _Problem:
    logN, logD = np.log(points.N), np.log(points.D)
    mu = (float(logN.mean()), float(logD.mean()))
    lo, hi = math.log(points.loss.min()), math.log(points.loss.max())
    term = (math.exp(lo) * TERM_BOUNDS[0], math.exp(hi) * TERM_BOUNDS[1])
    lin = [term, term, (E_FLOOR * math.exp(lo), math.exp(lo))] + ([(0.0, term[1])] if law_form == "granularity" else [])
    lG = np.log(points.G) if law_form == "granularity" else np.zeros(len(points))
    return _Problem(law_form, form, logN - mu[0], logD - mu[1], np.log(effective_experts(points.E, E_START, e_max)),
                    lG, np.log(points.loss), mu, np.array(lin).T, float(delta))  # fmt: skip


def _columns(p: _Problem, theta: np.ndarray) -> np.ndarray:
    """The design (P, k) whose product with the linear constants is the prediction."""
    if p.law_form == "joint":
        alpha, beta, gamma, zeta, delta, omega = theta
        with np.errstate(over="ignore"):
            t1 = np.exp(delta * p.lE - (alpha + gamma * p.lE) * p.xN)
            t2 = np.exp(omega * p.lE - (beta + zeta * p.lE) * p.xD)
        return np.column_stack([t1, t2, np.ones_like(t1)])
    alpha, beta, gamma_g = theta
    tN = np.exp(-alpha * p.xN)
    g_col = tN * np.exp(-gamma_g * p.lG) if p.form != "no_granularity" else np.zeros_like(tN)
    return np.column_stack([tN, np.exp(-beta * p.xD), np.ones_like(tN), g_col])


def _linear(p: _Problem, Phi: np.ndarray) -> np.ndarray:
    """The linear constants within their box minimising the squared relative errors (variable projection): the
    best feasible solution over every face of the box (3^k of them, solved at once; k <= 4)."""
    A = Phi / np.exp(p.logL)[:, None]
    if not np.all(np.isfinite(A)):
        return np.full(A.shape[1], np.nan)
    k = A.shape[1]
    G, h = A.T @ A, A.sum(axis=0)
    G = G + 1e-12 * np.trace(G) * np.eye(k) + np.diag(np.all(A == 0, axis=0).astype(float))  # a column of zeros
    try:
        c = np.linalg.solve(G, h)  # all free: where feasible, the optimum
    except np.linalg.LinAlgError:
        return np.full(k, np.nan)
    if np.all((c >= p.lin_box[0]) & (c <= p.lin_box[1])):
        return c
    status = _faces(k)  # (F, k): 0 free, 1 at the lower bound, 2 at the upper
    value = np.where(status == 1, p.lin_box[0], np.where(status == 2, p.lin_box[1], 0.0))
    held = status > 0
    # held rows: c_j = its bound; free rows: G_FF c_F = h_F - G_FH c_H
    M = np.where(held[:, :, None] | held[:, None, :], np.eye(k), G)
    rhs = np.where(held, value, h - np.einsum("fij,fj->fi", np.where(held[:, None, :], G, 0.0), value))
    try:
        c = np.linalg.solve(M, rhs[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return np.full(k, np.nan)
    slack = 1e-9 * (p.lin_box[1] - p.lin_box[0] + 1.0)
    ok = np.all((c >= p.lin_box[0] - slack) & (c <= p.lin_box[1] + slack), axis=1)
    c = np.clip(c, p.lin_box[0], p.lin_box[1])
    q = np.einsum("fi,ij,fj->f", c, G, c) - 2 * c @ h
    return c[np.argmin(np.where(ok, q, np.inf))]


_FACE_CACHE: dict[int, np.ndarray] = {}


def _faces(k: int) -> np.ndarray:
    if k not in _FACE_CACHE:
        _FACE_CACHE[k] = np.array(list(itertools.product((0, 1, 2), repeat=k)))
    return _FACE_CACHE[k]


def _jacobian(p: _Problem, z: np.ndarray) -> np.ndarray:
    """d log pred / d (linear constants, free exponents): (P, k + free)."""
    k = p.lin_box.shape[1]
    coef, theta = z[:k], _theta(p, z[k:])
    Phi = _columns(p, theta)
    pred = Phi @ coef
    if p.law_form == "joint":
        t1, t2 = coef[0] * Phi[:, 0], coef[1] * Phi[:, 1]
        dtheta = [-p.xN * t1, -p.xD * t2, -p.lE * p.xN * t1, -p.lE * p.xD * t2, p.lE * t1, p.lE * t2]
    else:
        tN, tD, tG = coef[0] * Phi[:, 0], coef[1] * Phi[:, 1], coef[3] * Phi[:, 3]
        dtheta = [-p.xN * (tN + tG), -p.xD * tD, -p.lG * tG]
    J = np.column_stack([Phi, *(d for d, f in zip(dtheta, p.free, strict=True) if f)])
    return J / pred[:, None]


def _objective(p: _Problem, theta: np.ndarray, coef: np.ndarray, Phi: np.ndarray | None = None) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log((_columns(p, theta) if Phi is None else Phi) @ coef) - p.logL
    value = float(np.sum(huber(r, p.delta)[0]))
    return value if math.isfinite(value) else 1e30


def _theta(p: _Problem, u: np.ndarray) -> np.ndarray:
    theta = np.zeros(len(p.free))
    theta[p.free] = u
    return theta


def _projected(p: _Problem, u: np.ndarray) -> np.ndarray:
    """Residuals log pred - log L at exponents u with the linear constants projected out (`_linear`)."""
    Phi = _columns(p, _theta(p, u))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.log(Phi @ _linear(p, Phi)) - p.logL
    return np.where(np.isfinite(r), r, 1e3)


def _starts(p: _Problem, extra: list[np.ndarray], latin: int) -> np.ndarray:
    """A Latin hypercube over the free exponents' box (seeded: the fit is repeatable), its centre, earlier optima."""
    lo, hi = p.box[0][p.free], p.box[1][p.free]
    unit = qmc.LatinHypercube(d=len(lo), seed=0).random(latin)
    centre = np.where((lo < 0) & (hi > 0), 0.0, np.minimum(np.maximum(0.3, lo), hi))
    return np.vstack([lo + unit * (hi - lo), centre, *(e[p.free] for e in extra)])


def _residuals(p: _Problem, z: np.ndarray) -> np.ndarray:
    k = p.lin_box.shape[1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.log(_columns(p, _theta(p, z[k:])) @ z[:k]) - p.logL
    return np.where(np.isfinite(r), r, 1e3)


def _polish(p: _Problem, z0: np.ndarray) -> tuple[np.ndarray, bool]:
    """Minimise the Huber objective in every free constant from z0 (linear constants, then free exponents)."""
    k = p.lin_box.shape[1]
    lo = np.r_[p.lin_box[0], p.box[0][p.free]]
    hi = np.r_[np.maximum(p.lin_box[1], p.lin_box[0] + 1e-12), p.box[1][p.free]]
    z0 = np.clip(z0, lo, hi)
    scale = np.r_[np.maximum(np.abs(z0[:k]), 1e-3), np.ones(len(z0) - k)]
    res = least_squares(lambda z: _residuals(p, z), z0, jac=lambda z: _jacobian(p, z), bounds=(lo, hi),
                        loss="huber", f_scale=p.delta, x_scale=scale, max_nfev=400)  # fmt: skip
    return res.x, bool(res.status > 0)


def _minimise(p: _Problem, extra: list[np.ndarray], latin: int) -> tuple[np.ndarray, bool, int]:
    """The form's best (linear constants, free exponents), whether its polish converged, and the starts run."""
    lo, hi = p.box[0][p.free], p.box[1][p.free]
    starts = _starts(p, extra, latin)
    found = [least_squares(lambda u: _projected(p, u), np.clip(u0, lo, hi), bounds=(lo, hi), loss="huber",
                           f_scale=p.delta, max_nfev=OUTER_EVALS) for u0 in starts]  # fmt: skip
    for r in found:
        r.fun = 2 * r.cost  # the Huber objective (least_squares' cost is half its sum)
    order = np.argsort([r.fun for r in found])
    best: tuple[float, np.ndarray, bool] | None = None
    kept: list[np.ndarray] = []
    for i in order:
        u = found[i].x
        if any(np.max(np.abs(u - v)) < 1e-4 for v in kept):
            continue
        kept.append(u)
        z0 = np.r_[_linear(p, _columns(p, _theta(p, u))), u]
        if not np.all(np.isfinite(z0)):
            continue
        z, ok = _polish(p, z0)
        f = _objective(p, _theta(p, z[p.lin_box.shape[1] :]), z[: p.lin_box.shape[1]])
        if best is None or f < best[0]:
            best = (f, z, ok)
        if len(kept) == POLISH:
            break
    if best is None:
        raise UserError("no start of the MoE fit gave finite losses; check that the table's losses are sensible")
    return best[1], best[2], len(starts)


def _not_identified(p: _Problem, z: np.ndarray) -> list[str]:
    """Why the fitted form is not identified (empty: it is): exponents at bounds, conditioning, standard errors."""
    k = p.lin_box.shape[1]
    names = [n for n, f in zip(NONLINEAR[p.law_form], p.free, strict=True) if f]
    lo, hi = p.box[0][p.free], p.box[1][p.free]
    u = z[k:]
    reasons = [f"{n} ran to its {'lower' if abs(v - a) < abs(v - b) else 'upper'} bound"
               for n, v, a, b in zip(names, u, lo, hi, strict=True)
               if min(v - a, b - v) <= BOUND_TOL * (b - a)]  # fmt: skip
    used = np.flatnonzero(np.r_[np.any(_columns(p, _theta(p, u)) != 0, axis=0), np.ones(len(u), bool)])
    r0 = _residuals(p, z)
    J = _jacobian(p, z)[:, used]
    scaled = J / np.maximum(np.linalg.norm(J, axis=0), 1e-300)
    eig = np.linalg.eigvalsh(scaled.T @ scaled)
    cond = math.sqrt(eig[-1] / eig[0]) if eig[0] > 0 else math.inf
    if cond > COND_MAX:
        return reasons + [f"the Jacobian is ill-conditioned (condition number {cond:.3g})"]
    sigma2 = float(r0 @ r0) / max(len(r0) - len(used), 1)
    se = np.sqrt(np.maximum(np.diag(sigma2 * np.linalg.pinv(J.T @ J)), 0.0))[-len(u) :]
    for name, value, s in zip(names, u, se, strict=True):
        if name in ("alpha", "beta") and s > abs(value):
            reasons.append(f"{name} is not determined (standard error {s / abs(value):.0%} of it)")
    return reasons


# ---------------------------------------------------------------------------------------------------
# The fit: the form the design allows, then the fallback ladder.


def _design_form(points: MoePoints, law_form: str) -> tuple[str, list[str]]:
    """The richest form the table's design can identify, and why a richer one was not tried."""
    if law_form == "granularity":
        if len(np.unique(points.G)) < 2:
            return "no_granularity", ["one granularity only: g and gamma_g need several"]
        return "full", []
    counts = np.unique(points.E)
    if len(counts) < 2:
        return "no_experts", [f"one expert count only ({counts[0]:g}): the expert terms need several (the law "
                              f"describes runs of {counts[0]:g} experts at any E)"]  # fmt: skip
    at = [points.E == e for e in counts]
    spread = sum(len(np.unique(points.N[m])) > 1 and len(np.unique(points.D[m])) > 1 for m in at)
    if len(counts) < MIN_EXPERT_COUNTS or spread < 2:
        return "reduced", [f"{len(counts)} expert counts, {spread} with several N_act and D: the interactions gamma "
                           f"and zeta need {MIN_EXPERT_COUNTS} counts, two of them varying N_act and D"]  # fmt: skip
    return "full", []


def _ladder(law_form: str, first: str) -> list[str]:
    order = ["full", "no_granularity"] if law_form == "granularity" else ["full", "reduced", "no_experts"]
    return order[order.index(first) :]


@dataclass(frozen=True)
class MoeFit:
    """A fitted MoE law with how it was fitted: the form used (`form`: "full", "reduced", "no_experts",
    "no_granularity"), whether it is identified, the reasons per form left, the Huber objective, convergence."""

    law: MoeLaw
    form: str
    identified: bool
    not_identified: dict[str, list[str]]
    objective: float
    converged: bool
    n_starts: int
    seconds: float
    delta: float
    warnings: tuple[str, ...] = ()
    z: np.ndarray | None = field(default=None, repr=False, compare=False)  # internal constants, for the bootstrap
    exponents: np.ndarray | None = field(default=None, repr=False, compare=False)  # centred, a start for refits

    @property
    def form_description(self) -> str:
        return DESCRIPTIONS["granularity" if self.law.form == "granularity" and self.form == "full" else self.form]


def fit_moe(points: MoePoints, law_form: str = "joint", delta: float = DEFAULT_DELTA, e_max: float = E_MAX,
            latin: int = LATIN_STARTS, extra: tuple[np.ndarray, ...] = ()) -> MoeFit:  # fmt: skip
    """Fit the joint (Ludziejewski et al. 2025) or granularity (Krajewski et al. 2024) law: variable projection
    from a Latin hypercube of `latin` starts (and the exponents `extra`: earlier fits' `exponents`), the richest
    identified form (module docstring). Raises only for unusable input."""
    if law_form not in MOE_FORMS:
        raise UserError(f"--moe-form {law_form!r}: use one of {', '.join(MOE_FORMS)}")
    if not (math.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive (Chinchilla used 1e-3)")
    if not (math.isfinite(e_max) and e_max > max(E_START, float(points.E.max()))):
        raise UserError(f"--moe-emax {e_max!r} must be above the largest expert count ({points.E.max():g}) and 2")
    if law_form == "granularity" and np.isnan(points.G).any():
        raise UserError(f"--moe-form granularity: MoE table {points.source} needs a granularity in every row")
    if len(np.unique(points.N)) < 2 or len(np.unique(points.D)) < 2:
        raise UserError(f"MoE table {points.source}: N_active and D must each take at least two values to fit a law")
    start = time.perf_counter()
    first, why = _design_form(points, law_form)
    tried: dict[str, list[str]] = {"full": why} if why else {}
    found: list[np.ndarray] = list(extra)
    for form in _ladder(law_form, first):
        p = _problem(points, law_form, form, delta, e_max)
        z, converged, n_starts = _minimise(p, found, latin)
        found.append(_theta(p, z[p.lin_box.shape[1] :]))
        reasons = _not_identified(p, z)
        if not reasons:
            break
        tried[form] = reasons
    return _result(p, z, converged, n_starts, tried, e_max, time.perf_counter() - start)


def _natural(p: _Problem, z: np.ndarray, e_max: float) -> MoeLaw:
    """The law in natural units from centred constants (a = a' e^(alpha mu_N), delta = delta' + gamma mu_N, ...)."""
    k = p.lin_box.shape[1]
    coef, theta = z[:k], _theta(p, z[k:])
    muN, muD = p.mu
    if p.law_form == "joint":
        alpha, beta, gamma, zeta, delta, omega = theta
        return MoeLaw("joint", a=coef[0] * math.exp(alpha * muN), b=coef[1] * math.exp(beta * muD), c=coef[2],
                      alpha=alpha, beta=beta, gamma=gamma, zeta=zeta, delta=delta + gamma * muN,
                      omega=omega + zeta * muD, e_max=e_max)  # fmt: skip
    alpha, beta, gamma_g = theta
    scale = math.exp(alpha * muN)
    return MoeLaw("granularity", a=coef[0] * scale, b=coef[1] * math.exp(beta * muD), c=coef[2], g=coef[3] * scale,
                  alpha=alpha, beta=beta, gamma_g=gamma_g, e_max=e_max)  # fmt: skip


def _result(p: _Problem, z: np.ndarray, converged: bool, n_starts: int, tried: dict[str, list[str]], e_max: float,
            seconds: float) -> MoeFit:  # fmt: skip
    identified = p.form not in tried
    warnings = []
    if tried:
        why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in tried.items())
        warnings.append(f"the full law is not identified ({why}); using {DESCRIPTIONS[p.form]}" if identified else
                        f"no form is identified ({why}); using {DESCRIPTIONS[p.form]}: treat its constants as a "
                        "rough description of these points only")  # fmt: skip
    if not converged:
        warnings.append("the final polish did not converge; check the data")
    objective = _objective(p, _theta(p, z[p.lin_box.shape[1] :]), z[: p.lin_box.shape[1]])
    return MoeFit(_natural(p, z, e_max), p.form, identified, tried, objective, converged, n_starts, seconds, p.delta,
                  tuple(warnings), z, _theta(p, z[p.lin_box.shape[1]:]))  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Bootstrap (configurations resampled) and hold-outs.


def bootstrap_moe(points: MoePoints, fit: MoeFit, n_boot: int, level: float = 0.95,
                  seed: int = 0) -> tuple[dict[str, tuple[float, float]], dict[str, np.ndarray], int]:  # fmt: skip
    """Percentile intervals and samples of the law's constants over `n_boot` resamples of the table's
    configurations (every row of a drawn configuration, its seeds included, goes in together), each refitted from
    the fit's optimum in its form; and how many polishes converged."""
    key = points.configurations()
    rows = [np.flatnonzero(key == k) for k in range(key.max() + 1)]
    rng = np.random.default_rng(seed)
    p = _problem(points, fit.law.form, fit.form, fit.delta, fit.law.e_max)
    names = tuple(fit.law.constants)
    samples: dict[str, list[float]] = {n: [] for n in names}
    converged = 0
    for _ in range(n_boot):
        index = np.concatenate([rows[i] for i in rng.integers(0, len(rows), len(rows))])
        z, ok = _polish(p.take(index), fit.z)
        converged += ok
        law = _natural(p, z, fit.law.e_max)
        for n in names:
            samples[n].append(getattr(law, n))
    arrays = {n: np.array(v) for n, v in samples.items()}
    return {n: interval(v, level) for n, v in arrays.items()}, arrays, converged


def _errors(law: MoeLaw, points: MoePoints) -> np.ndarray:
    return law.loss(points.N, points.D, points.E, np.nan_to_num(points.G, nan=1.0)) / points.loss - 1


def _summary(rel: np.ndarray, fit: MoeFit, fitted: int) -> dict[str, Any]:
    return dict(held_points=len(rel), fitted_points=fitted, mean_abs_rel_error=float(np.mean(np.abs(rel))),
                max_abs_rel_error=float(np.max(np.abs(rel))), mean_rel_error=float(np.mean(rel)), form=fit.form,
                identified=fit.identified)  # fmt: skip


HOLDOUT_LATIN = 4  # a hold-out refit's Latin starts, beside the full fit's exponents


def holdout_experts(points: MoePoints, law_form: str = "joint", delta: float = DEFAULT_DELTA, e_max: float = E_MAX,
                    start: MoeFit | None = None) -> dict[str, Any]:  # fmt: skip
    """Each expert count left out in turn: the law fitted on the others (from `HOLDOUT_LATIN` starts and the
    exponents of `start`, the fit on all) predicts its runs. The mean over counts of each count's mean |relative
    error| (`mean_abs_rel_error`), and each count's; or `skipped` with the reason."""
    counts = np.unique(points.E)
    if len(counts) < MIN_EXPERT_COUNTS:
        return {"skipped": f"{len(counts)} expert counts: leaving one out needs {MIN_EXPERT_COUNTS}"}
    each, skipped = [], []
    for e in counts:
        test = points.E == e
        try:
            fit = fit_moe(points.take(~test), law_form, delta, e_max, HOLDOUT_LATIN, _extra(start))
        except UserError as err:  # the rest cannot be fitted: that count is not held out, and the report says why
            skipped.append({"experts": float(e), "reason": str(err)})
            continue
        each.append(dict(experts=float(e), **_summary(_errors(fit.law, points.take(test)), fit, int((~test).sum()))))
    if not each:
        return {"skipped": "no expert count could be left out: " + "; ".join(s["reason"] for s in skipped)}
    mean = float(np.mean([h["mean_abs_rel_error"] for h in each]))
    return {"mean_abs_rel_error": mean, "counts": each, "not_held_out": skipped}


def _extra(start: MoeFit | None) -> tuple[np.ndarray, ...]:
    return () if start is None or start.exponents is None else (start.exponents,)


def holdout_budget(points: MoePoints, law_form: str = "joint", delta: float = DEFAULT_DELTA, e_max: float = E_MAX,
                   start: MoeFit | None = None) -> dict[str, Any]:  # fmt: skip
    """The largest budget (C = 6 N_act D, grouped within 3% as `budget_labels` groups them) held out: the law
    fitted on the rest (as `holdout_experts` fits) predicts its runs; or `skipped` with the reason."""
    labels = budget_labels(points.budgets)
    if labels.max() + 1 < MIN_BUDGETS:
        return {"skipped": f"{labels.max() + 1} budgets: holding out the largest needs {MIN_BUDGETS}"}
    test = labels == labels.max()
    rest = points.take(~test)
    if len(rest) < MIN_MOE_POINTS or len(np.unique(rest.N)) < 2 or len(np.unique(rest.D)) < 2:
        return {"skipped": "too few runs below the largest budget to fit the law on"}
    try:
        fit = fit_moe(rest, law_form, delta, e_max, HOLDOUT_LATIN, _extra(start))
    except UserError as err:
        return {"skipped": f"the runs below the largest budget cannot be fitted: {err}"}
    C = float(np.exp(np.mean(np.log(points.budgets[test]))))
    return dict(C=C, **_summary(_errors(fit.law, points.take(test)), fit, len(rest)))


def fit_moe_law(points: MoePoints, form: str = "joint", bootstrap: int = 1000, delta: float = DEFAULT_DELTA,
                e_max: float = E_MAX, holdouts: bool = False) -> LawFile:  # fmt: skip
    """The MoE law as a law file: its `moe` section holds the law (with the bootstrap's intervals over
    resampled configurations), its main law the dense restriction (E = 1, G = 1) as a Chinchilla law. `holdouts`:
    diagnostics["holdout"] holds each expert count left out (`holdout_experts`) and the largest budget held out
    (`holdout_budget`)."""
    if bootstrap < 0 or bootstrap == 1:
        raise UserError(f"--bootstrap {bootstrap}: give 0 (no intervals) or at least 2 resamples (default 1000)")
    fit = fit_moe(points, form, delta, e_max)
    warnings = list(fit.warnings)
    law = fit.law
    boot = None
    if bootstrap:
        start = time.perf_counter()
        intervals, samples, converged = bootstrap_moe(points, fit, bootstrap)
        law = MoeLaw(**{**{k: getattr(law, k) for k in law.__dataclass_fields__}, "intervals": intervals,
                        "samples": samples})  # fmt: skip
        boot = dict(n_boot=bootstrap, n_converged=converged, level=0.95, seconds=time.perf_counter() - start,
                    resampled="configurations")  # fmt: skip
        if converged < bootstrap:
            warnings.append(f"{bootstrap - converged} of {bootstrap} bootstrap refits did not converge")
    held = None
    if holdouts:
        held = {"experts": holdout_experts(points, form, delta, e_max, fit),
                "budget": holdout_budget(points, form, delta, e_max, fit)}  # fmt: skip
    E, A, B, alpha, beta = law.dense()
    diagnostics = dict(
        form="moe", moe_form=law.form, fit_form=fit.form, identified=fit.identified,
        form_description=fit.form_description, not_identified=fit.not_identified, objective=fit.objective,
        delta=delta, converged=fit.converged, n_starts=fit.n_starts, seconds=fit.seconds, bootstrap=boot, holdout=held,
        warnings=warnings, fitted_range={k: [float(v.min()), float(v.max())] for k, v in
                                         (("N", points.N), ("D", points.D), ("C", points.budgets), ("E", points.E))},
    )  # fmt: skip
    return LawFile(ChinchillaLaw(E=E, A=A, B=B, alpha=alpha, beta=beta), diagnostics=diagnostics, moe=law)
