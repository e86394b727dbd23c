"""Fitting the precision law (scaling/precision_law.py; Kumar et al. 2025, arXiv 2411.04330) to a table of runs
trained at several bit widths, with the care of the Chinchilla fit (scaling/chinchilla.py):

- The objective is Hoffmann et al.'s: a sum of Huber losses (delta 1e-3) between log predicted and log observed
  losses, within chinchilla.py's physical box (E below the smallest loss, exponents in [0.01, 2], each term
  bounded at the data's centre) plus gamma in `GAMMA_BOUNDS` bits.
- Variable projection: for fixed (alpha, beta, gammas) the law is linear in (E, A, B); they are solved by
  non-negative least squares of the relative errors (as scaling/projection.py solves them), and the exponents and
  gammas are optimised by scipy's L-BFGS-B from a small grid of starts. The best distinct optima are then polished
  on the Huber objective in all coordinates (L-BFGS-B, analytic gradient).
- Identification: a kind's gamma is fitted only when its bits take at least two levels (unquantised counts as
  one); kinds whose bits are equal in every row share one gamma (the data cannot tell them apart); the others
  are fixed to "no effect", and the fit says so. After the fit, a coordinate at a bound, an ill-conditioned
  Jacobian or a standard error too large (`SE_LIMITS`) makes the form not identified, and the fit falls back from
  separate gammas to one tied gamma, then to beta tied to alpha, saying why.
- Bootstrap: runs (the `run` column, else rows) resampled with replacement, each resample polished from the fit.
- Hold-out: each precision configuration left out in turn, predicted by the law fitted on the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize, nnls
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.bootstrap import percentiles, resample_counts
from smallest_loss.scaling.chinchilla import ChinchillaLaw, chinchilla_bounds
from smallest_loss.scaling.fitbase import BOUND_TOL, DEFAULT_DELTA, huber
from smallest_loss.scaling.intervals import IntervalCalibration
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.points import centring
from smallest_loss.scaling.precision_intervals import calibrate_precision, precision_step_ratio
from smallest_loss.scaling.precision_law import (
    BITS_COLUMNS,
    KINDS,
    PRECISION_FORMS,
    PrecisionLaw,
    PTQPenalty,
    TrainingPenalty,
)
from smallest_loss.scaling.precision_table import PrecisionPoints

GAMMA_BOUNDS = (0.05, 50.0)  # bits; below, a kind has no effect at 1 bit; above, every width we train is ruinous
START_EXPONENTS = (0.2, 0.6)  # alpha and beta starts
START_GAMMAS = (1.0, 3.0)  # each free gamma's starts (bits)
START_GAMMA_D = 0.5  # the additive form's gamma_D start (gamma_N starts at 0)
POLISH = 4  # distinct best optima of the projected stage polished in all coordinates
COND_MAX = 1e6
# SE(exponent) <= 100% of it; SE(log gamma) <= 1; SE of the additive form's gamma_D, gamma_N <= 0.5
SE_LIMITS = {"alpha": 1.0, "beta": 1.0, "log_gamma": 1.0, "penalty_exponent": 0.5}
PRECISION_KEYS = ("gamma_", "penalty_")  # the precision section's bootstrap samples and intervals
LEVELS_WARN = 3  # fewer levels of a kind's bits than this: its gamma rests on one contrast


# ---------------------------------------------------------------------------------------------------
# Which gammas the data identify.


@dataclass(frozen=True)
class Structure:
    """Which gamma each kind uses (an index into the free gammas; None: fixed, no effect) and why."""

    groups: dict[str, int | None]
    notes: tuple[str, ...] = ()

    @property
    def n_gammas(self) -> int:
        return len({g for g in self.groups.values() if g is not None})


def gamma_structure(data: PrecisionPoints, form: str) -> Structure:
    """Kinds with one level are fixed to no effect; kinds with equal bits in every row share one gamma; the tied
    form puts every fitted kind on one gamma."""
    if form not in PRECISION_FORMS:
        raise UserError(f"--precision-form {form!r}: use one of {', '.join(PRECISION_FORMS)}")
    notes, groups, columns = [], {}, []
    for kind in KINDS:
        levels = data.levels(kind)
        if levels < 2:
            groups[kind] = None
            if np.isfinite(data.bits[kind]).any():  # one width everywhere: its factor is absorbed into A
                what = (
                    f"at {data.bits[kind][0]:g} bits in every row (its effect is folded into A; predictions ignore it)"
                )
            else:
                what = "unquantised in every row"
            notes.append(f"gamma_{kind} not fitted (fixed: no effect): {BITS_COLUMNS[kind]} is {what}")
            continue
        if levels < LEVELS_WARN:
            notes.append(f"gamma_{kind} rests on one contrast ({levels} levels of {BITS_COLUMNS[kind]}); "
                         "train at a third width to check the form")  # fmt: skip
        same = [i for i, (k, col) in enumerate(columns) if np.array_equal(col, data.bits[kind])]
        if same and form == "separate":
            first = columns[same[0]][0]
            notes.append(f"gamma_{kind} tied to gamma_{first}: {BITS_COLUMNS[kind]} equals {BITS_COLUMNS[first]} "
                         "in every row, so the data cannot tell them apart")  # fmt: skip
            groups[kind] = groups[first]
        else:
            groups[kind] = 0 if form in ("tied", "additive") else len({g for g in groups.values() if g is not None})
        columns.append((kind, data.bits[kind]))
    if all(g is None for g in groups.values()):
        post = data.bits_post is not None and bool(np.isfinite(data.bits_post).any())
        if not post or form == "additive":
            raise UserError("the table trains every run at one precision: a precision law needs runs at two bit "
                            "widths or more (unquantised counts as one)"
                            + (", and the additive form a quantised one" if post else ""))  # fmt: skip
        notes = ["every run trained at one precision: no training gamma fitted (the law is Chinchilla's, with the "
                 "post-training quantisation penalty)"]  # fmt: skip
    return Structure(groups, tuple(notes))


# ---------------------------------------------------------------------------------------------------
# The objective. Coordinates: centred (a', b', e, alpha, beta) as in chinchilla.py, then log gamma per free gamma.


@dataclass(frozen=True)
class Problem:
    xN: np.ndarray  # log N - mean log N
    xD: np.ndarray
    logL: np.ndarray
    bits: np.ndarray  # (K, P): each kind's bits, inf where unquantised
    groups: tuple[int | None, ...]  # per kind
    delta: float
    box: np.ndarray  # (2, 5 + G [+ 3]): the additive form adds (c, gamma_D, gamma_N)
    tie_ab: bool = False
    mu: tuple[float, float] = (0.0, 0.0)
    gamma_names: tuple[str, ...] = ()
    weights: np.ndarray | None = field(default=None, repr=False)
    additive: bool = False  # the additive form: N_eff = N, a training penalty C D^gamma_D N^-gamma_N sum e^(-P/gamma)
    fix_gamma_N: bool = False  # the additive form with gamma_N = 0

    @property
    def w(self) -> np.ndarray:
        return np.ones_like(self.logL) if self.weights is None else self.weights

    @property
    def G(self) -> int:
        """The number of free gammas."""
        return self.box.shape[1] - 5 - (3 if self.additive else 0)

    @property
    def ic(self) -> int:
        """The additive form's coordinates: c (log C, centred) at `ic`, then gamma_D and gamma_N."""
        return 5 + self.G

    @property
    def linear(self) -> list[int]:
        """The coordinates the law is linear in (as logs): a', b', e and, in the additive form, c."""
        return [0, 1, 2] + ([self.ic] if self.additive else [])

    @property
    def fixed(self) -> list[int]:
        """Coordinates held out of the fit: beta (tied to alpha) and gamma_N (at 0)."""
        return ([4] if self.tie_ab else []) + ([self.ic + 2] if self.fix_gamma_N else [])

    @functools.cached_property
    def quantised(self) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(gamma index, rows, bits) of every fitted kind, over its quantised rows only."""
        out = []
        for bits, g in zip(self.bits, self.groups, strict=True):
            rows = np.flatnonzero(np.isfinite(bits))
            if g is not None and rows.size:
                out.append((g, rows, bits[rows]))
        return out


PENALTY_BOUNDS = ((-1.0, 2.0), (-2.0, 2.0))  # gamma_D, gamma_N in the additive form
PENALTY_TERM = (1e-6, 10.0)  # the additive penalty at the data's centre, times the smallest and largest loss


def make_problem(data: PrecisionPoints, structure: Structure, delta: float, tie_ab: bool = False,
                 additive: bool = False, fix_gamma_N: bool = False) -> Problem:  # fmt: skip
    points = data.points
    mu = centring(points)
    G = structure.n_gammas
    box = np.hstack([chinchilla_bounds(points), np.log(np.array([GAMMA_BOUNDS] * G).T.reshape(2, G))])
    if additive:
        c = (math.log(points.loss.min() * PENALTY_TERM[0]), math.log(points.loss.max() * PENALTY_TERM[1]))
        box = np.hstack([box, np.array([c, *PENALTY_BOUNDS]).T])
    return Problem(np.log(points.N) - mu[0], np.log(points.D) - mu[1], np.log(points.loss),
                   np.stack([data.bits[k] for k in KINDS]), tuple(structure.groups[k] for k in KINDS), delta, box,
                   tie_ab, mu, gamma_names(structure), additive=additive, fix_gamma_N=fix_gamma_N)  # fmt: skip


def gamma_names(structure: Structure) -> tuple[str, ...]:
    """Each free gamma's name: gamma_w, or gamma_w=gamma_a for kinds sharing one."""
    return tuple("=".join(f"gamma_{k}" for k in KINDS if structure.groups[k] == g) for g in range(structure.n_gammas))


def _log_factors(theta: np.ndarray, pb: Problem) -> tuple[np.ndarray, np.ndarray]:
    """log(N_eff / N) (P,) and its derivative in each free log gamma (G, P); zero in the additive form."""
    total, grad = np.zeros_like(pb.xN), np.zeros((pb.G, len(pb.xN)))
    for g, rows, P in [] if pb.additive else pb.quantised:
        u = P / math.exp(theta[5 + g])
        m = np.expm1(-u)
        total[rows] += np.log(-m)
        grad[g, rows] -= u * np.exp(-u) / -m  # d log(1 - e^-u) / d log gamma = -u e^-u / (1 - e^-u)
    return total, grad


def _strength(theta: np.ndarray, pb: Problem) -> tuple[np.ndarray, np.ndarray]:
    """The additive form's sum_k exp(-P_k / gamma) per row (P,) and its derivative in each log gamma (G, P)."""
    total, grad = np.zeros_like(pb.xN), np.zeros((pb.G, len(pb.xN)))
    for g, rows, P in pb.quantised:
        u = P / math.exp(theta[5 + g])
        total[rows] += np.exp(-u)
        grad[g, rows] += u * np.exp(-u)  # d e^(-P/gamma) / d log gamma
    return total, grad


def _terms(theta: np.ndarray, pb: Problem, jac: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The law's terms at theta (A N_eff^-alpha, B D^-beta, E and, in the additive form, the training penalty) as
    rows of a (T, P) array, and (with `jac`) the Jacobian of their sum (P, len(theta))."""
    a, b, e, alpha, beta = theta[:5]
    lf, dlf = _log_factors(theta, pb)
    xN = pb.xN + lf
    with np.errstate(over="ignore"):
        t1, t2 = np.exp(a - alpha * xN), np.exp(b - beta * pb.xD)
    t3 = np.full_like(t1, math.exp(e))
    if not pb.additive:
        terms, extra = [t1, t2, t3], [*(-alpha * t1 * dlf)]
    else:
        s, ds = _strength(theta, pb)
        c, gD, gN = theta[pb.ic : pb.ic + 3]
        with np.errstate(over="ignore"):
            base = np.exp(c + gD * pb.xD - gN * pb.xN)
        t4 = base * s
        terms, extra = [t1, t2, t3, t4], [*(base * ds), t4, pb.xD * t4, -pb.xN * t4]
    J = np.column_stack([t1, t2, t3, -xN * t1, -pb.xD * t2, *extra]) if jac else None
    return np.stack(terms), J


def jacobian(theta: np.ndarray, pb: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Residuals log pred - log L and their Jacobian (P, len(theta))."""
    terms, J = _terms(theta, pb)
    pred = terms.sum(0)
    return np.log(pred) - pb.logL, J / pred[:, None]


def objective_and_grad(theta: np.ndarray, pb: Problem) -> tuple[float, np.ndarray]:
    """Weighted Huber objective of log pred - log L and its gradient in theta."""
    r, J = jacobian(theta, pb)
    h, psi = huber(r, pb.delta)
    return float(pb.w @ h), J.T @ (pb.w * psi)


# ---------------------------------------------------------------------------------------------------
# Variable projection, then the polish.


def _outer_index(pb: Problem) -> list[int]:
    """The coordinates the projected stage optimises: the exponents, the log gammas, gamma_D and gamma_N."""
    return [i for i in range(3, pb.box.shape[1]) if i not in pb.linear and i not in pb.fixed]


def _theta_of(v: np.ndarray, pb: Problem) -> np.ndarray:
    """The full coordinates of outer coordinates `v`, the linear ones at 0 (beta = alpha when tied)."""
    theta = np.zeros(pb.box.shape[1])
    theta[_outer_index(pb)] = v
    if pb.tie_ab:
        theta[4] = theta[3]
    return theta


def projected(v: np.ndarray, pb: Problem) -> tuple[float, np.ndarray]:
    """The Huber objective at the best linear constants (E, A', B' and the additive C, all >= 0) for these exponents
    and gammas (non-negative least squares of the relative errors pred / L - 1, weighted) and the full coordinates."""
    theta = _theta_of(v, pb)
    M = _terms(theta, pb, jac=False)[0].T * np.exp(-pb.logL)[:, None]
    if not np.all(np.isfinite(M)):
        return math.inf, theta
    sw = np.sqrt(pb.w)
    c, _ = nnls(M * sw[:, None], sw)
    lin = pb.linear  # in the terms' order: A, B, E, C
    c = np.clip(c, np.exp(pb.box[0, lin]), np.exp(pb.box[1, lin]))
    theta[lin] = np.log(c)
    return float(pb.w @ huber(np.log(M @ c), pb.delta)[0]), theta


def _outer_box(pb: Problem) -> list[tuple[float, float]]:
    cols = _outer_index(pb)
    lo, hi = pb.box[0, cols].copy(), pb.box[1, cols].copy()
    if pb.tie_ab:
        lo[0], hi[0] = max(lo[0], pb.box[0, 4]), min(hi[0], pb.box[1, 4])
    return list(zip(lo, hi, strict=True))


def _outer_starts(pb: Problem) -> np.ndarray:
    exps = [START_EXPONENTS] if pb.tie_ab else [START_EXPONENTS, START_EXPONENTS]
    extra = [(START_GAMMA_D,)] + ([] if pb.fix_gamma_N else [(0.0,)]) if pb.additive else []
    return np.array(list(itertools.product(*exps, *[np.log(START_GAMMAS)] * pb.G, *extra)))


def _tie_map(pb: Problem) -> np.ndarray:
    """theta = T u: the identity less the fixed coordinates, beta's row copying alpha's coordinate when tied."""
    T = np.eye(pb.box.shape[1])
    if pb.tie_ab:
        T[4, 3] = 1.0
    return np.delete(T, pb.fixed, axis=1)


def _polish(theta: np.ndarray, pb: Problem) -> tuple[np.ndarray, float, bool]:
    """Gauss-Newton (scipy's trust-region reflective least squares) on the Huber loss of the residuals, in all
    coordinates within the box (beta = alpha when tied); integer weights repeat their rows."""
    T = _tie_map(pb)
    lo, hi = T.T @ pb.box[0] / T.sum(0), T.T @ pb.box[1] / T.sum(0)
    if pb.tie_ab:
        lo[3], hi[3] = max(pb.box[0, 3], pb.box[0, 4]), min(pb.box[1, 3], pb.box[1, 4])
    rows = np.repeat(np.arange(len(pb.logL)), np.round(pb.w).astype(int))
    last: dict[bytes, np.ndarray] = {}  # the Jacobian of the last point evaluated (trf asks for it next)

    def fun(u: np.ndarray) -> np.ndarray:
        r, J = jacobian(T @ u, pb)
        last.clear()
        last[u.tobytes()] = J[rows] @ T
        return r[rows]

    def jac(u: np.ndarray) -> np.ndarray:
        return last.get(u.tobytes()) if u.tobytes() in last else jacobian(T @ u, pb)[1][rows] @ T

    u0 = np.clip(np.linalg.lstsq(T, theta, rcond=None)[0], lo, hi)
    res = least_squares(fun, u0, jac=jac, bounds=(lo, hi), loss="huber", f_scale=pb.delta,
                        method="trf", x_scale="jac", ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=300)  # fmt: skip
    theta = T @ res.x
    return theta, objective_and_grad(theta, pb)[0], bool(res.status > 0)


def minimise(pb: Problem) -> tuple[np.ndarray, float, bool, int]:
    """Best theta over the grid of starts: projected stage, then the best distinct optima polished. Returns
    theta, objective, converged, and the number of starts."""
    starts, bounds = _outer_starts(pb), _outer_box(pb)
    found = []
    for v0 in starts:
        res = minimize(lambda v: projected(v, pb)[0], np.clip(v0, *np.array(bounds).T), method="L-BFGS-B",
                       bounds=bounds, options=dict(maxiter=60))  # fmt: skip
        found.append((float(res.fun), projected(res.x, pb)[1]))
    found.sort(key=lambda item: item[0])
    chosen: list[np.ndarray] = []
    for f, theta in found:
        if math.isfinite(f) and all(np.max(np.abs(theta - t)) > 1e-4 for t in chosen):
            chosen.append(theta)
        if len(chosen) == POLISH:
            break
    if not chosen:
        raise UserError("no start gave a finite objective; check that the losses are sensible")
    best = min((_polish(t, pb) for t in chosen), key=lambda item: item[1])
    return best[0], best[1], best[2], len(starts)


# ---------------------------------------------------------------------------------------------------
# Identification and the forms tried.


def coordinate_names(pb: Problem) -> list[str]:
    return ["A", "B", "E", "alpha", "beta", *pb.gamma_names] + (["C", "gamma_D", "gamma_N"] if pb.additive else [])


def not_identified(theta: np.ndarray, pb: Problem) -> list[str]:
    """Why the fitted form is not identified (empty when it is): bounds, conditioning, standard errors."""
    names = coordinate_names(pb)
    free = [i for i in range(len(theta)) if i not in pb.fixed]
    span = pb.box[1] - pb.box[0]
    reasons = []
    for i in free:
        for side, bound in (("lower", pb.box[0, i]), ("upper", pb.box[1, i])):
            if abs(theta[i] - bound) <= BOUND_TOL * span[i]:
                reasons.append(f"{names[i]} ran to its {side} bound")
    r, J = jacobian(theta, pb)
    if pb.tie_ab:
        J[:, 3] += J[:, 4]
    Ju = J[:, free]
    scaled = Ju / np.maximum(np.linalg.norm(Ju, axis=0), 1e-300)
    eig = np.linalg.eigvalsh(scaled.T @ scaled)
    cond = math.sqrt(eig[-1] / eig[0]) if eig[0] > 0 else math.inf
    if cond > COND_MAX:
        return reasons + [f"the Jacobian is ill-conditioned (condition number {cond:.3g})"]
    sigma2 = float(r @ r) / max(len(r) - len(free), 1)
    se = np.sqrt(np.maximum(np.diag(sigma2 * np.linalg.pinv(Ju.T @ Ju)), 0.0))
    for i, s in zip(free, se, strict=True):
        if i in (3, 4) and s / theta[i] > SE_LIMITS["alpha"]:
            reasons.append(f"{names[i]} is not determined (standard error {s / theta[i]:.0%} of it)")
        if 5 <= i < 5 + pb.G and s > SE_LIMITS["log_gamma"]:
            reasons.append(f"{names[i]} is not determined (standard error of log gamma {s:.3g})")
        if pb.additive and i > pb.ic and s > SE_LIMITS["penalty_exponent"]:
            reasons.append(f"{names[i]} is not determined (standard error {s:.3g})")
    return reasons


FORM_DESCRIPTIONS = {
    "separate": "separate gammas: E, A, B, alpha, beta and a gamma per identified kind fitted",
    "tied": "tied gammas: E, A, B, alpha, beta and one gamma for every quantised kind fitted",
    "tied_ab": "tied gammas and beta tied to alpha (beta = alpha): E, A, B, alpha and one gamma fitted",
    "additive": "additive penalty: E, A, B, alpha, beta and the loss quantised training adds, C D^gamma_D / "
    "N^gamma_N sum_k exp(-P_k / gamma), with one gamma, fitted",
    "additive_d": "additive penalty in D alone (gamma_N = 0): E, A, B, alpha, beta, C, gamma_D and one gamma fitted",
    "additive_ab": "additive penalty in D alone, beta tied to alpha: E, A, B, alpha, C, gamma_D and one gamma fitted",
}
# Each requested form and the forms it falls back to, in order: (name, tied gammas, beta = alpha, gamma_N = 0).
FALLBACKS = {
    "separate": (("separate", False, False, False), ("tied", True, False, False), ("tied_ab", True, True, False)),
    "tied": (("tied", True, False, False), ("tied_ab", True, True, False)),
    "additive": (
        ("additive", True, False, False),
        ("additive_d", True, False, True),
        ("additive_ab", True, True, True),
    ),
}


@dataclass(frozen=True)
class PrecisionFit:
    """The best fit of the first identified form (or the last one tried), with how it was reached."""

    law: PrecisionLaw
    theta: np.ndarray
    problem: Problem
    form: str  # separate, tied or tied_ab
    identified: bool
    not_identified: dict[str, list[str]]
    objective: float
    grad_norm: float
    converged: bool
    n_starts: int
    warnings: tuple[str, ...]
    seconds: float

    @property
    def form_description(self) -> str:
        if self.problem.G == 0 and not self.problem.additive:  # every run at one training precision
            return "one training precision: E, A, B, alpha, beta fitted" + (
                ", beta = alpha" if "ab" in self.form else ""
            )
        return FORM_DESCRIPTIONS[self.form]


def law_from_theta(theta: np.ndarray, pb: Problem, form: str) -> PrecisionLaw:
    """The natural constants of centred coordinates: A = exp(a' + alpha mean log N), B likewise."""
    a, b, e, alpha, beta = theta[:5]
    gammas = {f"gamma_{k}": None if g is None else math.exp(theta[5 + g]) for k, g in zip(KINDS, pb.groups,
                                                                                          strict=True)}  # fmt: skip
    penalty = None
    if pb.additive:  # C D^gD N^-gN = exp(c + gD (log D - mu_D) - gN (log N - mu_N))
        c, gD, gN = theta[pb.ic : pb.ic + 3]
        penalty = TrainingPenalty(math.exp(c - gD * pb.mu[1] + gN * pb.mu[0]), gD, gN)
    name = "separate" if form == "separate" else "additive" if pb.additive else "tied"
    return PrecisionLaw(E=math.exp(e), A=math.exp(a + alpha * pb.mu[0]), B=math.exp(b + beta * pb.mu[1]),
                        alpha=alpha, beta=beta, form=name, penalty=penalty, **gammas)  # fmt: skip


def _check_points(data: PrecisionPoints, structure: Structure, additive: bool = False) -> None:
    for name in ("N", "D"):
        if len(np.unique(getattr(data.points, name))) < 2:
            raise UserError(f"all {len(data.points)} rows share one {name}; the precision law needs several {name}")
    needed = 6 + structure.n_gammas + (3 if additive else 0)
    if len(data.points) < needed:
        raise UserError(f"{len(data.points)} rows fit {needed - 1} constants; give at least {needed}")


def fit_precision(data: PrecisionPoints, form: str = "separate", delta: float = DEFAULT_DELTA) -> PrecisionFit:
    """Fit the precision law: the requested form, else (not identified) its fallbacks (`FALLBACKS`): tied gammas,
    then beta tied to alpha; in the additive form gamma_N = 0, then beta tied to alpha. A run counts once, however
    many post-training widths it has rows for (`PrecisionPoints.training_rows`)."""
    begin = time.perf_counter()
    structure, tied = gamma_structure(data, form), gamma_structure(data, "tied")
    data = data.take(data.training_rows())
    _check_points(data, structure, form == "additive")
    plan = [(name, structure if not is_tied else tied, tie, fix) for name, is_tied, tie, fix in FALLBACKS[form]
            if name == form or not (name == "tied" and structure.n_gammas <= 1)]  # fmt: skip
    tried: dict[str, list[str]] = {}
    for name, st, tie, fix in plan:
        pb = make_problem(data, st, delta, tie, form == "additive", fix)
        theta, f, _, n_starts = minimise(pb)
        reasons = not_identified(theta, pb)
        if not reasons:
            break
        tried[name] = reasons
    _, g = objective_and_grad(theta, pb)
    if tie:
        g[3] += g[4]
    g[pb.fixed] = 0.0
    held = ((theta <= pb.box[0]) & (g > 0)) | ((theta >= pb.box[1]) & (g < 0))
    grad_norm = float(np.max(np.abs(np.where(held, 0.0, g))))
    tol = 1e-5 * max(1.0, len(data.points) / 1000)
    warnings = list(structure.notes) + _fallback_warnings(name, tried)
    if grad_norm > tol:
        warnings.append(f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {tol:g}; check the data")
    return PrecisionFit(law_from_theta(theta, pb, name), theta, pb, name, name not in tried, tried, f, grad_norm,
                        grad_norm <= tol, n_starts, tuple(warnings), time.perf_counter() - begin)  # fmt: skip


def _fallback_warnings(form: str, tried: dict[str, list[str]]) -> list[str]:
    if not tried:
        return []
    why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in tried.items())
    if form in tried:
        return [f"no form of the precision law is identified by these rows ({why}); using {FORM_DESCRIPTIONS[form]}: "
                "treat its constants as a description of these rows only"]  # fmt: skip
    return [f"the requested form is not identified ({why}); using {FORM_DESCRIPTIONS[form]}"]


# ---------------------------------------------------------------------------------------------------
# Post-training quantisation: log delta = log C_T + gamma_D log D - gamma_N log N_eff - P_post / gamma_post.


def fit_ptq(data: PrecisionPoints, law: PrecisionLaw,
            weights: np.ndarray | None = None) -> tuple[PTQPenalty | None, list[str]]:  # fmt: skip
    """Kumar et al.'s PTQ penalty fitted by least squares of log(loss_post - loss), linear in (log C_T, gamma_D,
    gamma_N, 1/gamma_post), over the rows quantised after training whose loss rose; None (with why) when there are
    too few such rows or the penalty does not fall with more bits."""
    if data.bits_post is None:
        return None, []
    p = data.points
    rise = data.loss_post - p.loss
    w = np.ones(len(p)) if weights is None else weights
    use = np.isfinite(data.bits_post) & (rise > 0) & (w > 0)
    distinct = [len(np.unique(v[use])) for v in (data.bits_post, p.N, p.D)]
    if use.sum() < 5 or min(distinct) < 2:
        return None, ["PTQ penalty not fitted: it needs at least 5 rows whose loss rose after post-training "
                      "quantisation, at 2 or more bits_post, N and D"]  # fmt: skip
    n_eff = law.n_eff(p.N[use], *(data.bits[k][use] for k in KINDS))
    X = np.column_stack([np.ones(use.sum()), np.log(p.D[use]), -np.log(n_eff), -data.bits_post[use]])
    sw = np.sqrt(w[use])
    c = np.linalg.lstsq(X * sw[:, None], np.log(rise[use]) * sw, rcond=None)[0]
    if not c[3] > 0:
        return None, ["PTQ penalty not fitted: the fitted degradation does not fall with more bits_post"]
    notes = (
        []
        if (~use & np.isfinite(data.bits_post)).sum() == 0
        else [
            f"PTQ penalty: {int((~use & np.isfinite(data.bits_post)).sum())} rows whose loss did not rise were left out"
        ]
    )
    return PTQPenalty(math.exp(c[0]), float(c[1]), float(c[2]), float(1.0 / c[3])), notes


def leave_one_width_out(data: PrecisionPoints, law: PrecisionLaw) -> dict[str, Any] | None:
    """Each post-training width left out in turn: the PTQ penalty fitted on the other widths predicts its rows' loss
    after quantisation (the training law as fitted). Per width: the mean relative error of the predicted loss_post
    and of the predicted rise; None with fewer than three widths (two to fit from when one is left out)."""
    if data.bits_post is None or len(widths := np.unique(data.bits_post[np.isfinite(data.bits_post)])) < 3:
        return None
    p, out = data.points, []
    trained = law.loss(p.N, p.D, *(data.bits[k] for k in KINDS))
    for P in widths:
        held = data.bits_post == P
        ptq, _ = fit_ptq(data, law, (~held).astype(float))
        if ptq is None:
            continue
        rise = ptq.delta(law.n_eff(p.N[held], *(data.bits[k][held] for k in KINDS)), p.D[held], P)
        pred = trained[held] + rise
        actual = data.loss_post[held]
        out.append(dict(bits_post=float(P), points=int(held.sum()),
                        mean_abs_rel_error=float(np.mean(np.abs(pred / actual - 1))),
                        rise_mean_abs_error=float(np.mean(np.abs(rise - (actual - p.loss[held])))),
                        rise_mean=float(np.mean(actual - p.loss[held]))))  # fmt: skip
    return dict(widths=out) if out else None


# ---------------------------------------------------------------------------------------------------
# The bootstrap and the hold-out.


@dataclass(frozen=True)
class PrecisionBootstrap:
    samples: dict[str, np.ndarray]
    intervals: dict[str, tuple[float, float]]
    n_boot: int
    n_converged: int
    seconds: float
    level: float = 0.95
    n_at_bound: int = 0  # resamples whose optimum ran to a bound of the box (a constant the resample cannot pin)


def bootstrap_precision(data: PrecisionPoints, fit: PrecisionFit, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> PrecisionBootstrap:  # fmt: skip
    """Refit on `n_boot` resamples of the runs (the `run` column, else rows), each polished from the fit."""
    if n_boot < 2:
        raise UserError(f"--bootstrap {n_boot}: give 0 (no intervals) or at least 2 resamples")
    begin, rng = time.perf_counter(), np.random.default_rng(seed)
    index, n_groups = data.points.group_index
    counts = resample_counts(n_groups, n_boot, rng)[:, index].astype(np.float64)
    rows, ok, at_bound, training = [], 0, 0, data.training_rows()  # the fit's problem holds the training rows
    span = fit.problem.box[1] - fit.problem.box[0]
    for w in counts:
        theta, _, converged = _polish(fit.theta, _weighted(fit.problem, w[training]))
        law = law_from_theta(theta, fit.problem, fit.form)
        ptq = fit_ptq(data, law, w)[0] if fit.law.ptq is not None else None
        rows.append(_sample_row(law, ptq, fit.law.ptq is not None))
        ok += converged
        at_bound += bool(np.any(np.minimum(theta - fit.problem.box[0], fit.problem.box[1] - theta) <= BOUND_TOL * span))
    samples = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return PrecisionBootstrap(samples, percentiles(samples, level), n_boot, ok, time.perf_counter() - begin, level,
                              at_bound)  # fmt: skip


def _weighted(pb: Problem, w: np.ndarray) -> Problem:
    return dataclasses.replace(pb, weights=w)


def _sample_row(law: PrecisionLaw, ptq: PTQPenalty | None, with_ptq: bool) -> dict[str, float]:
    row = {k: getattr(law, k) for k in ("E", "A", "B", "alpha", "beta")}
    row.update(n_exponent=law.beta / (law.alpha + law.beta), d_exponent=law.alpha / (law.alpha + law.beta))
    row.update({f"gamma_{k}": law.gamma(k) for k in KINDS if law.gamma(k) is not None})
    if law.penalty is not None:
        row.update({f"penalty_{k}": getattr(law.penalty, k) for k in ("C", "gamma_D", "gamma_N")})
    if with_ptq:  # a resample whose PTQ rows cannot be fitted gives NaN (percentiles then say so)
        row.update(
            {f"ptq_{k}": getattr(ptq, k) if ptq else math.nan for k in ("C_T", "gamma_D", "gamma_N", "gamma_post")}
        )
    return row


def leave_one_precision_out(data: PrecisionPoints, form: str = "separate",
                            delta: float = DEFAULT_DELTA) -> dict[str, Any]:  # fmt: skip
    """Each training precision left out in turn: the law fitted on the other rows predicts its rows. Mean relative
    errors per precision, over all predicted rows and over the quantised ones (the bit widths)."""
    full = gamma_structure(data, form)
    data = data.take(data.training_rows())
    configs = data.configs()
    results, skipped, errors = [], [], {}
    for config in np.unique(configs):
        held = configs == config
        if held.all():
            skipped.append(dict(config=str(config), reason="every run trained at this precision: none is left to fit"))
            continue
        rest = data.take(~held)
        lost = [k for k in KINDS if full.groups[k] is not None and rest.levels(k) < 2]
        if lost:
            skipped.append(dict(config=str(config), reason=f"without it {', '.join(BITS_COLUMNS[k] for k in lost)} "
                                "takes one value: its gamma cannot be fitted"))  # fmt: skip
            continue
        try:
            fit = fit_precision(rest, form, delta)
        except UserError as err:
            skipped.append(dict(config=str(config), reason=str(err)))
            continue
        p = data.points
        pred = fit.law.loss(p.N[held], p.D[held], *(data.bits[k][held] for k in KINDS))
        rel = np.atleast_1d((pred - p.loss[held]) / p.loss[held])
        errors[str(config)] = rel
        results.append(dict(config=str(config), points=int(held.sum()), mean_abs_rel_error=float(np.abs(rel).mean()),
                            max_abs_rel_error=float(np.abs(rel).max()), mean_rel_error=float(rel.mean()),
                            form=fit.form, identified=fit.identified))  # fmt: skip
    quantised = [v for k, v in errors.items() if k != "fp"]
    return dict(
        configs=results, skipped=skipped,
        mean_abs_rel_error=float(np.abs(np.concatenate(list(errors.values()))).mean()) if errors else None,
        quantised_mean_abs_rel_error=float(np.abs(np.concatenate(quantised)).mean()) if quantised else None,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# The law file.


AUTO_FORMS = ("separate", "additive")  # the forms `auto` compares: Kumar et al.'s N_eff, and the additive penalty


def choose_precision_form(data: PrecisionPoints, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """`auto`: the form of `AUTO_FORMS` whose law, fitted without each training precision in turn, predicts it best
    (the lower mean relative error over every held-out row). Where no precision can be held out (two levels of
    bits), Kumar et al.'s form, said so. Returns the form, the reason and each form's hold-out."""
    held = {f: leave_one_precision_out(data, f, delta) for f in AUTO_FORMS}
    errors = {f: h["mean_abs_rel_error"] for f, h in held.items() if h["mean_abs_rel_error"] is not None}
    if len(errors) < len(AUTO_FORMS):
        why = "no training precision could be held out to compare the forms: Kumar et al.'s form"
        return dict(form=AUTO_FORMS[0], holdouts=held, reason=why)
    form = min(errors, key=errors.get)
    versus = ", ".join(f"{f} {e:.2%}" for f, e in errors.items())
    return dict(form=form, holdouts=held, reason=f"the lower leave-one-precision-out error ({versus})")


def fit_precision_law(data: PrecisionPoints, form: str = "auto", bootstrap: int = 1000,
                      delta: float = DEFAULT_DELTA) -> LawFile:  # fmt: skip
    """Fit the precision law (and the PTQ penalty where the table has bits_post and loss_post), with `bootstrap`
    resamples of the runs for the intervals (0: none). `form`: separate, tied, additive, or auto (the one of
    separate and additive that predicts a left-out training precision better: `choose_precision_form`, recorded in
    the diagnostics as `form_choice`, its hold-outs as `holdout`). The law file's main law is the unquantised law;
    its `precision` section holds the gammas, the form, the additive penalty and the PTQ penalty."""
    if bootstrap < 0 or bootstrap == 1:
        raise UserError(f"--bootstrap {bootstrap}: give 0 (no intervals) or at least 2 resamples (default 1000)")
    choice = None
    if form == "auto" and gamma_structure(data, "tied").n_gammas == 0:  # one precision, PTQ rows: no form to choose
        form = "separate"
    elif form == "auto":
        choice = choose_precision_form(data, delta)
        form = choice["form"]
    law_file = _fit_law_file(data, form, bootstrap, delta)
    if choice is None:
        return law_file
    extra = dict(form_choice=dict(chosen=form, reason=choice["reason"],
                                  errors={f: h["mean_abs_rel_error"] for f, h in choice["holdouts"].items()}),
                 holdout=choice["holdouts"][form])  # fmt: skip
    return dataclasses.replace(law_file, diagnostics={**law_file.diagnostics, **extra})


def _fit_law_file(data: PrecisionPoints, form: str, bootstrap: int, delta: float) -> LawFile:
    fit = fit_precision(data, form, delta)
    ptq, ptq_notes = fit_ptq(data, fit.law)
    fit = dataclasses.replace(fit, law=dataclasses.replace(fit.law, ptq=ptq))
    boot = bootstrap_precision(data, fit, bootstrap) if bootstrap else None
    law, intervals, samples = fit.law, None, None
    if boot is not None:
        keys = ("E", "A", "B", "alpha", "beta", "n_exponent")
        intervals = {k: v for k, v in boot.intervals.items() if k in keys}
        samples = {k: v for k, v in boot.samples.items() if k in keys or k == "d_exponent"}
        if ptq is not None:
            ptq = dataclasses.replace(ptq, intervals={k[4:]: v for k, v in boot.intervals.items() if k[:4] == "ptq_"})
        law = dataclasses.replace(
            law, ptq=ptq, intervals={k: v for k, v in boot.intervals.items() if k.startswith(PRECISION_KEYS)},
            samples={k: v for k, v in boot.samples.items() if k.startswith((*PRECISION_KEYS, "ptq_"))},
        )  # fmt: skip
    main = ChinchillaLaw(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta)
    diagnostics = _diagnostics(data, fit, boot, ptq_notes)
    diagnostics["calibration"] = _calibration(data, fit, form).to_dict()
    if ptq is not None and (held := leave_one_width_out(data, law)) is not None:
        diagnostics["ptq_holdout"] = held
    return LawFile(main, intervals, samples, diagnostics, precision=law)


def _calibration(data: PrecisionPoints, fit: PrecisionFit, form: str) -> IntervalCalibration:
    """The calibrated intervals' scatter, profile and step ratio (scaling/precision_intervals.py)."""
    train = data.take(data.training_rows())
    n_params = fit.problem.box.shape[1] - len(fit.problem.fixed)
    rho = precision_step_ratio(train, form, n_params, fit_precision)
    return calibrate_precision(fit.law, train, n_params, fit.form != form, rho)


def _diagnostics(data: PrecisionPoints, fit: PrecisionFit, boot: PrecisionBootstrap | None,
                 ptq_notes: list[str]) -> dict[str, Any]:  # fmt: skip
    warnings = list(fit.warnings) + ptq_notes
    if boot is not None and boot.n_converged < 0.9 * boot.n_boot:
        warnings.append(f"only {boot.n_converged} of {boot.n_boot} bootstrap refits converged; intervals may be "
                        "too wide")  # fmt: skip
    if boot is not None and boot.n_at_bound > 0.05 * boot.n_boot:
        warnings.append(f"{boot.n_at_bound} of {boot.n_boot} bootstrap refits ran to a bound of the box: the "
                        "resampled runs do not pin every constant down; their intervals stop at the bound")  # fmt: skip
    levels = {BITS_COLUMNS[k]: sorted({"unquantised" if not np.isfinite(b) else float(b) for b in data.bits[k]},
                                      key=str) for k in KINDS}  # fmt: skip
    return dict(
        objective=fit.objective, delta=fit.problem.delta, form=fit.form, form_description=fit.form_description,
        identified=fit.identified, not_identified=fit.not_identified, grad_norm=fit.grad_norm,
        converged=fit.converged, n_starts=fit.n_starts, seconds=fit.seconds, warnings=warnings,
        precision_levels=levels, fitted_range=data.points.fitted_range,
        bootstrap=None if boot is None else dict(n_boot=boot.n_boot, n_converged=boot.n_converged,
                                                 n_at_bound=boot.n_at_bound, level=boot.level,
                                                 seconds=boot.seconds),
    )  # fmt: skip
