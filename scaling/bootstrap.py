"""The bootstrap of the loss-law fits: percentile intervals from refits of resampled runs (Besiroglu et al. 2024,
arXiv 2404.10102, report bootstrap percentile intervals of Chinchilla's constants from 4000 resamples).

A resample draws the runs (a fit CSV's `run` groups, else its points) with replacement; the Chinchilla refit
starts from the fit of the original data (and `starts - 1` perturbations of it, when asked), all resamples
optimised together by scaling/projection.py's batched Newton method with per-resample weights (the grouped and
aspect fits use scaling/optimize.py's batched L-BFGS with `GroupWeights`). The resampling helpers here are
shared by the Chinchilla fit (`bootstrap_chinchilla`), the grouped fit (scaling/groups.py, resampling within
groups) and the aspect-ratio fit (scaling/aspect.py).

With many points, the Chinchilla bootstrap resamples a random subset of the groups and rescales the spread (the
m-out-of-n bootstrap, Bickel, Goetze and van Zwet 1997), so that its memory and time stay bounded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.chinchilla import (
    NATURAL_NAMES,
    ChinchillaForm,
    FitResult,
    coordinates_at_bounds,
    fit_chinchilla,
)
from smallest_loss.scaling.fitbase import DEFAULT_DELTA, GRAD_TOL, scaled_tol
from smallest_loss.scaling.kaplan import fit_kaplan
from smallest_loss.scaling.points import FitPoints, centring
from smallest_loss.scaling.projection import make_data, newton

BOOT_MAX_POINTS = 2048  # above this, resample a subset of groups (m-out-of-n, below)
BOOT_LARGE_STARTS = 4  # starts per resample in the m-out-of-n bootstrap
BOOT_MIN_GROUPS = 50


@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap samples of the law's constants and percentile intervals at `level`."""

    fit: FitResult  # the fit of the original points, whose form every resample refits
    samples: dict[str, np.ndarray]  # E, A, B, alpha, beta, n_exponent, d_exponent: one value per resample
    intervals: dict[str, tuple[float, float]]
    level: float
    n_boot: int
    n_converged: int  # resamples whose best start ended with max |projected gradient| <= GRAD_TOL
    seconds: float
    warnings: tuple[str, ...] = field(default_factory=tuple)
    n_at_bound: int = 0  # resamples whose optimum ran to a bound of the box
    n_groups_used: int = 0  # groups resampled (fewer than all: m-out-of-n, intervals rescaled)
    n_groups: int = 0


def _subset_groups(points: FitPoints, rng: np.random.Generator) -> np.ndarray:
    """Groups to resample: all, or random groups holding about `BOOT_MAX_POINTS` points (at least
    `BOOT_MIN_GROUPS` groups) so that a resample's refit costs the same at any number of points."""
    index, n_groups = points.group_index
    if len(points) <= BOOT_MAX_POINTS:
        return np.arange(n_groups)
    order = rng.permutation(n_groups)
    filled = np.cumsum(np.bincount(index, minlength=n_groups)[order])
    count = max(int(np.searchsorted(filled, BOOT_MAX_POINTS, side="right")), min(n_groups, BOOT_MIN_GROUPS))
    return np.sort(order[:count])


def resample_counts(n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, G) counts: how often each group was drawn when drawing G groups of G with replacement."""
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups), np.float32)
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def resample_within_groups(points: FitPoints, index: np.ndarray, n_boot: int,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(n_boot, U) draws of the resampling units (runs, else points) and each point's unit. A unit is
    drawn among the units that lie in the same groups (its stratum), as many times as that stratum has units."""
    unit, n_units = points.group_index
    stratum_key = np.zeros(n_units, np.int64)
    np.bitwise_or.at(stratum_key, unit, np.left_shift(1, index).astype(np.int64))
    counts = np.zeros((n_boot, n_units), np.float32)
    for key in np.unique(stratum_key):
        members = np.flatnonzero(stratum_key == key)
        draws = members[rng.integers(0, len(members), size=(n_boot, len(members)))]
        np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts, unit


def _bootstrap_starts(u_best: np.ndarray, form: ChinchillaForm, starts: int, rng: np.random.Generator) -> np.ndarray:
    """The best fit plus `starts - 1` perturbations of it, in the form's coordinates, inside its box."""
    scale = np.array([0.3, 0.3, 0.1, 0.1, 0.1]) * form.M.any(axis=0)  # log terms, e, exponents; 0 when fixed
    noise = rng.normal(size=(starts - 1, len(u_best))) * scale
    return np.clip(np.vstack([u_best, u_best + noise]), form.box[0], form.box[1])


def percentiles(samples: dict[str, np.ndarray], level: float) -> dict[str, tuple[float, float]]:
    """Percentile interval at `level` of each sample (numpy's linear interpolation)."""
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in samples.items()}


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval at `level` by nearest rank, so that infinite values (a multiplier the reference
    never reaches) stay infinite instead of turning into NaN."""
    ordered = np.sort(np.asarray(values, np.float64))
    ranks = [math.ceil(q * len(ordered)) - 1 for q in ((1 - level) / 2, (1 + level) / 2)]
    lo, hi = np.clip(ranks, 0, len(ordered) - 1)
    return float(ordered[lo]), float(ordered[hi])


def _samples(form: ChinchillaForm, u: np.ndarray, mu: tuple[float, float]) -> dict[str, np.ndarray]:
    z = form.z0 + u @ form.M.T
    alpha, beta = z[:, 3], z[:, 4]
    return {
        "E": np.exp(z[:, 2]),
        "A": np.exp(z[:, 0] + alpha * mu[0]),
        "B": np.exp(z[:, 1] + beta * mu[1]),
        "alpha": alpha,
        "beta": beta,
        "n_exponent": beta / (alpha + beta),
        "d_exponent": alpha / (alpha + beta),
    }


def bootstrap_chinchilla(
    points: FitPoints,
    n_boot: int = 1000,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    starts: int = 1,
    level: float = 0.95,
    grid: dict[str, Any] | None = None,
    fit: FitResult | None = None,
) -> BootstrapResult:
    """Refit the fit's form on `n_boot` resamples of the runs (groups), all resamples optimised at once.

    Each resample starts from the fit of the original data plus `starts - 1` random perturbations of it
    and keeps its best, within the same bounds (on Epoch's 240 points, 8 starts gave the same intervals to
    4 digits as 1, at 8 times the work). Intervals are percentile intervals at `level` (Besiroglu et al.
    2024 report bootstrap percentile intervals from 4000 resamples). With more than `BOOT_MAX_POINTS`
    points, resamples draw q of a random subset of q groups and the deviations from that subset's fit are
    scaled by sqrt(q/G) (the m-out-of-n bootstrap, Bickel, Goetze and van Zwet 1997), so memory and time
    stay bounded; each such resample then starts from at most `BOOT_LARGE_STARTS` points.
    """
    if n_boot < 2 or starts < 1 or not 0 < level < 1:
        raise UserError(f"need n_boot >= 2, starts >= 1 and 0 < level < 1; got {n_boot}, {starts}, {level}")
    begin = time.perf_counter()
    fit = fit if fit is not None else fit_chinchilla(points, delta, grid)
    if fit.chinchilla_form is None or fit.free is None:
        raise UserError("the bootstrap refits a Chinchilla fit; got a fit of another form")
    form, mu, rng = fit.chinchilla_form, centring(points), np.random.default_rng(seed)
    index, n_groups = points.group_index
    chosen = _subset_groups(points, rng)
    keep = np.isin(index, chosen)
    sub = points if keep.all() else FitPoints(points.N[keep], points.D[keep], points.loss[keep], index[keep])
    data = make_data(sub, mu, fit.delta, form.M, form.z0, form.box)
    gtol = scaled_tol(GRAD_TOL, len(sub))
    u_sub = fit.free if keep.all() else newton(fit.free[None], np.ones(len(sub)), data, gtol)["x"][0]
    if not keep.all():  # thousands of groups pin each resample's optimum near the subset's: fewer starts do
        starts = min(starts, BOOT_LARGE_STARTS)
    counts = resample_counts(len(chosen), n_boot, rng)[:, np.searchsorted(chosen, index[keep])]
    res = newton(np.tile(_bootstrap_starts(u_sub, form, starts, rng), (n_boot, 1)),
                 np.repeat(counts, starts, axis=0), data, gtol)  # fmt: skip
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf).reshape(n_boot, starts)
    pick = np.arange(n_boot) * starts + np.argmin(f, axis=1)
    u = res["x"][pick]
    at_bound = coordinates_at_bounds(form, u)
    shrink = math.sqrt(len(chosen) / n_groups)
    samples = _samples(form, np.clip(fit.free + shrink * (u - u_sub), form.box[0], form.box[1]), mu)
    n_converged = int(np.sum(res["converged"][pick]))
    warn = _bootstrap_warnings(form, n_boot, n_converged, at_bound, len(chosen), n_groups, len(sub))
    return BootstrapResult(
        fit=fit, samples=samples, intervals=percentiles(samples, level), level=level, n_boot=n_boot,
        n_converged=n_converged, seconds=time.perf_counter() - begin, warnings=tuple(warn),
        n_at_bound=int(np.sum(at_bound.any(axis=1))), n_groups_used=len(chosen), n_groups=n_groups,
    )  # fmt: skip


def _bootstrap_warnings(form: ChinchillaForm, n_boot: int, n_converged: int, at_bound: np.ndarray, used: int,
                        n_groups: int, n_points: int) -> list[str]:  # fmt: skip
    warn = []
    if n_converged < 0.9 * n_boot:
        warn.append(f"only {n_converged} of {n_boot} bootstrap refits converged; intervals may be too wide")
    hit = at_bound.any(axis=1).sum()
    if hit > 0.05 * n_boot:
        names = ", ".join(name for name, column in zip(NATURAL_NAMES, at_bound.T, strict=True) if column.any())
        warn.append(
            f"{hit} of {n_boot} bootstrap refits ran to a bound ({names}): the points do not pin those "
            "constants down, and their intervals stop at the bound"
        )
    if used < n_groups:
        warn.append(
            f"bootstrap resampled {used} of {n_groups} groups ({n_points} points) and scaled the spread "
            f"by sqrt({used}/{n_groups}) (m-out-of-n bootstrap)"
        )
    return warn


def fit_points(points: FitPoints, form: str, n_boot: int, delta: float = DEFAULT_DELTA,
               allocation_exponent: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit `form` to the points; for Chinchilla with n_boot > 0, add bootstrap intervals and samples.

    `allocation_exponent` (Approach 2's N_opt ~ C^a) ties the exponents if the full law is not identified.
    """
    if form == "kaplan":
        fit = fit_kaplan(points, delta)
        return dict(law=fit.law, fit=fit, intervals=None, samples=None, diagnostics=fit.diagnostics)
    fit = fit_chinchilla(points, delta, allocation_exponent=allocation_exponent)
    if n_boot <= 0:
        return dict(law=fit.law, fit=fit, intervals=None, samples=None, diagnostics=fit.diagnostics)
    boot = bootstrap_chinchilla(points, n_boot=n_boot, delta=delta, fit=fit)
    diagnostics = dict(fit.diagnostics, bootstrap=dict(
        n_boot=boot.n_boot, n_converged=boot.n_converged, n_at_bound=boot.n_at_bound, level=boot.level,
        n_groups=boot.n_groups, n_groups_used=boot.n_groups_used, seconds=boot.seconds))  # fmt: skip
    diagnostics["warnings"] = list(fit.warnings) + list(boot.warnings)
    return dict(law=fit.law, fit=fit, intervals=boot.intervals, samples=boot.samples, diagnostics=diagnostics)
