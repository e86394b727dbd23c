"""The Chinchilla law L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2) and its fit by Approach 3.

Approach 3 (Hoffmann et al. 2022, sec. 3.3, eq. 3) minimises over (a, b, e, alpha, beta)

    sum_i Huber_delta( LSE(a - alpha*log N_i, b - beta*log D_i, e) - log L_i ),   delta = 1e-3,

with L-BFGS from a grid of starts (alpha, beta in {0, 0.5, .., 2}; e in {-1, -0.5, .., 1}; a, b in
{0, 5, .., 25}: 4500 starts), keeping the best; A = exp(a), B = exp(b), E = exp(e). Following Besiroglu
et al. 2024 (arXiv 2404.10102) we check convergence, polish the best start until it converges, and
report bootstrap intervals (scaling/bootstrap.py).

Where we depart from the paper, and why:

- Bounds (`chinchilla_bounds`). The constants are kept in a physically meaningful box: E between
  `E_FLOOR` times the smallest observed loss and that loss (E is the loss of an infinite model on
  infinite data, so it lies below every observed loss and above zero); alpha and beta in
  `EXPONENT_BOUNDS` (Chinchilla's start grid spans [0, 2]; published fits lie near 0.3); and each
  power-law term, evaluated at the data's geometric-mean N (or D), within `TERM_BOUNDS` times the
  observed losses. On few, badly spread points the unbounded optimum can run off to absurd values
  (log A = 926, log E = -172); inside the box it cannot.
- Identification and fallback forms. A fit is identified when no fitted constant sits at a bound, the
  Jacobian of the predictions is well conditioned and the exponents and E are determined (Gauss-Newton
  standard errors below `SE_LIMITS`). When the full five-constant law is not identified, the fit falls
  back, in order, to E fixed at its best bounded value, to beta tied to alpha (by the allocation
  exponent of Approach 2 when given, else alpha = beta, the equal scaling Hoffmann et al. 2022 and
  Besiroglu et al. 2024 found), and to both; the first identified form is used, and the result says
  which form and why (`FitResult.form`, `.identified`, `.not_identified`). It never raises for data
  that vary N and D.
- Speed. Instead of 4500 L-BFGS starts, the fit goes by variable projection (scaling/projection.py):
  the exponents on a grid, the constants E, A, B solved exactly at each grid point, and the grid's best
  local minima polished by a batched projected Newton method, all in numpy (no JAX, no compilation).
  The paper's grid of starts is still run, by scaling/optimize.py's batched L-BFGS, when a `grid` is
  given or `exhaustive=True` (every start to convergence: what the benchmark checks the default against).

Internally `a` and `b` are centred, a' = a - alpha*mean(log N), b' = b - beta*mean(log D): the same objective,
far better conditioned (log N ~ 20 otherwise couples a and alpha), and a' is the log of the N-term at the data's
geometric-mean N, the quantity the term bounds constrain.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling import projection
from smallest_loss.scaling.fitbase import BOUND_TOL, DEFAULT_DELTA, GRAD_TOL, blocked, grid_starts, scaled_tol
from smallest_loss.scaling.points import ArrayLike, FitPoints, centring, check_spread

if TYPE_CHECKING:
    from smallest_loss.scaling.kaplan import KaplanLaw


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float | np.floating | np.integer) or not math.isfinite(value):
                raise UserError(f"ChinchillaLaw.{f.name}={value!r} must be a finite number")
            object.__setattr__(self, f.name, float(value))
        for name in ("A", "B", "alpha", "beta"):
            if not getattr(self, name) > 0:
                raise UserError(f"ChinchillaLaw.{name}={getattr(self, name)!r} must be positive")
        if self.E < 0:
            raise UserError(f"ChinchillaLaw.E={self.E!r} must be >= 0 (the irreducible loss)")

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Predicted loss E + A/N^alpha + B/D^beta, broadcast over N and D."""
        N = np.asarray(N, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        out = self.E + self.A / N**self.alpha + self.B / D**self.beta
        return float(out) if np.ndim(out) == 0 else out

    @property
    def G(self) -> float:
        """G = (alpha*A / (beta*B))^(1/(alpha+beta)); Hoffmann et al. 2022, eq. 4."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    @property
    def n_exponent(self) -> float:
        """a = beta/(alpha+beta): N_opt grows as C^a (Hoffmann et al. 2022, eq. 4)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def d_exponent(self) -> float:
        """b = alpha/(alpha+beta): D_opt grows as C^b (Hoffmann et al. 2022, eq. 4)."""
        return self.alpha / (self.alpha + self.beta)

    def optimal_allocation(self, C: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """(N_opt, D_opt) minimising L under C = 6ND (Hoffmann et al. 2022, eq. 4).

        N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = G^-1 (C/6)^(alpha/(alpha+beta)).
        """
        C = np.asarray(C, dtype=np.float64)
        if np.any(~np.isfinite(C)) or np.any(C <= 0):
            raise UserError(f"compute budget C={C!r} must be positive and finite (FLOPs)")
        N = self.G * (C / 6.0) ** self.n_exponent
        D = (C / 6.0) ** self.d_exponent / self.G
        if N.ndim == 0:
            return float(N), float(D)
        return N, D


CHINCHILLA_PARAMS = ("a", "b", "e", "alpha", "beta")
LAW_KEYS = ("E", "A", "B", "alpha", "beta", "n_exponent")  # what a report gives of a fitted law

# Hoffmann et al. 2022, Approach 3 initialisation grid: 6 * 6 * 5 * 5 * 5 = 4500 starts.
CHINCHILLA_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}

# The physical box (see the module docstring).
E_FLOOR = 0.01  # E >= E_FLOOR * min(loss)
EXPONENT_BOUNDS = (0.01, 2.0)  # alpha, beta
TERM_BOUNDS = (1e-4, 10.0)  # A/N^alpha at the geometric-mean N in [1e-4 * min(loss), 10 * max(loss)]; B likewise
COND_MAX = 1e6  # largest condition number of the column-scaled Jacobian of log predictions
SE_LIMITS = {"e": math.log(2.0), "alpha": 1.0, "beta": 1.0}  # SE(log E) <= log 2; SE(exponent) <= 100% of it


# ---------------------------------------------------------------------------------------------------
# Chinchilla Approach 3: bounds, forms, identification.


def chinchilla_bounds(points: FitPoints) -> np.ndarray:
    """The box (2, 5) on centred (a', b', e, alpha, beta) for these points (module docstring)."""
    log_lo, log_hi = math.log(points.loss.min()), math.log(points.loss.max())
    term = (log_lo + math.log(TERM_BOUNDS[0]), log_hi + math.log(TERM_BOUNDS[1]))
    return np.array([[term[0], term[0], log_lo + math.log(E_FLOOR), EXPONENT_BOUNDS[0], EXPONENT_BOUNDS[0]],
                     [term[1], term[1], log_lo, EXPONENT_BOUNDS[1], EXPONENT_BOUNDS[1]]])  # fmt: skip


@dataclass(frozen=True)
class ChinchillaForm:
    """A Chinchilla law with some constants fixed or tied: centred z = z0 + u M^T, u within box.

    u always has five coordinates, so every form shares one compiled optimiser; a coordinate that is
    not free has a zero column in M and the box [0, 0].
    """

    name: str
    description: str
    M: np.ndarray  # (5, 5)
    z0: np.ndarray  # (5,)
    free: tuple[int, ...]  # indices of the free coordinates of u
    box: np.ndarray  # (2, 5)


def make_form(name: str, box5: np.ndarray, e_fixed: float | None = None, ratio: float | None = None,
              ratio_source: str = "") -> ChinchillaForm:  # fmt: skip
    """Full law, E fixed at exp(e_fixed), beta = ratio * alpha, or both."""
    M, z0, box = np.eye(5), np.zeros(5), box5.copy()
    parts = []
    if ratio is not None:  # alpha's range must keep beta = ratio * alpha in its own range
        box[:, 3] = [max(box5[0, 3], box5[0, 4] / ratio), min(box5[1, 3], box5[1, 4] / ratio)]
        M[4, 3], M[4, 4], box[:, 4] = ratio, 0.0, 0.0
        parts.append(f"beta tied to alpha (beta = {ratio:.4g} alpha, {ratio_source})")
    if e_fixed is not None:
        z0[2], M[2, 2], box[:, 2] = e_fixed, 0.0, 0.0
        parts.append(f"E fixed at {math.exp(e_fixed):.4g}")
    fitted = ", ".join(n for n, on in zip(("A", "B", "E", "alpha"), M.any(axis=0)[:4], strict=True) if on)
    fitted += ", beta" if M[4, 4] else ""
    description = "; ".join(parts + [f"{fitted} fitted"]) if parts else "full law: E, A, B, alpha, beta all fitted"
    return ChinchillaForm(name, description, M, z0, tuple(int(i) for i in np.flatnonzero(M.any(axis=0))), box)


def _jacobian(z: np.ndarray, points: FitPoints, mu: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Residuals log pred - log L and the Jacobian (P, 5) of log pred in centred coordinates."""
    a, b, e, alpha, beta = z
    xN, xD = np.log(points.N) - mu[0], np.log(points.D) - mu[1]
    t1, t2 = np.exp(a - alpha * xN), np.exp(b - beta * xD)
    pred = t1 + t2 + math.exp(e)
    J = np.stack([t1, t2, np.full_like(t1, math.exp(e)), -xN * t1, -xD * t2], axis=1) / pred[:, None]
    return np.log(pred) - np.log(points.loss), J


NATURAL_NAMES = ("A", "B", "E", "alpha", "beta")  # what each centred coordinate (a', b', e, alpha, beta) sets


def coordinates_at_bounds(form: ChinchillaForm, u: np.ndarray) -> np.ndarray:
    """(..., 5) booleans: free coordinates at (within `BOUND_TOL` of the range of) a bound."""
    span = form.box[1] - form.box[0]
    near = (np.abs(u - form.box[0]) <= BOUND_TOL * span) | (np.abs(u - form.box[1]) <= BOUND_TOL * span)
    return near & form.M.any(axis=0)


def standard_errors(
    form: ChinchillaForm, u: np.ndarray, points: FitPoints, mu: tuple[float, float]
) -> tuple[float, dict[str, float] | None]:
    """The condition number of the column-scaled Jacobian at u, and the Wald (Gauss-Newton) standard errors of
    the form's free E and exponents, the residuals' variance over n - p: `log E` absolute, `alpha` and `beta`
    relative to their values (what `SE_LIMITS` bounds); None where the Jacobian is too ill-conditioned."""
    r, J = _jacobian(form.z0 + form.M @ u, points, mu)
    free = list(form.free)
    Ju = (J @ form.M)[:, free]
    scaled = Ju / np.maximum(np.linalg.norm(Ju, axis=0), 1e-300)
    eig = np.linalg.eigvalsh(scaled.T @ scaled)
    cond = math.sqrt(eig[-1] / eig[0]) if eig[0] > 0 else math.inf
    if cond > COND_MAX:
        return cond, None
    sigma2 = float(np.sum(r * r)) / max(len(points) - len(free), 1)
    se = np.sqrt(np.maximum(np.diag(sigma2 * np.linalg.pinv(Ju.T @ Ju)), 0.0))
    names = {"e": "log E", "alpha": "alpha", "beta": "beta"}
    errors = {names[CHINCHILLA_PARAMS[i]]: float(s if CHINCHILLA_PARAMS[i] == "e" else s / max(u[i], 1e-300))
              for i, s in zip(free, se, strict=True) if CHINCHILLA_PARAMS[i] in names}  # fmt: skip
    return cond, errors


def identification_margin(errors: dict[str, dict[str, float]], form: str = "full") -> str:
    """How far a fit's E sits inside its identification limit, for a report: the standard error of log E of the
    `form` (its fit's `standard_errors`); "" where not recorded or E fixed."""
    se = (errors.get(form) or {}).get("log E")
    return "" if se is None else f"standard error of log E {se:.2f}, limit log 2 = {SE_LIMITS['e']:.2f}"


def _not_identified(
    form: ChinchillaForm, u: np.ndarray, points: FitPoints, mu: tuple[float, float]
) -> tuple[list[str], dict[str, float]]:
    """Why the fitted form is not identified (empty when it is): bounds, conditioning, standard errors; and its
    standard errors (`standard_errors`; empty where the Jacobian is ill-conditioned)."""
    lower = u - form.box[0] < form.box[1] - u
    reasons = [f"{NATURAL_NAMES[i]} ran to its {'lower' if lower[i] else 'upper'} bound"
               for i in np.flatnonzero(coordinates_at_bounds(form, u))]  # fmt: skip
    cond, errors = standard_errors(form, u, points, mu)
    if errors is None:
        return reasons + [f"the Jacobian is ill-conditioned (condition number {cond:.3g})"], {}
    for key, limit in (("log E", SE_LIMITS["e"]), ("alpha", SE_LIMITS["alpha"]), ("beta", SE_LIMITS["beta"])):
        if key not in errors or errors[key] <= limit:
            continue
        if key == "log E":
            reasons.append(f"E is not determined (standard error of log E {errors[key]:.3g})")
        else:
            reasons.append(f"{key} is not determined (standard error {errors[key]:.0%} of it)")
    return reasons, errors


def _form_starts(form: ChinchillaForm, grid_z: np.ndarray, extra: list[np.ndarray]) -> np.ndarray:
    """Grid starts (centred z) and earlier optima mapped to the form's coordinates, in its box, distinct."""
    z = np.vstack([grid_z, *extra]) - form.z0
    u = np.clip(np.linalg.lstsq(form.M, z.T, rcond=None)[0].T, form.box[0], form.box[1])
    return np.unique(np.round(u, 12), axis=0)


@dataclass(frozen=True)
class FitResult:
    """The best of all starts: the law, raw parameters, objective, convergence and identification.

    `form` names the law actually fitted ("full", "fixed_E", "tied", "tied_fixed_E"; "kaplan" for the
    Kaplan form); `identified` says whether its constants are pinned down by the data; `not_identified`
    maps each form tried before (and the used one, if it too failed) to the reasons.
    """

    law: ChinchillaLaw | KaplanLaw
    params: np.ndarray  # (a, b, e, alpha, beta) for Chinchilla; (log Nc, log Dc, aN, aD) for Kaplan
    param_names: tuple[str, ...]
    objective: float  # sum of Huber losses at params
    grad_norm: float  # max |projected d objective / d coordinate| in the fitted coordinates
    converged: bool  # grad_norm <= grad_tol
    n_starts: int
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    delta: float = DEFAULT_DELTA
    n_at_best: int = 1  # refined starts that ended within 1e-9 (relative) of the best objective
    identified: bool = True
    form: str = "full"
    form_description: str = "full law: E, A, B, alpha, beta all fitted"
    not_identified: dict[str, list[str]] = field(default_factory=dict)
    bounds: dict[str, list[float]] = field(default_factory=dict)
    # each tried form's standard errors (`standard_errors`: "log E", "alpha", "beta" relative; SE_LIMITS bounds them)
    standard_errors: dict[str, dict[str, float]] = field(default_factory=dict)
    free: np.ndarray | None = field(default=None, repr=False)  # fitted coordinates (for the bootstrap)
    chinchilla_form: ChinchillaForm | None = field(default=None, repr=False, compare=False)  # for the bootstrap

    @property
    def diagnostics(self) -> dict[str, Any]:
        """JSON-ready fit diagnostics for the law file (`identified`, `form`, `form_description` and
        `not_identified` say which law was used and why)."""
        return {
            "objective": self.objective, "delta": self.delta,
            "params": dict(zip(self.param_names, map(float, self.params), strict=True)),
            "grad_norm": self.grad_norm, "converged": self.converged, "n_starts": self.n_starts,
            "n_at_best": self.n_at_best, "identified": self.identified, "form": self.form,
            "form_description": self.form_description, "not_identified": self.not_identified,
            "bounds": self.bounds, "warnings": list(self.warnings), "seconds": self.seconds,
            "standard_errors": self.standard_errors,
        }  # fmt: skip


def chinchilla_objective(
    params: np.ndarray, points: FitPoints, delta: float = DEFAULT_DELTA, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Approach 3 objective and its gradient in (a, b, e, alpha, beta) (Hoffmann et al. 2022, eq. 3).

    sum_i w_i Huber_delta(log(exp(a - alpha log N_i) + exp(b - beta log D_i) + exp(e)) - log L_i), float64.
    """
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    free = np.array([[-np.inf] * 5, [np.inf] * 5])
    data = projection.make_data(points, (0.0, 0.0), delta, np.eye(5), np.zeros(5), free)
    f, g, _ = projection.derivatives(np.asarray(params, np.float64)[None], w, data, hessian=False)
    return float(f[0]), g[0]


def _minimise(form: ChinchillaForm, points: FitPoints, mu: tuple[float, float], delta: float, projected: bool,
              starts: np.ndarray, max_evals: int, exhaustive: bool) -> tuple[np.ndarray, int]:  # fmt: skip
    """The form's best u: by variable projection (earlier forms' optima as extra starts), or from the start grid
    by L-BFGS in JAX (scaling/chinchilla_lbfgs.py, loaded only then)."""
    if projected:
        data = projection.make_data(points, mu, delta, form.M, form.z0, form.box)
        return projection.minimise_form(data, starts, GRAD_TOL)
    from smallest_loss.scaling.chinchilla_lbfgs import minimise_lbfgs

    return minimise_lbfgs(form, points, mu, delta, starts, max_evals, exhaustive)


def _natural_bounds(box: np.ndarray, mu: tuple[float, float]) -> dict[str, list[float]]:
    return {"E": np.exp(box[:, 2]).tolist(), "alpha": box[:, 3].tolist(), "beta": box[:, 4].tolist(),
            "A_term_at_mean_N": np.exp(box[:, 0]).tolist(), "B_term_at_mean_D": np.exp(box[:, 1]).tolist(),
            "mean_N": math.exp(mu[0]), "mean_D": math.exp(mu[1])}  # fmt: skip


def _forms(box: np.ndarray, allocation_exponent: float | None) -> list[Callable[[float], ChinchillaForm]]:
    """The fallback ladder: full, E fixed, beta tied to alpha, both (each given the last best e)."""
    if allocation_exponent is not None and 0 < allocation_exponent < 1:
        ratio, source = allocation_exponent / (1 - allocation_exponent), "from Approach 2's N_opt ~ C^a"
    else:
        ratio, source = 1.0, "alpha = beta, equal scaling as Hoffmann et al. 2022 found"
    return [
        lambda e: make_form("full", box),
        lambda e: make_form("fixed_E", box, e_fixed=e),
        lambda e: make_form("tied", box, ratio=ratio, ratio_source=source),
        lambda e: make_form("tied_fixed_E", box, e_fixed=e, ratio=ratio, ratio_source=source),
    ]


def fit_chinchilla(
    points: FitPoints,
    delta: float = DEFAULT_DELTA,
    grid: dict[str, Any] | None = None,
    grad_tol: float = GRAD_TOL,
    max_evals: int = 1000,
    allocation_exponent: float | None = None,
    exhaustive: bool = False,
) -> FitResult:
    """Chinchilla Approach 3 (Hoffmann et al. 2022) within physical bounds, with fallback forms.

    By default the fit goes by variable projection (scaling/projection.py): the exponents on a grid, the
    constants solved at each grid point, the best grid points polished by Newton's method. With a `grid` of
    starts (Chinchilla's 4500 by default when `exhaustive`), L-BFGS runs from each start instead
    (scaling/chinchilla_lbfgs.py), the grid projected into `chinchilla_bounds`. The best point's
    identification is checked (Besiroglu et al. 2024 polish theirs); if the full law is not
    identified the fallback forms are tried (module docstring). `allocation_exponent` (Approach 2's
    a in N_opt ~ C^a) sets the tie between the exponents. Raises only for unusable input.
    """
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive (Chinchilla used 1e-3)")
    check_spread(points)
    start = time.perf_counter()
    starts, _ = grid_starts(grid, CHINCHILLA_GRID)
    mu = centring(points)
    grid_z = starts.copy()  # the grid in centred coordinates: a' = a - alpha mean(log N), b' likewise
    grid_z[:, :2] -= starts[:, 3:5] * np.array(mu)
    box = chinchilla_bounds(points)
    tried: dict[str, list[str]] = {}
    errors: dict[str, dict[str, float]] = {}
    found: list[np.ndarray] = []
    projected = grid is None and not exhaustive
    for make in _forms(box, allocation_exponent):
        form = make(float(np.clip(found[-1][2], box[0, 2], box[1, 2])) if found else 0.0)
        form_starts = _form_starts(form, grid_z[:0] if projected else grid_z, found)
        u, n_at_best = _minimise(form, points, mu, delta, projected, form_starts, max_evals, exhaustive)
        found.append(form.z0 + form.M @ u)
        reasons, errors[form.name] = _not_identified(form, u, points, mu)
        if reasons:
            tried[form.name] = reasons
        if not reasons:
            break
    n_starts = projection.GRID_SIZE**2 if projected else len(starts)
    return _chinchilla_result(form, u, points, mu, delta, grad_tol, n_starts, n_at_best, tried, box,
                              time.perf_counter() - start, errors)  # fmt: skip


def _fallback_warning(form: ChinchillaForm, tried: dict[str, list[str]]) -> list[str]:
    if not tried:
        return []
    why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in tried.items())
    if form.name in tried:
        return [
            f"no form of the law is identified by these points ({why}); using the last fallback, "
            f"{form.description}: treat its constants as a rough description of these points only"
        ]
    return [f"the full law is not identified ({why}); using {form.description}"]


def _chinchilla_result(form: ChinchillaForm, u: np.ndarray, points: FitPoints, mu: tuple[float, float],
                       delta: float, grad_tol: float, n_starts: int, n_at_best: int, tried: dict[str, list[str]],
                       box: np.ndarray, seconds: float, errors: dict[str, dict[str, float]]) -> FitResult:  # fmt: skip
    """FitResult of the chosen form: uncentred parameters, law, gradient check, warnings."""
    z = form.z0 + form.M @ u
    params = np.array([z[0] + z[3] * mu[0], z[1] + z[4] * mu[1], z[2], z[3], z[4]])
    data = projection.make_data(points, mu, delta, form.M, form.z0, form.box)
    f, g, _ = projection.derivatives(u[None], np.ones(len(points)), data, hessian=False)
    objective, g = float(f[0]), g[0]
    grad_norm = float(np.max(np.abs(np.where(blocked(u, g, form.box), 0.0, g))))
    a, b, e, alpha, beta = params
    warnings = _fallback_warning(form, tried)
    grad_tol = scaled_tol(grad_tol, len(points))
    if grad_norm > grad_tol:
        warnings.append(f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {grad_tol:g}; check the data")
    return FitResult(
        law=ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta),
        params=params, param_names=CHINCHILLA_PARAMS, objective=objective, grad_norm=grad_norm,
        converged=grad_norm <= grad_tol, n_starts=n_starts, warnings=tuple(warnings), seconds=seconds,
        delta=delta, n_at_best=n_at_best, identified=form.name not in tried, form=form.name,
        form_description=form.description, not_identified=tried, bounds=_natural_bounds(box, mu), free=u,
        chinchilla_form=form, standard_errors=errors,
    )  # fmt: skip
