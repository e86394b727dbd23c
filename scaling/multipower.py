"""The multi-power law of loss curves under any learning-rate schedule.

Luo et al. (2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate Schedules", arXiv 2503.12811,
their law for L(t)), after t updates with rates eta_1..eta_t:

    L(t)  = L0 + A * (S1(t) + S_W)^(-alpha) - LD(t)
    LD(t) = B * sum_{k=1..t} (eta_{k-1} - eta_k) * G(eta_k^(-gamma) * S_k(t)),   G(x) = 1 - (C*x + 1)^(-beta)
    S1(t) = sum_{tau=1..t} eta_tau (after warmup),  S_k(t) = sum_{tau=k..t} eta_tau,  S_W = the warmup's area

S1 + S_W is the area of every update so far, warmup included (Tissue et al.'s S1); eta_0 is the peak rate,
where warmup ends. Each drop of the rate lowers the loss by an amount that grows with the area trained since
the drop, as a power law saturating at B times the drop. Fitted to a few schedules it predicts others; the
paper finds it more accurate than Tissue et al.'s law (its "momentum law") after sharp decays.

Where we depart from the paper: (1) a step where the rate rises adds no drop (warmup; the paper's sum starts
after warmup, where its schedules fall). (2) LD is a double sum over the steps, evaluated on merged drops
(`segments`): consecutive falling steps form segments, cut at every step where LD is wanted, at blocks of
ceil(T / max_segments) steps and at blocks of LOG_ETA_STEP in log rate; a segment counts as one drop (its summed
drops) at its drop-weighted mean area and mean log rate. That is exact where a segment is one step (step-wise
schedules; any schedule evaluated at every step); otherwise the error of a segment is second order in its width
(a midpoint rule: G is smooth, and near linear in the area while C*x is small), largest just after it. With
30-step segments, LD at 11 steps of 300-step schedules is within 9e-4 (cosine) and 1.3e-4 (1-sqrt cool-down)
of its largest value by the exact double sum (tests/scaling/test_multipower.py). (3) In fits, LD is computed at
the first step of every window (and the last step) and is linear between, and the law's log is averaged over
at most SAMPLES evenly spaced steps of each window (the losses over all of its steps): on 3k- and 30k-step
cosine and cool-down curves in 100 windows LD is then within 3e-4 of the loss at every sampled step, and a fit
of 7 curves of up to 30k steps takes about 2 s on one CPU core (Tissue's fit, at every step: 11 s).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from smallest_loss.configs.lazy import LazyModule, optimize

sparse = LazyModule("scipy.sparse")

PARAMS = ("L0", "A", "alpha", "B", "C", "beta", "gamma")
MAX_SEGMENTS = 256  # segments of a schedule's drops, besides the cuts at evaluated steps
GRID = 1024  # steps at which `MultiPowerLaw.curve` evaluates LD (all steps of shorter schedules; linear between)
SAMPLES = 16  # steps of a window at which a fit evaluates the law
SCREEN_NFEV, POLISH_NFEV = 40, 400  # evaluations of each start, and of the best start's polish
FIT_SEGMENTS = 64  # in fits, besides the cuts at every window (which set the resolution near evaluated steps)
LOG_ETA_STEP = 0.05  # a segment's rates stay within one block of this width in log rate (eta^-gamma is not linear)
# Bounds of a fit's theta = (L0, log A, alpha, log B, log C, beta, gamma); L0's upper bound is the largest loss
LOWER = (0.0, -30.0, 1e-3, -30.0, -30.0, 1e-3, 0.0)
UPPER = (float("inf"), 30.0, 3.0, 30.0, 30.0, 5.0, 2.0)


def drops(lr: np.ndarray) -> np.ndarray:
    """eta_{k-1} - eta_k of every update k = 1..T (element k-1), 0 where the rate rises or at the first step."""
    lr = np.asarray(lr, dtype=np.float64)
    return np.maximum(np.concatenate([[0.0], lr[:-1] - lr[1:]]), 0.0)


def window_index(n: int, bins: int) -> np.ndarray:
    """The window of each of n consecutive steps: at most `bins` windows of near-equal length."""
    return np.arange(n) * min(bins, n) // n


@dataclass(frozen=True)
class Pairs:
    """Every (evaluated update count t, segment of drops at or before t) pair of one or more schedules: the
    parameter-free half of LD. Per pair: `at` the evaluated t, `log_area` log S_k(t) at the segment's mean
    position, `log_eta` the segment's mean log rate, `drop` its summed drops."""

    at: np.ndarray
    log_area: np.ndarray
    log_eta: np.ndarray
    drop: np.ndarray
    evaluated: int  # how many t were evaluated

    @staticmethod
    def join(parts: Sequence[Pairs]) -> Pairs:
        """Several schedules' pairs as one, their evaluated t numbered on."""
        offsets = np.cumsum([0, *(p.evaluated for p in parts)])
        return Pairs(
            np.concatenate([p.at + o for p, o in zip(parts, offsets[:-1], strict=True)]),
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("log_area", "log_eta", "drop")),
            evaluated=int(offsets[-1]),
        )


def segments(lr: np.ndarray, cuts: np.ndarray, max_segments: int = MAX_SEGMENTS) -> tuple[np.ndarray, ...]:
    """The schedule's drops merged into segments of consecutive falling updates; per segment its last update,
    summed drop, drop-weighted mean area before it (P(k-1), P(j) the area of updates 1..j) and mean log rate.
    A segment never spans a cut (an update count t where LD is wanted: updates k <= t and k > t fall apart), a
    step without a drop, a boundary of the blocks of ceil(T / max_segments) updates, or one of the blocks of
    LOG_ETA_STEP in log rate."""
    lr = np.asarray(lr, dtype=np.float64)
    d, P = drops(lr), np.concatenate([[0.0], np.cumsum(lr)])
    k = np.flatnonzero(d > 0) + 1
    if not k.size:
        return tuple(np.zeros(0) for _ in range(4))
    width = -(-len(lr) // max_segments)
    below = np.searchsorted(np.sort(cuts), k, side="left")  # cuts t < k
    log_eta = np.log(np.maximum(lr[k - 1], 1e-30))  # a rate of 0: x = 0 at once, G = 1 after any later update
    new = np.ones(len(k), bool)
    new[1:] = (
        (np.diff(k) > 1)
        | (np.diff(below) > 0)
        | (np.diff((k - 1) // width) > 0)
        | (np.diff(np.floor(log_eta / LOG_ETA_STEP)) != 0)
    )
    seg, w = np.cumsum(new) - 1, d[k - 1]
    total = np.bincount(seg, w)
    last = k[np.append(np.flatnonzero(new)[1:] - 1, len(k) - 1)]
    return last, total, np.bincount(seg, w * P[k - 1]) / total, np.bincount(seg, w * log_eta) / total


def pairs(lr: np.ndarray, t: np.ndarray, max_segments: int = MAX_SEGMENTS) -> Pairs:
    """The pairs of LD at update counts `t` (sorted, distinct) of one schedule."""
    t = np.asarray(t, dtype=np.int64)
    last, drop, offset, log_eta = segments(lr, t, max_segments)
    P = np.concatenate([[0.0], np.cumsum(np.asarray(lr, dtype=np.float64))])
    n = np.searchsorted(last, t, side="right")  # segments that end at or before each t
    at = np.repeat(np.arange(len(t)), n)
    seg = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    with np.errstate(divide="ignore"):  # S = 0 only after a last update at rate 0: x = 0, G = 0, as in the limit
        return Pairs(at, np.log(P[t][at] - offset[seg]), log_eta[seg], drop[seg], len(t))


def reduction(
    log_B: float, log_C: float, beta: float, gamma: float, p: Pairs, jac: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """LD at each evaluated t, and (with `jac`) its derivatives in log B, log C, beta and gamma (columns)."""
    u = np.log1p(np.exp(log_C - gamma * p.log_eta + p.log_area))  # log(1 + C x)
    q = np.exp(-beta * u)  # 1 - G
    B = np.exp(log_B)
    LD = B * np.bincount(p.at, p.drop * (1 - q), minlength=p.evaluated)
    if not jac:
        return LD, None
    slope = p.drop * beta * q * -np.expm1(-u)  # drop * dG / dlog(C x)
    cols = [LD, *(B * np.bincount(p.at, v, minlength=p.evaluated) for v in (slope, p.drop * q * u, -slope * p.log_eta))]
    return LD, np.column_stack(cols)


@dataclass(frozen=True)
class MultiPowerLaw:
    """The multi-power law of one model shape; `eval_gap` = mean log(final eval / final law), as for Tissue's."""

    N: int
    L0: float
    A: float
    alpha: float
    B: float
    C: float
    beta: float
    gamma: float
    eval_gap: float
    form: ClassVar[str] = "multipower"
    params: ClassVar[tuple[str, ...]] = PARAMS

    def decay(self, lr: np.ndarray, t: np.ndarray, max_segments: int = MAX_SEGMENTS) -> np.ndarray:
        """LD after t updates of the schedule, for each t of `t` (sorted, distinct)."""
        p = pairs(lr, t, max_segments)
        return reduction(np.log(self.B), np.log(self.C), self.beta, self.gamma, p)[0]

    def curve(self, lr: np.ndarray) -> np.ndarray:
        """The train loss logged at each step (before its update; step 1, with no update yet, is inf). LD is
        evaluated at GRID evenly spread steps (every step of shorter schedules) and is linear between."""
        lr = np.asarray(lr, dtype=np.float64)
        t = np.arange(len(lr))
        grid = np.unique(np.linspace(0, len(lr) - 1, min(len(lr), GRID)).round().astype(np.int64))
        S = np.concatenate([[0.0], np.cumsum(lr)[:-1]])
        with np.errstate(divide="ignore"):
            return self.L0 + self.A * S ** (-self.alpha) - np.interp(t, grid, self.decay(lr, grid))

    def final_eval(self, lr: np.ndarray) -> float:
        """The evaluation loss after the last update of the schedule (LD at that one step: 4x finer segments)."""
        lr = np.asarray(lr, dtype=np.float64)
        LD = self.decay(lr, np.array([len(lr)]), 4 * MAX_SEGMENTS)[0]
        return float((self.L0 + self.A * np.sum(lr) ** (-self.alpha) - LD) * np.exp(self.eval_gap))

    def to_dict(self) -> dict[str, float | str]:
        """The law's constants and its form, as a curve-law file's shape row holds them."""
        return dict(dataclasses.asdict(self), form=self.form)

    def theta(self) -> np.ndarray:
        """The law in a fit's parameters (LOWER, UPPER)."""
        return np.array([self.L0, np.log(self.A), self.alpha, np.log(self.B), np.log(self.C), self.beta, self.gamma])


class CurveLike(Protocol):
    """What a fit reads of a run's curve (scaling.curve_law.Curve)."""

    N: int
    lr: np.ndarray
    loss: np.ndarray
    first: int
    fit_evals: bool  # fitted on its evaluations (`fitted_evals`), not on every step's train loss

    def fitted_evals(self) -> tuple[np.ndarray, np.ndarray]:
        """The evaluations in the fitted range: update counts and their losses."""
        ...


def _interp_matrix(x: np.ndarray, xp: np.ndarray) -> sparse.csr_matrix:
    """The sparse matrix of linear interpolation from values at sorted `xp` to points `x` within them."""
    if len(xp) == 1:
        return sparse.csr_matrix(np.ones((len(x), 1)))
    e = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
    w1 = (x - xp[e]) / (xp[e + 1] - xp[e])
    rows = np.arange(len(x))
    return sparse.csr_matrix((np.r_[1 - w1, w1], (np.r_[rows, rows], np.r_[e, e + 1])), shape=(len(x), len(xp)))


@dataclass(frozen=True)
class Design:
    """The parameter-free arrays of one fit: per sampled step its position (0-based: it sees that many updates),
    log area (S1 + S_W) and the interpolation of LD from the evaluated steps; per window the mean log loss, the
    averaging over its samples and a weight."""

    sample: np.ndarray
    log_S: np.ndarray
    interp: sparse.csr_matrix
    pairs: Pairs
    average: sparse.csr_matrix
    logL: np.ndarray
    weight: np.ndarray


def _windows(t: np.ndarray, losses: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    """Fitted points (update counts t, sorted, and their losses) in at most `bins` windows of consecutive points:
    the mean log loss of each window, the law's sample points (at most SAMPLES evenly spread points of each), the
    averaging of the samples into windows, and the counts where LD is evaluated (each window's first, and the last).
    Up to `bins` points each is a window of its own."""
    window = window_index(len(t), bins)
    logL = np.bincount(window, np.log(losses)) / np.bincount(window)
    first = np.searchsorted(window, np.arange(len(logL)))
    last = np.append(first[1:] - 1, len(t) - 1)
    picks = [
        np.unique(np.linspace(a, b, min(b - a + 1, SAMPLES)).round().astype(np.int64))
        for a, b in zip(first, last, strict=True)
    ]
    index, counts = np.concatenate(picks), np.array([len(s) for s in picks])
    average = sparse.csr_matrix(
        (np.repeat(1 / counts, counts), (np.repeat(np.arange(len(counts)), counts), np.arange(len(index))))
    )
    return t[index], logL, average, np.unique(np.append(t[first], t[-1]))


def _curve_design(c: CurveLike, bins: int, max_segments: int) -> tuple:
    """One curve's part of `Design`. The train loss logged at 0-based step i sees t = i updates, averaged over
    windows; a curve fitted on its evaluations (`fit_evals`: periodic evaluations, or a curve table's logged
    points) likewise, each of up to `bins` evaluations a window of its own (a long curve logged at every step
    would otherwise evaluate LD at every point: pairs of points and drops grow as the square of its length)."""
    if c.fit_evals:
        t, losses = c.fitted_evals()
    else:
        t = np.arange(c.first - 1, len(c.lr))
        losses = c.loss[t]
    sample, logL, average, evaluated = _windows(t, losses, bins)
    P = np.concatenate([[0.0], np.cumsum(np.asarray(c.lr, dtype=np.float64))])
    return (
        sample,
        np.log(P[sample]),
        _interp_matrix(sample, evaluated),
        pairs(c.lr, evaluated, max_segments),
        average,
        logL,
        np.full(len(logL), 1 / np.sqrt(len(logL))),
    )


def design(curves: Sequence[CurveLike], bins: int, max_segments: int = FIT_SEGMENTS) -> Design:
    """The curves' designs joined: every run counts alike (weights 1/sqrt(windows))."""
    parts = list(zip(*(_curve_design(c, bins, max_segments) for c in curves), strict=True))
    return Design(
        np.concatenate(parts[0]),
        np.concatenate(parts[1]),
        sparse.block_diag(parts[2], format="csr"),
        Pairs.join(parts[3]),
        sparse.block_diag(parts[4], format="csr"),
        np.concatenate(parts[5]),
        np.concatenate(parts[6]),
    )


def _model(theta: np.ndarray, d: Design, jac: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Weighted window means of log(law) - log(loss), and (with `jac`) their Jacobian in theta = (L0, log A,
    alpha, log B, log C, beta, gamma)."""
    L0, log_A, alpha = theta[:3]
    power = np.exp(log_A - alpha * d.log_S)
    LD, dLD = reduction(*theta[3:], d.pairs, jac)
    pred = np.maximum(L0 + power - d.interp @ LD, 1e-9)
    r = d.weight * (d.average @ np.log(pred) - d.logL)
    if not jac:
        return r, None
    dpred = np.column_stack([np.ones_like(power), power, -d.log_S * power, -(d.interp @ dLD)])
    return r, d.weight[:, None] * (d.average @ (dpred / pred[:, None]))


def _starts(d: Design, peak: float) -> list[np.ndarray]:
    """Starting points: L0 a fraction of the lowest loss, alpha, and the area after a drop at which half of its
    reduction (B times a fifth of the loss) is reached; beta = gamma = 0.5; A puts the law through the first
    window."""
    L_min, starts = float(np.exp(d.logL.min())), []
    for frac, alpha, steps in itertools.product((0.5, 0.9), (0.3, 0.7), (10, 300)):
        L0 = frac * L_min
        log_A = np.log(max(np.exp(d.logL[0]) - L0, 1e-6)) + alpha * d.log_S[0]
        log_C = np.log(3.0 / steps) - 0.5 * np.log(peak)  # (1 + C x)^-0.5 = 1/2 at x = peak^-0.5 * steps * peak
        starts.append(np.array([L0, log_A, alpha, np.log(0.2 * L_min / peak), log_C, 0.5, 0.5]))
    return starts


def _solve(
    x0: np.ndarray,
    d: Design,
    bounds: tuple[list[float], list[float]],
    max_nfev: int,
) -> optimize.OptimizeResult:
    """Robust least squares (soft L1 at 1% in log loss, as Tissue's fit) with the analytic Jacobian."""
    x0 = np.clip(x0, bounds[0], np.array(bounds[1]) - 1e-9)
    return optimize.least_squares(
        lambda x: _model(x, d, False)[0],
        x0,
        lambda x: _model(x, d, True)[1],
        bounds=bounds,
        loss="soft_l1",
        f_scale=0.01,
        x_scale="jac",
        xtol=1e-12,
        ftol=1e-12,
        gtol=1e-12,
        max_nfev=max_nfev,
    )


def fit_multipower(
    curves: Sequence[CurveLike],
    bins: int,
    start: MultiPowerLaw | None = None,
) -> tuple[MultiPowerLaw, float]:
    """Fit the multi-power law to one shape's curves (windows of at most `bins` per curve, as Tissue's fit);
    returns the law (eval_gap 0) and the rms of log(law / loss) on the windows. Bounds: 0 <= L0 <= max loss,
    0 < alpha <= 3, B, C > 0 (in logs), 0 < beta <= 5, 0 <= gamma <= 2. Eight starts run SCREEN_NFEV evaluations
    each and the best goes on to POLISH_NFEV (where the data do not pin C, beta and gamma, as when every drop
    acts at once, a start can crawl along a flat valley); `start` alone is polished (a bootstrap resample).
    beta at its lower bound with a large B is the limit G = beta * log(1 + C x), where only B * beta is pinned
    (on our tuned CPU runs a bound of 1e-5 changed no prediction, and slowed the fit)."""
    d = design(curves, bins)
    bounds = (list(LOWER), [float(np.exp(d.logL.max())), *UPPER[1:]])
    if start is None:
        screened = [_solve(x0, d, bounds, SCREEN_NFEV) for x0 in _starts(d, max(float(np.max(c.lr)) for c in curves))]
        x0 = min(screened, key=lambda r: r.cost).x
    else:
        x0 = start.theta()
    best = _solve(x0, d, bounds, POLISH_NFEV)
    L0, log_A, alpha, log_B, log_C, beta, gamma = (float(v) for v in best.x)
    law = MultiPowerLaw(
        curves[0].N, L0, float(np.exp(log_A)), alpha, float(np.exp(log_B)), float(np.exp(log_C)), beta, gamma, 0.0
    )
    return law, float(np.sqrt(np.sum(_model(best.x, d, False)[0] ** 2) / np.sum(d.weight**2)))
