"""The aspect-ratio law: the Chinchilla form times a factor in the aspect ratio d/n, with bootstrap intervals.

    L(N, D, r) = (E + A/N^alpha + B/D^beta) * exp(gamma * ln(r / r_opt)^2),    r = d/n (width over depth)

Why this form. A law in N and D alone cannot tell shapes of equal N apart, so a planner that knows wider
models run faster leans as wide as it is allowed. Kaplan et al. (2020, section 3.1 and figure 5) varied d/n at
fixed N and found the loss a shallow function of it: within a few percent of its minimum over a wide middle
range (d/n about 20 to 200 for their models), rising at both ends, by about the same fraction at every N, and
roughly symmetric in log d/n. A factor quadratic in ln(d/n) around an optimum r_opt is the smallest form with
those properties: a curvature gamma >= 0 and a centre, two constants; gamma = 0 is the N-D law. Gemstones
(McLeish et al. 2025, arXiv 2502.06857) fit separate power terms in width and depth instead, and found the
prescriptions of such laws sensitive to which shapes the sweep holds; a CPU sweep affords a handful of shapes,
so the factor has as few constants as the data can pin down, and the law records the d/n its points span
(`AspectLaw.aspect_range`): the planner does not leave that region.

Fit. The objective of Approach 3 (Hoffmann et al. 2022, eq. 3; scaling/chinchilla.py): the sum of Huber losses
(delta = 1e-3) between the predicted and the observed log loss, here
    log L = LSE(a' - alpha xN, b' - beta xD, e) + gamma (xr - x_opt)^2,
with x = log N, log D, log d/n centred on the points. The five N-D constants start from the N-D fit of the same
points and keep its form (its bounds, and whatever constant its fallback fixed or tied stays fixed or tied);
gamma and x_opt start from a grid; all starts run together in scaling/optimize.py's batched L-BFGS and the best
is polished with scipy. All seven constants are fitted jointly. Intervals: the percentile bootstrap over runs
(Besiroglu et al. 2024; scaling/bootstrap.py), each resample refitted from the fit and a few perturbations of it.
Leaving out one shape at a time checks the law (`leave_one_shape_out`, scaling/holdout.py).

Identification. The shape term is separated from the N term only by points of (nearly) equal N and different
d/n: a sweep with one aspect ratio per model size is refused (`check_shapes`).

Other shape terms (scaling/shape_terms.py: `flat`, `asymmetric`, `drift`) replace the factor above with one more
constant each, fitted the same way (`fit_aspect(..., term=NAME)`); the symmetric one is the default, chosen by the
leave-one-shape-out error on this CPU's sweeps and on Gemstones together (docs/methods.md). The drift term's kappa
needs two or more model sizes with several shapes each, or the fit warns.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import jax, jnp
from smallest_loss.scaling.bootstrap import interval, resample_counts
from smallest_loss.scaling.chinchilla import ChinchillaLaw, FitResult, fit_chinchilla
from smallest_loss.scaling.optimize import (
    BOUND_TOL,
    DEFAULT_DELTA,
    GRAD_TOL,
    GroupWeights,
    Problem,
    batched_lbfgs,
    blocked,
    evaluate,
    huber,
    polish,
    scaled_tol,
)
from smallest_loss.scaling.points import ArrayLike, FitPoints, budget_labels, read_fit_csv
from smallest_loss.scaling.shape_terms import DEFAULT_TERM, TERMS, ShapeTerm, get_term

SHAPE_COLUMNS = ("d", "n")
SAME_N_RTOL = 0.25  # models whose N lie within 25% of a group's smallest count as one size (`budget_labels`)
ASPECT_RTOL = 0.1  # aspect ratios within 10% are one shape
GAMMA_BOUNDS = (0.0, 2.0)  # gamma = 2 is a factor e^2 at a factor e^1 from the optimal d/n: far steeper than any data
OPT_MARGIN = math.log(4.0)  # r_opt may lie up to a factor 4 beyond the sampled d/n; at that edge it is not identified
GAMMA_STARTS = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3)
OPT_STARTS = 7  # start values of x_opt, evenly over the sampled log d/n


@dataclass(frozen=True)
class AspectLaw:
    """The aspect-ratio factor exp(gamma ln(r / aspect_opt)^2), r = d/n, that multiplies a law's loss: the loss a
    shallow function of d/n around an optimum (Kaplan et al. 2020, section 3.1 and figure 5; fitted by
    `fit_aspect`). `aspect_range` is the d/n its points spanned: the region where it was fitted. Bootstrap
    `samples` (gamma, aspect_opt) pair one to one with the law file's samples of the other constants."""

    gamma: float
    aspect_opt: float
    aspect_range: tuple[float, float]
    intervals: dict[str, tuple[float, float]] | None = None
    samples: dict[str, np.ndarray] | None = None
    term: str = "symmetric"  # which shape term (scaling/shape_terms.py); law files without one hold the symmetric
    params: dict[str, float] | None = None  # the term's other constants (half_width, gamma_high, kappa and n_ref)

    def __post_init__(self) -> None:
        lo, hi = self.aspect_range
        term, params = get_term(self.term), self.params or {}
        missing = [k for k in (*term.extras, *(("n_ref",) if term.name == "drift" else ())) if k not in params]
        if missing or not all(math.isfinite(float(v)) for v in params.values()):
            raise UserError(f"AspectLaw: the {term.name} term needs finite {', '.join(missing) or 'constants'}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise UserError(f"AspectLaw.gamma={self.gamma!r} must be a finite number >= 0")
        if not (math.isfinite(self.aspect_opt) and self.aspect_opt > 0 and math.isfinite(hi) and 0 < lo <= hi):
            raise UserError(
                f"AspectLaw: aspect_opt={self.aspect_opt!r} and aspect_range=({lo!r}, {hi!r}) must be "
                "positive, finite, low <= high"
            )

    def factor(self, d: ArrayLike, n: ArrayLike, N: ArrayLike | None = None) -> ArrayLike:
        """The term's factor (symmetric: exp(gamma ln(d/n / aspect_opt)^2)): 1 at the optimal aspect ratio, at
        least 1 elsewhere. The drift term needs the parameter count N too."""
        params = self.params or {}
        extras = tuple(params[k] for k in get_term(self.term).extras)
        out = np.exp(self._log_factor(d, n, N, self.gamma, self.aspect_opt, extras))
        return float(out) if np.ndim(out) == 0 else out

    def sample_factors(self, d: np.ndarray, n: np.ndarray, N: np.ndarray | None = None) -> np.ndarray | None:
        """(samples, len(d)) factors under each bootstrap sample of the term's constants, or None without them."""
        term, s = get_term(self.term), self.samples or {}
        if not all(k in s for k in ("gamma", "aspect_opt", *term.extras)):
            return None
        gamma, r_opt, *extras = (np.asarray(s[k], float)[:, None] for k in ("gamma", "aspect_opt", *term.extras))
        return np.exp(self._log_factor(d[None, :], n[None, :], None if N is None else N[None, :], gamma, r_opt,
                                       tuple(extras)))  # fmt: skip

    def _log_factor(self, d: Any, n: Any, N: Any, gamma: Any, r_opt: Any, extras: tuple) -> np.ndarray:
        x = np.log(np.asarray(d, np.float64) / np.asarray(n, np.float64) / r_opt)
        z = 0.0
        if self.term == "drift":
            if N is None:
                raise UserError("this shape law's optimal d/n moves with N (drift term): give N as well as d and n")
            z = np.log(np.asarray(N, np.float64) / (self.params or {})["n_ref"])
        return get_term(self.term).log_factor(x, z, gamma, extras, np)


@dataclass(frozen=True)
class AspectPoints:
    """Fit points with each run's width d and depth n."""

    points: FitPoints
    d: np.ndarray
    n: np.ndarray

    def __post_init__(self) -> None:
        for name in SHAPE_COLUMNS:
            values = np.asarray(getattr(self, name), np.float64).ravel()
            if len(values) != len(self.points):
                raise UserError(f"AspectPoints.{name} has {len(values)} values for {len(self.points)} points")
            if not np.all(np.isfinite(values) & (values > 0)):
                raise UserError(f"AspectPoints.{name} must be positive numbers")
            object.__setattr__(self, name, values)

    @property
    def aspect(self) -> np.ndarray:
        """Each run's aspect ratio d/n (width over depth)."""
        return self.d / self.n

    def take(self, mask: np.ndarray) -> AspectPoints:
        """The points (and their d, n) where `mask` is true."""
        return AspectPoints(self.points.take(mask), self.d[mask], self.n[mask])


def read_aspect_csv(path: str | Path) -> AspectPoints:
    """A fit CSV (scaling/points.py) that also has columns d (width) and n (layers), one value per row."""
    points = read_fit_csv(path)
    with Path(path).open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in SHAPE_COLUMNS if c not in header]
        if missing:
            raise UserError(
                f"fit CSV {path} lacks column(s) {', '.join(missing)}: the shape law needs each run's "
                f"width d and depth n; found {header}"
            )
        index = [header.index(c) for c in SHAPE_COLUMNS]
        rows = [[_shape_cell(row, i, c, reader.line_num, path) for i, c in zip(index, SHAPE_COLUMNS, strict=True)]
                for row in reader if row]  # fmt: skip
    d, n = np.array(rows, np.float64).reshape(-1, 2).T
    return AspectPoints(points, d, n)


def _shape_cell(row: list[str], i: int, column: str, line: int, path: str | Path) -> float:
    text = row[i].strip() if i < len(row) else ""
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"fit CSV {path} row {line}: {column}={text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"fit CSV {path} row {line}: {column}={text!r} must be positive")
    return value


def shape_groups(points: AspectPoints) -> np.ndarray:
    """A label per point: its shape, aspect ratios within `ASPECT_RTOL` being one (leave-one-shape-out's unit)."""
    return budget_labels(points.aspect, ASPECT_RTOL)


def varied_sizes(points: AspectPoints) -> int:
    """How many model sizes (N within `SAME_N_RTOL`) hold two or more shapes."""
    shapes, sizes = shape_groups(points), budget_labels(points.points.N, SAME_N_RTOL)
    return sum(len(np.unique(shapes[sizes == s])) > 1 for s in np.unique(sizes))


def check_shapes(points: AspectPoints) -> None:
    """Refuse points that cannot identify the shape term: it needs at least three aspect ratios, and models of
    (nearly) one size, N within `SAME_N_RTOL`, at two or more of them; otherwise the aspect ratio moves with N
    and the fit cannot tell the shape term from the N term."""
    shapes = shape_groups(points)
    if len(np.unique(shapes)) < 3 or not varied_sizes(points):
        found = ", ".join(f"{r:.3g}" for r in np.unique(np.round(points.aspect, 3)))
        raise UserError(
            f"the shape law cannot be fitted: these {len(points.points)} runs have one aspect ratio d/n "
            f"per model size N (within {SAME_N_RTOL:.0%}) or fewer than three in all (d/n: {found}); "
            "add runs of several d/n at one N, as the cpu-shape design has"
        )


# ---------------------------------------------------------------------------------------------------
# The objective. Coordinates u = (u5, gamma, x_opt, *extras): u5 those of the N-D fit's form (`ChinchillaForm`:
# centred z5 = z0 + M u5, z5 = (a', b', e, alpha, beta)), x_opt the log optimal aspect ratio, centred, extras the
# shape term's other constants (scaling/shape_terms.py).


def _make_vg(term: ShapeTerm) -> Any:
    """The objective and gradient of every start (rows of u) for one shape term; w shared (P,) or per start (S, P):
    sum_i w_i Huber(LSE(a' - alpha xN_i, b' - beta xD_i, e) + g(xr_i - x_opt, xN_i) - log L_i)."""

    def one(u: jax.Array, w: jax.Array, data: tuple) -> jax.Array:
        xN, xD, xr, logL, delta, M, z0 = data
        a, b, e, alpha, beta = z0 + M @ u[:5]
        shape = term.log_factor(xr - u[6], xN, u[5], tuple(u[7 + i] for i in range(len(term.extras))), jnp)
        pred = jnp.logaddexp(jnp.logaddexp(a - alpha * xN, b - beta * xD), e) + shape
        return jnp.sum(w * huber(pred - logL, delta)[0])

    def vg(u: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
        return jax.vmap(jax.value_and_grad(one), in_axes=(0, 0 if w.ndim == 2 else None, None))(u, w, data)

    return vg


_VG = {name: _make_vg(term) for name, term in TERMS.items()}  # module-level: a jit static argument each


@dataclass(frozen=True)
class _Setup:
    data: tuple
    box: np.ndarray  # (2, 7 + extras)
    mu: tuple[float, float, float]  # mean log N, log D, log d/n
    nd: FitResult  # the N-D fit whose form the shape fit keeps
    term: ShapeTerm

    @property
    def vg(self) -> Any:
        return _VG[self.term.name]

    def constants(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """Natural constants from coordinates u (..., 7 + extras)."""
        form = self.nd.chinchilla_form
        z = form.z0 + u[..., :5] @ form.M.T
        alpha, beta = z[..., 3], z[..., 4]
        return {"E": np.exp(z[..., 2]), "A": np.exp(z[..., 0] + alpha * self.mu[0]),
                "B": np.exp(z[..., 1] + beta * self.mu[1]), "alpha": alpha, "beta": beta,
                "n_exponent": beta / (alpha + beta), "gamma": u[..., 5],
                "aspect_opt": np.exp(u[..., 6] + self.mu[2]),
                **{k: u[..., 7 + i] for i, k in enumerate(self.term.extras)}}  # fmt: skip


def _setup(points: AspectPoints, delta: float, term: ShapeTerm) -> _Setup:
    nd = fit_chinchilla(points.points, delta)
    form, p = nd.chinchilla_form, points.points
    mu = (float(np.log(p.N).mean()), float(np.log(p.D).mean()), float(np.log(points.aspect).mean()))
    xr = np.log(points.aspect) - mu[2]
    data = (np.log(p.N) - mu[0], np.log(p.D) - mu[1], xr, np.log(p.loss), np.float64(delta), form.M, form.z0)
    box = np.c_[form.box, GAMMA_BOUNDS, [xr.min() - OPT_MARGIN, xr.max() + OPT_MARGIN], *term.bounds]
    return _Setup(data, box, mu, nd, term)


@dataclass(frozen=True)
class AspectFit:
    """The fitted shape-aware law: the Chinchilla part, its aspect-ratio factor, and how the fit went."""

    law: ChinchillaLaw
    shape: AspectLaw
    objective: float
    grad_norm: float
    converged: bool
    warnings: tuple[str, ...]
    seconds: float
    u: np.ndarray
    setup: _Setup

    @property
    def diagnostics(self) -> dict[str, Any]:
        """JSON-ready diagnostics for the law file: which form, the N-D part's form, convergence, warnings."""
        nd = self.setup.nd
        return {"form": "shape", "form_description": f"shape-aware law: the Chinchilla form times "
                f"{self.setup.term.formula} ({self.shape.term} term), all fitted jointly; N-D part: "
                f"{nd.form_description}", "shape_term": self.shape.term, "nd_form": nd.form,
                "identified": not self.warnings, "objective": self.objective, "grad_norm": self.grad_norm,
                "converged": self.converged, "warnings": list(self.warnings), "seconds": self.seconds}  # fmt: skip

    def loss(self, points: AspectPoints) -> np.ndarray:
        """Predicted loss at the points' N, D, d and n."""
        p = points.points
        return np.asarray(self.law.loss(p.N, p.D), float) * self.shape.factor(points.d, points.n, p.N)


def _starts(setup: _Setup) -> np.ndarray:
    """The N-D fit's constants with every (gamma, x_opt, *extras) of a grid, inside the box."""
    u5 = setup.nd.free
    x_opt = np.linspace(setup.data[2].min(), setup.data[2].max(), OPT_STARTS)
    grid = np.array([[*u5, g, x, *e] for g in GAMMA_STARTS for x in x_opt for e in setup.term.starts])
    return np.clip(grid, setup.box[0], setup.box[1])


def _bound_warnings(u: np.ndarray, setup: _Setup, aspect_range: tuple[float, float]) -> list[str]:
    """What the points leave open: no aspect-ratio effect, or an optimum beyond the sampled d/n."""
    span = setup.box[1] - setup.box[0]
    at_lo, at_hi = np.abs(u - setup.box[0]) <= BOUND_TOL * span, np.abs(u - setup.box[1]) <= BOUND_TOL * span
    warnings = []
    if at_lo[5] and (setup.term.name != "asymmetric" or at_lo[7]):
        warnings.append(
            "gamma = 0: these points show no effect of the aspect ratio d/n on the loss (the shape-aware "
            "law is the N-D law)"
        )
    elif at_hi[5]:
        warnings.append(f"gamma ran to its upper bound {GAMMA_BOUNDS[1]:g}: check the losses of the extreme shapes")
    elif at_lo[6] or at_hi[6]:
        warnings.append(
            f"the optimal aspect ratio ran to its bound, a factor {math.exp(OPT_MARGIN):g} beyond the "
            f"sampled d/n {aspect_range[0]:.3g}-{aspect_range[1]:.3g}: the points do not bracket it"
        )
    return warnings


def fit_aspect(points: AspectPoints, delta: float = DEFAULT_DELTA, term: str = DEFAULT_TERM) -> AspectFit:
    """Fit the shape-aware law with shape term `term` (scaling/shape_terms.py) to the points (module docstring);
    refuses points that cannot identify it."""
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive (Chinchilla used 1e-3)")
    shape_term = get_term(term)
    check_shapes(points)
    begin = time.perf_counter()
    setup = _setup(points, delta, shape_term)
    ones = np.ones(len(points.points))
    res = batched_lbfgs(setup.vg, _starts(setup), ones, setup.data, bounds=setup.box)
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf)
    problem = Problem(setup.vg, lambda _: setup.data, setup.box)
    u = polish(problem, points.points, res["x"][np.argmin(f)])
    objective, g = evaluate(problem, points.points, u)
    grad_norm = float(np.max(np.abs(np.where(blocked(u, g, setup.box), 0.0, g))))
    c = setup.constants(u)
    aspect_range = (float(points.aspect.min()), float(points.aspect.max()))
    warnings = list(setup.nd.warnings) + _bound_warnings(u, setup, aspect_range)
    if shape_term.name == "drift" and varied_sizes(points) < 2:
        warnings.append(
            "the drift term's kappa (how the optimal d/n moves with N) is not identified: only one model size "
            "has several shapes; add shapes at a second size or use the symmetric term"
        )
    tol = scaled_tol(GRAD_TOL, len(ones))
    if grad_norm > tol:
        warnings.append(f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {tol:g}; check the data")
    law = ChinchillaLaw(**{k: float(c[k]) for k in ("E", "A", "B", "alpha", "beta")})
    params = {k: float(c[k]) for k in shape_term.extras} | _reference(shape_term, setup)
    shape = AspectLaw(gamma=float(c["gamma"]), aspect_opt=float(c["aspect_opt"]), aspect_range=aspect_range,
                      term=shape_term.name, params=params or None)  # fmt: skip
    return AspectFit(law=law, shape=shape, objective=objective, grad_norm=grad_norm, converged=grad_norm <= tol,
                    warnings=tuple(warnings), seconds=time.perf_counter() - begin, u=u, setup=setup)  # fmt: skip


def _reference(term: ShapeTerm, setup: _Setup) -> dict[str, float]:
    """The drift term's reference size n_ref: the geometric mean N of the points (where z = ln(N / n_ref) = 0)."""
    return {"n_ref": math.exp(setup.mu[0])} if term.name == "drift" else {}


# ---------------------------------------------------------------------------------------------------
# Bootstrap.


@dataclass(frozen=True)
class AspectBootstrap:
    """Bootstrap samples of all seven constants (one row per resample, paired) and percentile intervals."""

    samples: dict[str, np.ndarray]
    intervals: dict[str, tuple[float, float]]
    level: float
    n_boot: int
    n_converged: int
    seconds: float
    warnings: tuple[str, ...]


def bootstrap_aspect(points: AspectPoints, fit: AspectFit, n_boot: int = 1000, seed: int = 0, starts: int = 4,
                     level: float = 0.95) -> AspectBootstrap:  # fmt: skip
    """Refit on `n_boot` resamples of the runs (`FitPoints.group`), all at once, each from the fit and
    `starts - 1` perturbations of it, keeping its best (Besiroglu et al. 2024: percentile intervals)."""
    if n_boot < 2 or starts < 1 or not 0 < level < 1:
        raise UserError(f"need n_boot >= 2, starts >= 1 and 0 < level < 1; got {n_boot}, {starts}, {level}")
    begin, rng, setup = time.perf_counter(), np.random.default_rng(seed), fit.setup
    index, n_groups = points.points.group_index
    scale = np.r_[np.array([0.3, 0.3, 0.1, 0.1, 0.1]) * setup.nd.chinchilla_form.M.any(axis=0), 0.02, 0.3,
                  setup.term.scales]  # fmt: skip
    x0 = np.clip(np.vstack([fit.u, fit.u + rng.normal(size=(starts - 1, len(scale))) * scale]), *setup.box)
    weights = GroupWeights(resample_counts(n_groups, n_boot, rng), index, np.repeat(np.arange(n_boot), starts))
    res = batched_lbfgs(setup.vg, np.tile(x0, (n_boot, 1)), weights, setup.data, bounds=setup.box)
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf).reshape(n_boot, starts)
    pick = np.arange(n_boot) * starts + np.argmin(f, axis=1)
    samples = setup.constants(res["x"][pick])
    n_converged = int(np.sum(np.max(np.abs(res["g"][pick]), axis=1) <= scaled_tol(GRAD_TOL, len(index))))
    warnings = (
        []
        if n_converged >= 0.9 * n_boot
        else [f"only {n_converged} of {n_boot} bootstrap refits converged; intervals may be too wide"]
    )
    return AspectBootstrap(samples=samples, intervals={k: interval(v, level) for k, v in samples.items()}, level=level,
                          n_boot=n_boot, n_converged=n_converged, seconds=time.perf_counter() - begin,
                          warnings=tuple(warnings))  # fmt: skip


def with_intervals(fit: AspectFit, boot: AspectBootstrap | None) -> AspectLaw:
    """The fit's shape factor carrying its bootstrap intervals and samples (for the law file)."""
    if boot is None:
        return fit.shape
    pick = ("gamma", "aspect_opt", *fit.setup.term.extras)
    return dataclasses.replace(
        fit.shape, intervals={k: boot.intervals[k] for k in pick}, samples={k: boot.samples[k] for k in pick}
    )
