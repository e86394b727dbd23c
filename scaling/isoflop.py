"""Chinchilla Approaches 1 and 2: compute-optimal allocation read directly off training runs.

Approach 1 (Hoffmann et al. 2022, sec. 3.1): for each FLOP count C, the run with the lowest loss at C
(the lower envelope of all learning curves) gives N_opt(C); fit N_opt ~ C^a and D_opt ~ C^b.
Approach 2 (Hoffmann et al. 2022, sec. 3.2): at each fixed budget C (an IsoFLOP profile), fit a
parabola to loss against log N; its minimum is N_opt(C), and D_opt = C / (6 N_opt); fit power laws.
Chinchilla found a = 0.50 and 0.49 (b = 0.50, 0.51) by these approaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from smallest_loss.configs.errors import UserError

if TYPE_CHECKING:
    from smallest_loss.scaling.collect import RunRecord

MIN_PROFILE_POINTS = 3  # a parabola needs three points


@dataclass(frozen=True)
class PowerLawFit:
    """y = coefficient * x^exponent, fitted by least squares in log-log space; r2 in log space."""

    exponent: float
    coefficient: float
    r2: float
    n: int

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.coefficient * np.asarray(x, dtype=np.float64) ** self.exponent


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLawFit:
    """Least-squares line through (log x, log y): log y = exponent * log x + log coefficient."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(np.unique(x)) < 2:
        raise UserError(f"need at least 2 distinct budgets to fit a power law, got {len(np.unique(x))}")
    if np.any(x <= 0) or np.any(y <= 0):
        raise UserError("power-law fit needs positive values")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    total = np.sum((ly - ly.mean()) ** 2)
    r2 = 1.0 - np.sum(resid**2) / total if total > 0 else 1.0
    return PowerLawFit(exponent=float(slope), coefficient=float(np.exp(intercept)), r2=float(r2), n=len(x))


# ---------------------------------------------------------------------------------------------------
# Approach 2: IsoFLOP profiles.


@dataclass(frozen=True)
class IsoFlopProfile:
    """One budget's parabola loss = c2 x^2 + c1 x + c0 in x = ln N, and its minimum."""

    C: float
    N_opt: float
    D_opt: float
    loss_min: float
    coeffs: tuple[float, float, float]  # (c2, c1, c0)
    n_points: int
    extrapolated: bool  # the minimum lies outside the sampled N range


@dataclass(frozen=True)
class IsoFlopResult:
    """Approach 2: per-budget minima and the fits N_opt = k_N C^a, D_opt = k_D C^b."""

    profiles: tuple[IsoFlopProfile, ...]
    n_fit: PowerLawFit
    d_fit: PowerLawFit
    warnings: tuple[str, ...] = ()

    @property
    def a(self) -> float:
        """The exponent a of N_opt ~ C^a."""
        return self.n_fit.exponent

    @property
    def b(self) -> float:
        """The exponent b of D_opt ~ C^b."""
        return self.d_fit.exponent


def group_budgets(C: np.ndarray, rtol: float = 1e-3) -> np.ndarray:
    """Label points by budget: sorted budgets within a relative `rtol` of the previous share a label."""
    C = np.asarray(C, dtype=np.float64)
    order = np.argsort(C)
    jumps = np.r_[False, C[order][1:] > C[order][:-1] * (1 + rtol)]
    labels = np.empty(len(C), dtype=np.int64)
    labels[order] = np.cumsum(jumps)
    return labels


def fit_profile(C: float, N: np.ndarray, loss: np.ndarray) -> IsoFlopProfile:
    """Parabola in ln N through one budget's losses; its vertex is N_opt (Hoffmann et al. 2022, sec. 3.2)."""
    N, loss = np.asarray(N, dtype=np.float64), np.asarray(loss, dtype=np.float64)
    if len(np.unique(N)) < MIN_PROFILE_POINTS:
        raise UserError(
            f"budget C={C:.3g} has {len(np.unique(N))} distinct model sizes; "
            f"an IsoFLOP parabola needs at least {MIN_PROFILE_POINTS}: add runs at this budget"
        )
    x = np.log(N)
    c2, c1, c0 = np.polyfit(x, loss, 2)
    if not c2 > 0:
        raise UserError(
            f"budget C={C:.3g}: loss against log N opens downward (no minimum); "
            "sample model sizes on both sides of the optimum"
        )
    x_opt = -c1 / (2 * c2)
    N_opt = float(np.exp(x_opt))
    return IsoFlopProfile(
        C=float(C),
        N_opt=N_opt,
        D_opt=float(C / (6 * N_opt)),
        loss_min=float(c0 - c1**2 / (4 * c2)),
        coeffs=(float(c2), float(c1), float(c0)),
        n_points=len(N),
        extrapolated=bool(x_opt < x.min() or x_opt > x.max()),
    )


def approach2(C: np.ndarray, N: np.ndarray, loss: np.ndarray, rtol: float = 1e-3) -> IsoFlopResult:
    """Approach 2 from runs labelled with their budget C (FLOPs), model size N and final loss."""
    C, N, loss = (np.asarray(v, dtype=np.float64).ravel() for v in (C, N, loss))
    if not len(C) == len(N) == len(loss):
        raise UserError(f"C, N and loss must have the same length, got {len(C)}, {len(N)}, {len(loss)}")
    for name, v in (("C", C), ("N", N), ("loss", loss)):
        if len(v) == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise UserError(f"{name} must be positive and finite for every run")
    labels = group_budgets(C, rtol)
    profiles = tuple(
        fit_profile(float(np.exp(np.mean(np.log(C[labels == g])))), N[labels == g], loss[labels == g])
        for g in np.unique(labels)
    )
    if len(profiles) < 2:
        raise UserError(f"need at least 2 budgets for Approach 2, got {len(profiles)}; add another budget")
    budgets = np.array([p.C for p in profiles])
    warnings = tuple(
        f"budget C={p.C:.3g}: the minimum N={p.N_opt:.3g} lies outside the sampled model sizes"
        for p in profiles
        if p.extrapolated
    )
    return IsoFlopResult(
        profiles=profiles,
        n_fit=fit_power_law(budgets, np.array([p.N_opt for p in profiles])),
        d_fit=fit_power_law(budgets, np.array([p.D_opt for p in profiles])),
        warnings=warnings,
    )


def isoflop_allocation(records: Sequence[RunRecord]) -> dict[str, Any] | None:
    """Approach 2 on a sweep's runs when at least two budgets have three or more runs; None otherwise."""
    budgets = np.array([r.budget for r in records])
    if len(np.unique(budgets)) < 2:
        return None
    try:
        result = approach2(budgets, np.array([r.N for r in records], float), np.array([r.loss for r in records]))
    except UserError as err:
        return dict(error=str(err))
    return dict(
        a=result.a,
        b=result.b,
        warnings=list(result.warnings),
        profiles=[
            dict(
                C=p.C,
                N_opt=p.N_opt,
                D_opt=p.D_opt,
                loss_min=p.loss_min,
                coeffs=list(p.coeffs),
                extrapolated=p.extrapolated,
            )
            for p in result.profiles
        ],
    )


# ---------------------------------------------------------------------------------------------------
# Approach 1: lower envelope of learning curves.


@dataclass(frozen=True)
class LearningCurve:
    """One run: model size N and its loss against cumulative training FLOPs (optionally tokens)."""

    N: float
    flops: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        flops = np.asarray(self.flops, dtype=np.float64).ravel()
        loss = np.asarray(self.loss, dtype=np.float64).ravel()
        if not (np.isfinite(self.N) and self.N > 0):
            raise UserError(f"learning curve N={self.N!r} must be positive")
        if len(flops) != len(loss) or len(flops) < 2:
            raise UserError(f"learning curve of N={self.N:.3g} needs >= 2 (flops, loss) pairs of equal length")
        if not (np.all(np.isfinite(flops)) and np.all(flops > 0) and np.all(np.diff(flops) > 0)):
            raise UserError(f"learning curve of N={self.N:.3g}: flops must be positive and increasing")
        if not (np.all(np.isfinite(loss)) and np.all(loss > 0)):
            raise UserError(f"learning curve of N={self.N:.3g}: losses must be positive and finite")
        object.__setattr__(self, "flops", flops)
        object.__setattr__(self, "loss", loss)
        if self.tokens is not None:
            tokens = np.asarray(self.tokens, dtype=np.float64).ravel()
            if len(tokens) != len(flops) or not (np.all(np.isfinite(tokens)) and np.all(tokens > 0)):
                raise UserError(f"learning curve of N={self.N:.3g}: tokens must be positive, one per point")
            object.__setattr__(self, "tokens", tokens)


@dataclass(frozen=True)
class EnvelopeResult:
    """Approach 1: at each FLOP count, the best run's N and D, and the fitted power laws."""

    C: np.ndarray
    N_opt: np.ndarray
    D_opt: np.ndarray
    loss: np.ndarray
    n_fit: PowerLawFit
    d_fit: PowerLawFit

    @property
    def a(self) -> float:
        """The exponent a of N_opt ~ C^a."""
        return self.n_fit.exponent

    @property
    def b(self) -> float:
        """The exponent b of D_opt ~ C^b."""
        return self.d_fit.exponent


def _interp_log(curve: LearningCurve, C: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`values` of a run at FLOP counts C (linear in log C); NaN outside the run's range."""
    lc, lf = np.log(C), np.log(curve.flops)
    out = np.interp(lc, lf, values)
    return np.where((lc >= lf[0]) & (lc <= lf[-1]), out, np.nan)


def approach1(curves: Sequence[LearningCurve], n_budgets: int = 50, interior_only: bool = True) -> EnvelopeResult:
    """Approach 1 (Hoffmann et al. 2022, sec. 3.1): lower envelope over runs at log-spaced FLOP counts.

    With `interior_only`, FLOP counts where the envelope is the smallest or the largest model are
    dropped: there the winner is set by the ladder of sizes tried, not by the allocation (at the low
    end only small runs have started, at the high end only large runs are still going).
    """
    if len(curves) < 2:
        raise UserError(f"Approach 1 needs learning curves of at least 2 model sizes, got {len(curves)}")
    lo = min(c.flops[0] for c in curves)
    hi = max(c.flops[-1] for c in curves)
    C = np.geomspace(lo, hi, n_budgets)
    losses = np.stack([_interp_log(c, C, c.loss) for c in curves])  # (runs, budgets)
    covered = np.any(np.isfinite(losses), axis=0)
    best = np.argmin(np.where(np.isfinite(losses), losses, np.inf), axis=0)
    Ns = np.array([c.N for c in curves])
    N_opt = Ns[best]
    D_opt = np.array([
        np.exp(_interp_log(curves[i], C[j : j + 1], np.log(curves[i].tokens))[0]) if curves[i].tokens is not None
        else C[j] / (6 * N_opt[j])
        for j, i in enumerate(best)
    ])  # fmt: skip
    keep = covered
    if interior_only:
        keep = keep & (N_opt > Ns.min()) & (N_opt < Ns.max())
    if len(np.unique(N_opt[keep])) < 2:
        raise UserError("the lower envelope is one run throughout; add runs of other model sizes")
    return EnvelopeResult(
        C=C[keep],
        N_opt=N_opt[keep],
        D_opt=D_opt[keep],
        loss=losses[best, np.arange(len(C))][keep],
        n_fit=fit_power_law(C[keep], N_opt[keep]),
        d_fit=fit_power_law(C[keep], D_opt[keep]),
    )
