"""Calibrated intervals from a fitted Chinchilla law: the prediction interval of a NEW run's loss, and the law's
constants, mean loss and N_opt at a budget.

The bootstrap's percentile intervals (scaling/bootstrap.py) carry only the constants' uncertainty: on simulated
sweeps with known constants (experiments/scripts/coverage_study.py, table in results/cpu/coverage/README.md) a
nominal 95% covered a new run's loss at the largest fitted budget about half the time, and 10-100x beyond it the
intervals were several times wider than the errors (a pairs bootstrap of few runs has heavy tails). Here:

1. The law's uncertainty: the robust spread (1.4826 x the median absolute deviation) of the bootstrap samples'
   predictions (log loss, log N_opt, log E/A/B, alpha, beta) around the fit's own, times the normal quantile,
   sqrt(n / (n - p)) (n points, p free constants of the form used: a bootstrap of n points sees a spread about
   (n - p)/n of the true one) and `LAW_FACTOR`.
2. The runs' own scatter around the law at the point (`scatter`, `scatter_shape`): s g(x), where x is the point's
   distance in decades from the law's compute-optimal N at its compute 6ND and g(x) = 1 + c x^2. IsoFLOP residuals
   are heteroscedastic: runs far from their budget's optimum (tiny or huge tokens per parameter) deviate from the
   Chinchilla form several times more than runs near it (on Porian et al.'s tables 1-6% within 0.5 decades, 6-18%
   beyond 0.8). c comes from a least-squares line of the fitted runs' |residual| on x^2, used only when its slope
   is significant (t > `SHAPE_T`; else c = 0, the old homoscedastic scatter), shrunk by 1 - (`SHAPE_T`/t)^2; s is
   the root mean square of the residuals / g(x) over n - p degrees of freedom, each clipped at `CLIP` robust
   standard deviations. Times Student's t quantile on n - p degrees of freedom.
3. A new run's log loss lies within sqrt(law^2 + scatter^2) of the prediction, times `PREDICTION_FACTOR`.
4. One budget up (`step_ratio`): with at least `STEP_MIN_BUDGETS` fitted budgets, the law is refitted on all but
   the largest fitted budget and predicts that budget's runs; the root mean square of their errors over s g(x) is
   the step ratio rho (at least 1). The half-width is at least rho times the scatter part of 2: where the form
   misses the runs' trend with scale, the errors one budget up show it (a leave-one-budget-out check on the fitted
   budgets only), and no bootstrap of that form does.

When the full law is not identified and the fit fell back to a smaller form, the law's part is also multiplied by
`FALLBACK_FACTOR`: the form itself is a guess, which no bootstrap of that form sees.

`LAW_FACTOR` and `PREDICTION_FACTOR` are fitted on the simulation (methods, not data sets: two laws, many designs
and noise levels, never a public table) and checked on a fresh one; docs/methods.md has the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.bootstrap import BootstrapResult
from smallest_loss.scaling.chinchilla import ChinchillaLaw, fit_chinchilla
from smallest_loss.scaling.laws import LawFile, load_law
from smallest_loss.scaling.points import ArrayLike, FitPoints, budget_labels

FREE_CONSTANTS = {"full": 5, "fixed_E": 4, "tied": 4, "tied_fixed_E": 3}
# Fitted on the simulation (experiments/scripts/coverage_study.py; 165 sweeps, seed 2, Epoch's and the CPU law, 3-5
# budgets of 3-7 runs, 0.3-3% noise): the pooled 95th percentile of |error| / half-width was 1.16 for the law's mean
# loss and N_opt at 1-100x the largest budget, and then 0.96 for a new run's loss (kept at 1: no narrowing).
LAW_FACTOR = 1.15  # multiplies the law's robust spread (after the sqrt(n / (n - p)) correction)
# A fallback form (E fixed, exponents tied: the full law not identified) is itself a guess the bootstrap cannot see:
# on the same simulation its 18 sweeps needed 2.0 times the full law's factor (1.5 for a new run's loss).
FALLBACK_FACTOR = 2.0
PREDICTION_FACTOR = 1.0  # multiplies a new run's combined half-width
# The x^2 slope of the runs' |residual| (`scatter_shape`) is used only when its t statistic exceeds this: on
# homoscedastic sweeps a spurious slope then appears in about 2.5% of fits.
SHAPE_T = 2.0
STEP_MIN_BUDGETS = 4  # fitted budgets `step_ratio` needs (its refit then has at least 3)
MAD_TO_SD = 1.4826  # median |x| of a normal sample, in standard deviations
CLIP = 4.0  # residuals beyond this many robust standard deviations count as this many (`scatter`)
LOG_CONSTANTS = ("E", "A", "B")  # their intervals are scaled in log space (positive constants)
CONSTANTS = ("E", "A", "B", "alpha", "beta")
T_EXACT_DF = 1000


@dataclass(frozen=True)
class IntervalCalibration:
    """What the calibrated intervals need besides the bootstrap samples; stored in a law file's
    `diagnostics.calibration`."""

    scatter: float  # robust standard deviation of the runs' log residuals, with the small-sample correction
    n_points: int
    n_params: int  # free constants of the form used (5 for the full law)
    law_factor: float = LAW_FACTOR
    prediction_factor: float = PREDICTION_FACTOR
    shape: float = 0.0  # c of the scatter's profile g(x) = 1 + c x^2 (x: decades from N_opt); 0: homoscedastic
    step_ratio: float = 1.0  # rho, the errors one budget up over the scatter (`step_ratio`); at least 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scatter) and self.scatter >= 0):
            raise UserError(f"calibration scatter={self.scatter!r} must be a finite number >= 0")
        if not (math.isfinite(self.shape) and self.shape >= 0 and math.isfinite(self.step_ratio)):
            raise UserError(f"calibration shape={self.shape!r} must be >= 0 and step_ratio finite")
        if self.n_points < 1 or self.n_params < 0:
            raise UserError(f"calibration needs n_points >= 1 and n_params >= 0, got {self.n_points}, {self.n_params}")

    @property
    def df(self) -> int:
        """Degrees of freedom of the residuals, n - p (at least 1)."""
        return max(self.n_points - self.n_params, 1)

    @property
    def inflation(self) -> float:
        """What the bootstrap's deviations are multiplied by: sqrt(n / (n - p)) x `law_factor`."""
        return math.sqrt(self.n_points / self.df) * self.law_factor

    def t(self, level: float) -> float:
        """Student's t quantile for a two-sided interval at `level` on `df` degrees of freedom."""
        return student_t(level, self.df)

    def noise(self, x: Any = 0.0) -> np.ndarray:
        """The runs' scatter (log loss, one standard deviation) at distance `x` (decades) from N_opt."""
        return self.scatter * (1 + self.shape * np.square(np.asarray(x, float)))

    def to_dict(self) -> dict[str, Any]:
        return dict(scatter=self.scatter, n_points=self.n_points, n_params=self.n_params,
                    law_factor=self.law_factor, prediction_factor=self.prediction_factor, shape=self.shape,
                    step_ratio=self.step_ratio)  # fmt: skip

    @classmethod
    def from_dict(cls, raw: Any, source: str = "law") -> IntervalCalibration:
        """Parse `diagnostics.calibration` of a law file; every problem is a `UserError` naming `source`."""
        keys = ("scatter", "n_points", "n_params", "law_factor", "prediction_factor", "shape", "step_ratio")
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), int | float) for k in keys[:3]):
            raise UserError(f"{source}: diagnostics.calibration must hold numbers scatter, n_points, n_params")
        values = {k: raw[k] for k in keys if isinstance(raw.get(k), int | float)}
        return cls(**{k: (int(v) if k.startswith("n_") else float(v)) for k, v in values.items()})


@dataclass(frozen=True)
class PredictionInterval:
    """Intervals of the loss at points (N, D) at `level`: of the law's mean loss and of a new run's loss."""

    N: np.ndarray
    D: np.ndarray
    predicted: np.ndarray  # the fitted law's loss
    mean_low: np.ndarray  # calibrated interval of the law's (mean) loss
    mean_high: np.ndarray
    low: np.ndarray  # prediction interval of a new run's loss
    high: np.ndarray
    level: float
    calibration: IntervalCalibration

    @property
    def half_width(self) -> np.ndarray:
        """Half the new run's interval, relative to the prediction (0.02: about +-2%)."""
        return (self.high - self.low) / (2 * self.predicted)


@dataclass(frozen=True)
class ConstantIntervals:
    """Calibrated intervals of the law's constants, and of N_opt at budgets C (FLOPs), at `level`."""

    intervals: dict[str, tuple[float, float]]
    C: np.ndarray
    n_opt: np.ndarray  # the fitted law's N_opt at C
    n_opt_low: np.ndarray
    n_opt_high: np.ndarray
    level: float


def student_t(level: float, df: int) -> float:
    """The t with P(|T| < t) = `level` for Student's t on `df` (integer) degrees of freedom: the closed forms of
    Abramowitz and Stegun (1964, 26.7.3-4) in theta = atan(t / sqrt(df)), inverted by bisection (no scipy: `fit`
    stays quick to start); beyond `T_EXACT_DF` degrees of freedom, the normal quantile (0.05% off at 1000)."""
    if df > T_EXACT_DF:
        return NormalDist().inv_cdf(0.5 + level / 2)

    def inside(theta: float) -> float:
        c2, term, total = math.cos(theta) ** 2, 1.0, 1.0
        if df % 2 == 0:
            for k in range(2, df, 2):  # 1 + 1/2 c^2 + (1 3)/(2 4) c^4 + ...
                term *= (k - 1) / k * c2
                total += term
            return math.sin(theta) * total
        for k in range(3, df, 2):  # 1 + 2/3 c^2 + (2 4)/(3 5) c^4 + ...
            term *= (k - 1) / k * c2
            total += term
        series = math.sin(theta) * math.cos(theta) * total if df > 1 else 0.0
        return 2 / math.pi * (theta + series)

    lo, hi = 0.0, math.pi / 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if inside(mid) < level else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def free_constants(form: str) -> int:
    """Free constants of a fitted form ("full", "fixed_E", "tied", "tied_fixed_E")."""
    if form not in FREE_CONSTANTS:
        raise UserError(f"no calibrated intervals for the {form!r} form; fit the Chinchilla law")
    return FREE_CONSTANTS[form]


def optimum_distance(law: ChinchillaLaw, N: ArrayLike, D: ArrayLike) -> np.ndarray:
    """x: decades between N and the law's compute-optimal N at the run's compute 6ND (0 on the optimum)."""
    N, D = np.broadcast_arrays(np.asarray(N, float), np.asarray(D, float))
    return np.log10(N / np.asarray(law.optimal_allocation(6 * N * D)[0], float).reshape(N.shape))


def log_residuals(law: ChinchillaLaw, points: FitPoints) -> np.ndarray:
    """log(loss) - log(the law's loss) of each point."""
    return np.log(points.loss) - np.log(np.asarray(law.loss(points.N, points.D), float))


def scatter_shape(x: np.ndarray, r: np.ndarray) -> float:
    """c of the scatter's profile g(x) = 1 + c x^2: a least-squares line of |r| on x^2, c = slope / intercept, and 0
    unless the slope's t statistic exceeds `SHAPE_T`, shrunk by 1 - (`SHAPE_T`/t)^2 (positive-part James-Stein: no
    jump at the threshold, and a barely supported slope, which would put the scatter at the optimum low, counts
    less). The intercept is floored at half the mean |r| of the nearer half of the points (a line steeper than its
    data near the optimum support would blow c up)."""
    x2, a = np.square(np.asarray(x, float)), np.abs(np.asarray(r, float))
    if len(a) < 4 or np.ptp(x2) <= 0:
        return 0.0
    design = np.stack([np.ones_like(x2), x2], axis=1)
    coef, *_ = np.linalg.lstsq(design, a, rcond=None)
    dof = len(a) - 2
    sigma2 = np.sum((a - design @ coef) ** 2) / dof
    se = math.sqrt(sigma2 / np.sum((x2 - x2.mean()) ** 2))
    if not coef[1] > SHAPE_T * se:
        return 0.0
    near = a[x2 <= np.median(x2)]
    floor = 0.5 * float(np.mean(near)) if len(near) else 0.0
    shrink = 1.0 - (SHAPE_T * se / coef[1]) ** 2
    return float(shrink * coef[1] / max(coef[0], floor, 1e-12))


def _clipped_rms(u: np.ndarray, dof: int) -> float:
    """Root mean square of `u` over `dof`, each entry first clipped at `CLIP` robust standard deviations."""
    limit = CLIP * MAD_TO_SD * np.median(np.abs(u))
    u = np.clip(u, -limit, limit) if limit > 0 else u
    return float(np.sqrt(np.sum(u**2) / max(dof, 1)))


def residual_scale(r: np.ndarray, x: np.ndarray, n_params: int) -> tuple[float, float]:
    """(s, c) of log residuals `r` at distances `x` (decades from N_opt) of a law with `n_params` free constants: the
    profile g(x) = 1 + c x^2 (`scatter_shape`) and the clipped root mean square s of r / g(x) (`scatter`)."""
    r, x = np.asarray(r, float), np.asarray(x, float)
    shape = scatter_shape(x, r)
    return _clipped_rms(r / (1 + shape * np.square(x)), len(r) - n_params), shape


def scale_ratio(error: np.ndarray, x: np.ndarray, s: float, shape: float) -> float:
    """rho from errors predicting what a fit left out, at distances `x`: the clipped root mean square of error /
    (s g(x)), at least 1 (`step_ratio`)."""
    u = np.asarray(error, float) / (s * (1 + shape * np.square(np.asarray(x, float))))
    return max(1.0, _clipped_rms(u, len(u)))


def scatter(law: ChinchillaLaw, points: FitPoints, n_params: int = 5, shape: float = 0.0) -> float:
    """The runs' scatter around the law at the optimum: the root mean square of the log residuals (divided by the
    profile g(x) = 1 + `shape` x^2, `scatter_shape`) over n - p degrees of freedom, each residual first clipped at
    `CLIP` robust standard deviations (1.4826 x the median |residual|), so that one diverged run cannot blow it up.
    Not the median |residual| itself: the Huber fit (delta 1e-3) is close to a least absolute deviations fit, which
    puts about p residuals at zero, and the median of the rest then fell to half the noise on the simulated sweeps
    (1-3% noise, 15 runs)."""
    r = log_residuals(law, points)
    if shape:
        r = r / (1 + shape * np.square(optimum_distance(law, points.N, points.D)))
    return _clipped_rms(r, len(r) - n_params)


def top_budget(budgets: np.ndarray) -> np.ndarray | None:
    """The points of the largest budget (a mask), for the check one budget up; None when the points have fewer than
    `STEP_MIN_BUDGETS` budgets or share none (no IsoFLOP profiles)."""
    labels = budget_labels(budgets)
    if labels.max() + 1 < STEP_MIN_BUDGETS or labels.max() + 1 == len(labels):
        return None
    return labels == labels.max()


def step_ratio(points: FitPoints) -> float:
    """rho: the law refitted on every fitted budget but the largest predicts the largest one's runs; the root mean
    square of their log errors over the refit's own scatter s g(x) (clipped like `scatter`), at least 1. 1 when the
    points have fewer than `STEP_MIN_BUDGETS` budgets, share none (no IsoFLOP profiles), or the refit is refused."""
    top = top_budget(points.budgets)
    if top is None:
        return 1.0
    try:
        below = points.take(~top)
        fit = fit_chinchilla(below)
    except UserError:
        return 1.0
    x, r = optimum_distance(fit.law, below.N, below.D), log_residuals(fit.law, below)
    s, shape = residual_scale(r, x, free_constants(fit.form))
    if not s > 0:
        return 1.0
    N, D = points.N[top], points.D[top]
    error = np.log(points.loss[top]) - np.log(np.asarray(fit.law.loss(N, D), float))
    return scale_ratio(error, optimum_distance(fit.law, N, D), s, shape)


def calibrate(law: ChinchillaLaw, points: FitPoints, form: str = "full", profile: bool = True,
              step: bool = True) -> IntervalCalibration:  # fmt: skip
    """The calibration of a law fitted (in `form`) to `points`. `profile`: the scatter's profile in the distance
    from N_opt (`scatter_shape`; False: one scatter for every point, as before); `step`: the check one budget up
    (`step_ratio`, which refits the law once)."""
    p = free_constants(form)
    factor = LAW_FACTOR * (FALLBACK_FACTOR if form != "full" else 1.0)
    r = log_residuals(law, points)
    s, shape = (
        residual_scale(r, optimum_distance(law, points.N, points.D), p)
        if profile
        else (_clipped_rms(r, len(r) - p), 0.0)
    )
    rho = step_ratio(points) if step else 1.0
    return IntervalCalibration(s, len(points), p, law_factor=factor, shape=shape, step_ratio=rho)


def spread_interval(center: np.ndarray, draws: np.ndarray, inflation: float, level: float) -> np.ndarray:
    """(2, ...) interval at `level` around `center`: the normal quantile times the robust spread of `draws` (samples
    along axis 0; 1.4826 x their median absolute deviation) times `inflation`. A robust spread, not percentiles: a
    pairs bootstrap of a few runs has heavy tails (resamples that miss the largest budget's runs swing the
    exponents), which made the percentile intervals 2-3 times too wide 10-100x beyond the largest budget."""
    spread = MAD_TO_SD * np.median(np.abs(draws - np.median(draws, axis=0)), axis=0)
    half = NormalDist().inv_cdf(0.5 + level / 2) * spread * inflation
    return np.stack([center - half, center + half])


def _resolve(source: Any, points: FitPoints | None) -> tuple[ChinchillaLaw, dict[str, np.ndarray], IntervalCalibration]:
    """The law, its bootstrap samples and its calibration from a law file, its path or a `BootstrapResult`."""
    if isinstance(source, str | Path):
        source = load_law(source)
    if isinstance(source, BootstrapResult):
        law, samples, form = source.fit.law, source.samples, source.fit.form
        if points is None:
            raise UserError("a bootstrap result needs the points it was fitted to, for the runs' scatter")
        return law, samples, calibrate(law, points, form)
    if not isinstance(source, LawFile):
        raise UserError(f"expected a law file, its path or a BootstrapResult, got {type(source).__name__}")
    law, samples = source.law, source.samples
    if not isinstance(law, ChinchillaLaw) or not samples or not all(k in samples for k in CONSTANTS):
        raise UserError("calibrated intervals need a Chinchilla law fitted with bootstrap samples (--bootstrap K)")
    return law, samples, law_calibration(source, points)


def stored_calibration(law_file: LawFile) -> IntervalCalibration | None:
    """The calibration a law file stores in `diagnostics.calibration`; None in files written before it existed."""
    raw = (law_file.diagnostics or {}).get("calibration")
    return None if raw is None else IntervalCalibration.from_dict(raw, "law file")


def law_calibration(law_file: LawFile, points: FitPoints | None = None) -> IntervalCalibration:
    """The law file's stored calibration; else one from `points`; else refused."""
    stored = stored_calibration(law_file)
    if stored is not None:
        return stored
    if points is None or not isinstance(law_file.law, ChinchillaLaw):
        raise UserError("this law file has no calibration (fitted before it existed): refit it, or give the points")
    return calibrate(law_file.law, points, law_file.fit_form["form"])


# Penalty terms a planned law may carry with its samples (scaling/precision_pricing.py `with_term`): quantised
# training's (additive form) and post-training quantisation's at the serving width.
PENALTY_TERMS = ("penalty", "ptq")


def sample_log_loss(samples: dict[str, np.ndarray], N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """(samples, points) log loss under each bootstrap sample of the law (with the penalty terms the samples carry:
    the additive precision form's, post-training quantisation's; scaling/precision_pricing.py `with_term`)."""
    E, A, B, alpha, beta = (np.asarray(samples[k], float)[:, None] for k in CONSTANTS)
    loss = E + A / N[None, :] ** alpha + B / D[None, :] ** beta
    for term in PENALTY_TERMS:
        if f"{term}_k" in samples:
            k, g_D, g_N = (np.asarray(samples[f"{term}_{c}"], float)[:, None] for c in ("k", "gamma_D", "gamma_N"))
            loss = loss + k * D[None, :] ** g_D / N[None, :] ** g_N
    return np.log(loss)


def prediction_interval(source: Any, N: ArrayLike, D: ArrayLike, points: FitPoints | None = None,
                        level: float = 0.95) -> PredictionInterval:  # fmt: skip
    """Calibrated intervals at `level` of the law's loss and of a new run's loss at (N, D).

    `source`: a law file (`LawFile` or its path, fitted with bootstrap samples) or a `BootstrapResult` with the
    `points` it was fitted to. See the module docstring for the method."""
    if not 0 < level < 1:
        raise UserError(f"level={level!r} must lie between 0 and 1 (0.95: a 95% interval)")
    law, samples, cal = _resolve(source, points)
    N, D = np.broadcast_arrays(np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(D, float)))
    center = np.log(np.asarray(law.loss(N, D), float)).reshape(N.shape)
    draws = sample_log_loss(samples, N.ravel(), D.ravel()).reshape(-1, *N.shape)
    mean, new = calibrated_bounds(center, draws, cal, level, optimum_distance(law, N, D))
    return PredictionInterval(N=N, D=D, predicted=np.exp(center), mean_low=np.exp(mean[0]), mean_high=np.exp(mean[1]),
                              low=np.exp(new[0]), high=np.exp(new[1]), level=level, calibration=cal)  # fmt: skip


def calibrated_bounds(center: np.ndarray, draws: np.ndarray, cal: IntervalCalibration, level: float = 0.95,
                      x: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(mean, new): the (2, ...) log-loss intervals of the law's loss and of a new run's, from the fit's log loss
    `center` and the bootstrap samples' `draws` (samples along axis 0), at distance `x` (decades) from the law's
    N_opt. See the module docstring."""
    mean = spread_interval(center, draws, cal.inflation, level)
    noise = cal.t(level) * cal.noise(x)
    step = cal.step_ratio * noise
    low = center - cal.prediction_factor * np.maximum(np.hypot(center - mean[0], noise), step)
    high = center + cal.prediction_factor * np.maximum(np.hypot(mean[1] - center, noise), step)
    return mean, np.stack([low, high])


def sample_n_opt(samples: dict[str, np.ndarray], C: np.ndarray) -> np.ndarray:
    """(samples, budgets) N_opt = G (C/6)^(beta/(alpha+beta)) under each bootstrap sample (Hoffmann et al. 2022,
    eq. 4)."""
    A, B, alpha, beta = (np.asarray(samples[k], float)[:, None] for k in ("A", "B", "alpha", "beta"))
    log_G = (np.log(alpha * A) - np.log(beta * B)) / (alpha + beta)
    return np.exp(log_G + beta / (alpha + beta) * np.log(C[None, :] / 6.0))


def constant_intervals(source: Any, C: ArrayLike = (), points: FitPoints | None = None,
                       level: float = 0.95) -> ConstantIntervals:  # fmt: skip
    """Calibrated intervals at `level` of the constants (E, A, B in log space) and of N_opt at budgets `C`."""
    law, samples, cal = _resolve(source, points)
    out = {}
    for k in CONSTANTS:
        log = k in LOG_CONSTANTS
        draws = np.log(np.maximum(samples[k], 1e-300)) if log else np.asarray(samples[k], float)
        center = math.log(getattr(law, k)) if log else getattr(law, k)
        lo, hi = spread_interval(np.float64(center), draws, cal.inflation, level)
        out[k] = (math.exp(lo), math.exp(hi)) if log else (float(lo), float(hi))
    C = np.atleast_1d(np.asarray(C, float))
    n_opt = np.asarray(law.optimal_allocation(C)[0], float).reshape(C.shape) if C.size else C
    span = spread_interval(np.log(n_opt), np.log(sample_n_opt(samples, C)), cal.inflation, level) if C.size else [C, C]
    return ConstantIntervals(out, C, n_opt, np.exp(span[0]), np.exp(span[1]), level)


def largest_budget_interval(law_file: LawFile, level: float = 0.95) -> PredictionInterval | None:
    """The calibrated interval of a new run at the law's compute-optimal (N, D) of the largest fitted budget; None
    when the law file has no bootstrap samples, no calibration or no fitted range (what `fit` prints)."""
    fitted = (law_file.diagnostics or {}).get("fitted_range") or {}
    usable = isinstance(law_file.law, ChinchillaLaw) and law_file.samples and law_file.shape is None
    if not usable or "calibration" not in (law_file.diagnostics or {}) or "C" not in fitted:
        return None
    N, D = law_file.law.optimal_allocation(float(fitted["C"][1]))
    return prediction_interval(law_file, N, D, level=level)
