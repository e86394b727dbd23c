"""Which runs to train next: a design that most shrinks the uncertainty of what the law predicts at a target budget,
or that identifies the constants the fit could not (`suggest_runs`; the `suggest` command).

The criterion is Bayesian L-optimality (Chaloner and Verdinelli 1995, sec. 2.3, "linear optimality"; Atkinson,
Donev and Tobias 2007, ch. 10 and 18) on the Chinchilla law linearised at the fit. In the centred coordinates
theta = (a', b', E, alpha, beta) (scaling/chinchilla.py; E linear, not log, so that a law with E at its lower bound
still has an informative E column) a run at (N, D) adds the Fisher information j j^T / sigma^2, j = d log L(N, D) /
d theta, and sigma is the runs' own scatter in log loss (the fit's residual standard deviation, floored at
`NOISE_FLOOR`). A weak Gaussian prior (`PRIOR_SD`: E within about half the smallest loss, exponents within 0.5,
log terms within 3) keeps the posterior covariance Sigma = (P + sum j j^T / sigma^2)^-1 finite where the points
leave a direction undetermined, so an unidentified E or exponent shows as a large variance instead of an infinite
one. The design minimises a weighted sum of the linearised variances g^T Sigma g of

- log L at the target's compute-optimal (N_opt, D_opt) and log N_opt at the target (each weighted by one over its
  variance before the new runs, so the loss and the allocation count alike), and
- where the fit fell back to a reduced form, log E, log alpha or log beta, whichever its `not_identified` reasons
  name, weighted by one over the square of the limit the fit's identification check allows (SE(log E) <= log 2,
  SE(exponent) <= 100% of it: scaling/chinchilla.py's `SE_LIMITS`), so that runs which identify them come first.

A linearised design is local: it is only as good as the law it is linearised at. When the full law is not
identified, the data cannot tell several laws apart, so the criterion is averaged over them (a pseudo-Bayesian
design, Atkinson et al. 2007, sec. 18.2): the fit's law and the fits with E fixed on a grid below the smallest loss
whose residual sum of squares lies within the chi-square(1) 95% point (3.84 sigma^2) of the best (a profile
likelihood over E).

Runs are chosen greedily from a grid of candidates (`GRID` log-spaced N by `GRID` log-spaced D around the points),
each affordable (6ND within the compute left, and no cheaper than the cheapest run so far / 10) and with tokens
per parameter within a factor `RATIO_SPAN` of those already run; adding a run to a design lowers the criterion by
a rank-one update, (g^T Sigma j)^2 / (sigma^2 + j^T Sigma j). Two greedy rules run, the largest drop first and the
largest drop per FLOP first, and the design with the lower final criterion is kept (a greedy with a knapsack
budget needs both; Krause and Guestrin 2005).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.chinchilla import (
    SE_LIMITS,
    ChinchillaLaw,
    FitResult,
    chinchilla_bounds,
    fit_chinchilla,
    make_form,
)
from smallest_loss.scaling.fitbase import GRAD_TOL
from smallest_loss.scaling.points import FitPoints, centring
from smallest_loss.scaling.projection import grid_stage, local_minima, make_data, newton

NOISE_FLOOR = 0.003  # the scatter of one run's final loss assumed at least (0.3%: seeds, data order)
PRIOR_SD = (3.0, 3.0, 0.5, 0.5, 0.5)  # a', b' (log), E (x smallest loss), alpha, beta
GRID = 31  # candidate values of N and of D each
SPAN = 10.0  # candidates reach this factor beyond the points' N and D
RATIO_SPAN = 4.0  # ... and tokens per parameter this factor beyond theirs
PROFILE_E = 8  # E values profiled when the full law is not identified
PROFILE_ITERS = 6  # Newton steps polishing each profiled law
CHI2_1 = 3.84  # chi-square(1) 95% point
Z95 = 1.959964


@dataclass(frozen=True)
class ProposedRun:
    """One run to train next: N parameters on D tokens (C = 6ND FLOPs), and the predicted 95% half-widths at the
    target (relative: 0.02 is +-2%) of the loss and of N_opt once it and the runs before it are added."""

    N: float
    D: float
    C: float
    loss_width: float
    nopt_width: float


@dataclass(frozen=True)
class RunDesign:
    """The runs `suggest_runs` proposes, and the target's predicted 95% half-widths (relative) before and after.

    Half-widths are linearised (delta method with the prior of the module docstring), for comparing designs; the
    bootstrap's intervals of `fit` are the ones to quote. `identify` names the constants the fit could not pin down
    (empty when the full law is identified); `laws` is how many plausible laws the criterion was averaged over."""

    target: float
    spend: float
    runs: tuple[ProposedRun, ...]
    loss_width_before: float
    loss_width_after: float
    nopt_width_before: float
    nopt_width_after: float
    sigma: float
    identify: tuple[str, ...]
    laws: int
    law: ChinchillaLaw
    form: str
    rule: str  # which greedy rule gave the design ("largest drop" or "drop per FLOP")

    @property
    def cost(self) -> float:
        """The proposed runs' compute, FLOPs (C = 6ND)."""
        return float(sum(r.C for r in self.runs))


@dataclass(frozen=True)
class _Model:
    """The linearisation: plausible laws (centred theta, K x 5), the centre, the noise, the prior precision."""

    thetas: np.ndarray
    mu: tuple[float, float]
    sigma: float
    prior: np.ndarray  # (5,) precisions


def _theta(law: ChinchillaLaw, mu: tuple[float, float]) -> np.ndarray:
    return np.array([math.log(law.A) - law.alpha * mu[0], math.log(law.B) - law.beta * mu[1], law.E, law.alpha,
                     law.beta])  # fmt: skip


def _law(theta: np.ndarray, mu: tuple[float, float]) -> ChinchillaLaw:
    a, b, E, alpha, beta = theta
    return ChinchillaLaw(E=max(E, 0.0), A=math.exp(a + alpha * mu[0]), B=math.exp(b + beta * mu[1]), alpha=alpha,
                         beta=beta)  # fmt: skip


def jacobian(theta: np.ndarray, logN: np.ndarray, logD: np.ndarray, mu: tuple[float, float]) -> np.ndarray:
    """(M, 5) d log L / d theta of the runs at log N, log D, theta = (a', b', E, alpha, beta) centred at mu."""
    a, b, E, alpha, beta = theta
    xN, xD = np.asarray(logN) - mu[0], np.asarray(logD) - mu[1]
    t1, t2 = np.exp(a - alpha * xN), np.exp(b - beta * xD)
    pred = t1 + t2 + E
    return np.stack([t1, t2, np.ones_like(t1), -xN * t1, -xD * t2], axis=1) / pred[:, None]


def target_gradients(theta: np.ndarray, mu: tuple[float, float], target: float,
                     identify: tuple[str, ...]) -> np.ndarray:  # fmt: skip
    """(Q, 5) gradients of log L and log N_opt at the target's optimum, then of log E / log alpha / log beta for
    each constant in `identify`; by central differences (target quantities) and exactly (the rest)."""

    def quantities(t: np.ndarray) -> np.ndarray:
        law = _law(t, mu)
        N, D = law.optimal_allocation(target)
        return np.array([math.log(law.loss(N, D)), math.log(N)])

    step = 1e-6 * np.maximum(np.abs(theta), 1e-3)
    rows = [(quantities(theta + s) - quantities(theta - s)) / (2 * s[i]) for i, s in enumerate(np.diag(step))]
    grads = list(np.array(rows).T)
    for name in identify:
        i = {"E": 2, "alpha": 3, "beta": 4}[name]
        g = np.zeros(5)
        g[i] = 1.0 / max(theta[i], 1e-12)
        grads.append(g)
    return np.array(grads)


def _residual_sigma(points: FitPoints, law: ChinchillaLaw, n_free: int) -> float:
    r = np.log(law.loss(points.N, points.D)) - np.log(points.loss)
    return max(math.sqrt(float(r @ r) / max(len(points) - n_free, 1)), NOISE_FLOOR)


def _profile_laws(points: FitPoints, fit: FitResult, sigma: float) -> list[ChinchillaLaw]:
    """Laws with E fixed on a grid below the smallest loss whose fit is within chi-square(1) of the best."""
    box, mu = chinchilla_bounds(points), centring(points)
    laws, ssr = [], []
    for e in np.linspace(box[0, 2], box[1, 2], PROFILE_E + 2)[1:-1]:
        form = make_form("fixed_E", box, e_fixed=float(e))
        data = make_data(points, mu, fit.delta, form.M, form.z0, form.box)
        u, f, shape = grid_stage(data)  # the grid's best minima, polished briefly: a design needs no 1e-10 optimum
        res = newton(u[local_minima(f, shape, 2)], np.ones(len(points)), data, GRAD_TOL, max_iters=PROFILE_ITERS)
        z = form.z0 + form.M @ res["x"][np.argmin(np.where(np.isfinite(res["f"]), res["f"], np.inf))]
        law = ChinchillaLaw(E=math.exp(z[2]), A=math.exp(z[0] + z[3] * mu[0]), B=math.exp(z[1] + z[4] * mu[1]),
                            alpha=z[3], beta=z[4])  # fmt: skip
        r = np.log(law.loss(points.N, points.D)) - np.log(points.loss)
        laws.append(law)
        ssr.append(float(r @ r))
    r = np.log(fit.law.loss(points.N, points.D)) - np.log(points.loss)
    best = min(min(ssr), float(r @ r))
    return [law for law, s in zip(laws, ssr, strict=True) if s <= best + CHI2_1 * sigma**2]


def identify_names(fit: FitResult) -> tuple[str, ...]:
    """The constants among E, alpha, beta that the fit's `not_identified` reasons name (all three for an
    ill-conditioned Jacobian); empty when the full law is identified."""
    reasons = [r for rs in fit.not_identified.values() for r in rs] if fit.form != "full" or not fit.identified else []
    names = set()
    for reason in reasons:
        if "ill-conditioned" in reason:
            names.update(("E", "alpha", "beta"))
        names.add(reason.split(" ", 1)[0])
    return tuple(n for n in ("E", "alpha", "beta") if n in names)


def _model(points: FitPoints, fit: FitResult, noise: float | None) -> _Model:
    if not isinstance(fit.law, ChinchillaLaw):
        raise UserError("suggest designs runs for the Chinchilla law; fit a Chinchilla law to these points")
    n_free = len(fit.chinchilla_form.free) if fit.chinchilla_form is not None else 5
    sigma = max(noise, NOISE_FLOOR) if noise is not None else _residual_sigma(points, fit.law, n_free)
    mu = centring(points)
    laws = [fit.law] + (_profile_laws(points, fit, sigma) if fit.form != "full" else [])
    prior_sd = np.array(PRIOR_SD) * np.array([1, 1, float(points.loss.min()), 1, 1])
    return _Model(np.array([_theta(law, mu) for law in laws]), mu, sigma, 1.0 / prior_sd**2)


def candidates(points: FitPoints, spend: float, n_range: tuple[float, float] | None = None) -> tuple[np.ndarray, ...]:
    """(log N, log D) of the affordable candidate runs: a log grid reaching `SPAN` beyond the points' N and D (N
    within `n_range` when given), tokens per parameter within `RATIO_SPAN` of theirs, 6ND between the cheapest run
    so far / 10 and `spend`."""
    lo, hi = points.N.min() / SPAN, points.N.max() * SPAN
    if n_range is not None:
        lo, hi = max(lo, n_range[0]), min(hi, n_range[1])
    if not lo < hi:
        raise UserError(f"no model size between {lo:.3g} and {hi:.3g} parameters to propose")
    logN = np.linspace(math.log(lo), math.log(hi), GRID)
    logD = np.linspace(math.log(points.D.min() / SPAN), math.log(points.D.max() * SPAN), GRID)
    gN, gD = (g.ravel() for g in np.meshgrid(logN, logD, indexing="ij"))
    ratio = np.log(points.D / points.N)
    logC = math.log(6.0) + gN + gD
    cheapest = float(np.log(6.0 * points.N * points.D).min()) - math.log(10.0)
    ok = (gD - gN >= ratio.min() - math.log(RATIO_SPAN)) & (gD - gN <= ratio.max() + math.log(RATIO_SPAN))
    ok &= (logC >= cheapest) & (logC <= math.log(spend) + 1e-9)
    return gN[ok], gD[ok]


def _covariances(model: _Model, logN: np.ndarray, logD: np.ndarray) -> np.ndarray:
    """(K, 5, 5) posterior covariances of theta under each plausible law, from runs at (log N, log D)."""
    out = []
    for theta in model.thetas:
        J = jacobian(theta, logN, logD, model.mu)
        out.append(np.linalg.inv(np.diag(model.prior) + J.T @ J / model.sigma**2))
    return np.array(out)


def _variances(cov: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """(K, Q) linearised variances g^T Sigma g of each quantity under each law."""
    return np.einsum("kqi,kij,kqj->kq", grads, cov, grads)


def _drops(model: _Model, cov: np.ndarray, grads: np.ndarray, weights: np.ndarray, cand: tuple) -> np.ndarray:
    """(M,) how much each candidate run lowers the criterion (the rank-one update), averaged over the laws."""
    total = np.zeros(len(cand[0]))
    for k, theta in enumerate(model.thetas):
        J = jacobian(theta, cand[0], cand[1], model.mu)
        V = J @ cov[k]
        s = np.sum(V * J, axis=1) + model.sigma**2
        total += np.sum(weights * (V @ grads[k].T) ** 2, axis=1) / s
    return total / len(model.thetas)


def _greedy(model: _Model, grads: np.ndarray, weights: np.ndarray, cand: tuple, costs: np.ndarray,
            start: tuple, spend: float, runs: int, per_flop: bool) -> list[int]:  # fmt: skip
    """Indices of the candidates chosen one at a time, each the largest drop (per FLOP when `per_flop`) among
    those still affordable and not chosen, until `runs` are chosen or none is affordable."""
    chosen: list[int] = []
    left = spend
    logN, logD = start
    for _ in range(runs):
        cov = _covariances(model, logN, logD)
        gain = _drops(model, cov, grads, weights, cand)
        gain = gain / costs if per_flop else gain
        gain[costs > left * (1 + 1e-9)] = -np.inf
        gain[chosen] = -np.inf
        if not np.isfinite(gain).any() or gain.max() <= 0:
            break
        i = int(np.argmax(gain))
        chosen.append(i)
        left -= costs[i]
        logN, logD = np.append(logN, cand[0][i]), np.append(logD, cand[1][i])
    return chosen


def _check(target: float, spend: float, runs: int) -> None:
    for name, value in (("target", target), ("spend", spend)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise UserError(f"--{name} {value!r} must be a positive number of FLOPs (say 1e21)")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise UserError(f"--runs {runs!r} must be a positive integer")


def _widths(model: _Model, grads: np.ndarray, logN: np.ndarray, logD: np.ndarray) -> np.ndarray:
    """(Q,) 95% half-widths (relative) of each quantity: the variances averaged over the plausible laws."""
    return Z95 * np.sqrt(_variances(_covariances(model, logN, logD), grads).mean(axis=0))


def suggest_runs(points: FitPoints, target: float, spend: float, runs: int = 8, fit: FitResult | None = None,
                 noise: float | None = None, n_range: tuple[float, float] | None = None,
                 identify: tuple[str, ...] | None = None) -> RunDesign:  # fmt: skip
    """Up to `runs` runs (N, D), together costing at most `spend` FLOPs (C = 6ND each), that most shrink the
    linearised uncertainty of the loss and N_opt predicted at `target` FLOPs, or that identify the constants the fit
    could not (module docstring). `fit`: the points' Chinchilla fit (fitted here if not given); `noise`: the scatter
    of one run's log loss (default: the fit's residual standard deviation, at least `NOISE_FLOOR`); `n_range`: the
    model sizes that can be built (a search space's); `identify`: the constants among E, alpha, beta to pin down
    (default: those the fit's `not_identified` reasons name)."""
    _check(target, spend, runs)
    fit = fit if fit is not None else fit_chinchilla(points)
    cand = candidates(points, spend, n_range)
    if not len(cand[0]):
        cheapest = 6.0 * float((points.N * points.D).min()) / 10.0
        raise UserError(f"--spend {spend:.3g} FLOPs buys no run: the cheapest run proposed costs {cheapest:.3g}")
    identify = identify_names(fit) if identify is None else tuple(identify)
    model = _model(points, fit, noise)
    grads = np.array([target_gradients(t, model.mu, target, identify) for t in model.thetas])
    start = (np.log(points.N), np.log(points.D))
    costs = 6.0 * np.exp(cand[0] + cand[1])
    before = _variances(_covariances(model, *start), grads).mean(axis=0)
    limits = {"E": SE_LIMITS["e"], "alpha": SE_LIMITS["alpha"], "beta": SE_LIMITS["beta"]}
    weights = np.concatenate([1.0 / before[:2], [1.0 / limits[n] ** 2 for n in identify]])
    best, best_value, best_rule = [], math.inf, ""
    for rule, per_flop in (("largest drop", False), ("drop per FLOP", True)):
        chosen = _greedy(model, grads, weights, cand, costs, start, spend, runs, per_flop)
        logN, logD = np.append(start[0], cand[0][chosen]), np.append(start[1], cand[1][chosen])
        value = float(_variances(_covariances(model, logN, logD), grads).mean(axis=0) @ weights)
        if value < best_value:
            best, best_value, best_rule = chosen, value, rule
    proposed = []
    for k in range(1, len(best) + 1):
        idx = best[:k]
        w = _widths(model, grads, np.append(start[0], cand[0][idx]), np.append(start[1], cand[1][idx]))
        i = best[k - 1]
        proposed.append(ProposedRun(math.exp(cand[0][i]), math.exp(cand[1][i]), float(costs[i]), float(w[0]),
                                    float(w[1])))  # fmt: skip
    w0 = Z95 * np.sqrt(before)
    last = proposed[-1] if proposed else ProposedRun(0.0, 0.0, 0.0, float(w0[0]), float(w0[1]))
    return RunDesign(target=float(target), spend=float(spend), runs=tuple(proposed), loss_width_before=float(w0[0]),
                     loss_width_after=last.loss_width, nopt_width_before=float(w0[1]), nopt_width_after=last.nopt_width,
                     sigma=model.sigma, identify=identify, laws=len(model.thetas), law=fit.law, form=fit.form,
                     rule=best_rule)  # fmt: skip


def design_widths(points: FitPoints, target: float, N: np.ndarray, D: np.ndarray, fit: FitResult | None = None,
                  noise: float | None = None) -> tuple[float, float]:  # fmt: skip
    """The linearised 95% half-widths (relative) of the loss and N_opt at `target` once runs at (N, D) are added to
    the points: the criterion `suggest_runs` ranks designs by, for any design (one more IsoFLOP budget, say)."""
    fit = fit if fit is not None else fit_chinchilla(points)
    model = _model(points, fit, noise)
    grads = np.array([target_gradients(t, model.mu, target, ()) for t in model.thetas])
    logN = np.append(np.log(points.N), np.log(np.asarray(N, np.float64)))
    logD = np.append(np.log(points.D), np.log(np.asarray(D, np.float64)))
    w = _widths(model, grads, logN, logD)
    return float(w[0]), float(w[1])
