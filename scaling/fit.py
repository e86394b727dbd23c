"""Fitting loss laws to (N, D, loss) points: Chinchilla Approach 3, its bootstrap, and the Kaplan form.

Approach 3 (Hoffmann et al. 2022, sec. 3.3, eq. 3) minimises over (a, b, e, alpha, beta)

    sum_i Huber_delta( LSE(a - alpha*log N_i, b - beta*log D_i, e) - log L_i ),   delta = 1e-3,

with L-BFGS from a grid of starts (alpha, beta in {0, 0.5, .., 2}; e in {-1, -0.5, .., 1}; a, b in
{0, 5, .., 25}: 4500 starts), keeping the best; A = exp(a), B = exp(b), E = exp(e). Following Besiroglu
et al. 2024 (arXiv 2404.10102) we check convergence (gradient at the best), polish the best start
until it converges, warn when the best lies at the edge of the grid, and report bootstrap intervals.

All starts are optimised together: a batched L-BFGS (two-loop recursion, Armijo backtracking done one
trial step per iteration so each start moves at its own pace, per-start stopping) runs in a jitted
JAX loop in float64 (enabled only inside this module's calls; the rest of the project stays float32).
Starts run in a pool of rows that are refilled as starts finish, so stragglers do not hold up the
batch. Internally `a` and `b` are centred, a' = a - alpha*mean(log N), b' = b - beta*mean(log D): the
same objective and starts, with far better conditioning (log N ~ 20 otherwise couples a and alpha).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.laws import ChinchillaLaw, KaplanLaw
from smallest_loss.scaling.points import FitPoints

CHINCHILLA_PARAMS = ("a", "b", "e", "alpha", "beta")
KAPLAN_PARAMS = ("log_Nc", "log_Dc", "aN", "aD")

# Hoffmann et al. 2022, Approach 3 initialisation grid: 6 * 6 * 5 * 5 * 5 = 4500 starts.
CHINCHILLA_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
# A smaller grid for the Kaplan form around Kaplan et al. 2020's Nc ~ 8.8e13, Dc ~ 5.4e13, aN ~ 0.076,
# aD ~ 0.095: 6 * 6 * 4 * 4 = 576 starts.
KAPLAN_GRID: dict[str, tuple[float, ...]] = {
    "log_Nc": (15.0, 20.0, 25.0, 30.0, 35.0, 40.0),
    "log_Dc": (15.0, 20.0, 25.0, 30.0, 35.0, 40.0),
    "aN": (0.05, 0.1, 0.2, 0.4),
    "aD": (0.05, 0.1, 0.2, 0.4),
}

DEFAULT_DELTA = 1e-3
GRAD_TOL = 1e-6  # convergence: max |d objective / d param| at the best, objective summed over points
_HISTORY = 10  # L-BFGS memory m
_CHUNK = 25  # iterations between pool refills (and host syncs)
_MIN_BUCKET = 64


# ---------------------------------------------------------------------------------------------------
# Objectives. Each takes internal parameters z (S, k), weights w (P,) or (S, P), and data, and returns
# the per-start objective (S,) and its gradient (S, k).


def _huber_and_slope(r: jax.Array, delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    ar = jnp.abs(r)
    return jnp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)), jnp.clip(r, -delta, delta)


def _chinchilla_vg(z: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    """Huber(LSE(a' - alpha*xN, b' - beta*xD, e) - log L) summed with weights; analytic gradient."""
    xN, xD, logL, delta = data
    a, b, e, alpha, beta = (z[:, i : i + 1] for i in range(5))
    t1, t2 = a - alpha * xN, b - beta * xD
    top = jnp.maximum(jnp.maximum(t1, t2), e)
    # Clamping at -100 (relative weight 4e-44, invisible next to 1) keeps exp out of subnormal numbers.
    e1, e2, e3 = (jnp.exp(jnp.maximum(t - top, -100.0)) for t in (t1, t2, e))
    total = e1 + e2 + e3
    h, slope = _huber_and_slope(top + jnp.log(total) - logL, delta)
    f = jnp.sum(w * h, axis=-1)
    q = w * slope / total
    q1, q2, q3 = q * e1, q * e2, q * e3
    g = jnp.stack([q1.sum(-1), q2.sum(-1), q3.sum(-1), -(q1 * xN).sum(-1), -(q2 * xD).sum(-1)], axis=-1)
    return f, g


def _kaplan_one(z: jax.Array, w: jax.Array, data: tuple) -> jax.Array:
    """Huber(log L_kaplan - log L); log L_kaplan = aD * LSE((aN/aD)(log Nc - log N), log Dc - log D)."""
    xN, xD, logL, delta = data
    lnc, ldc, log_aN, log_aD = z[0], z[1], z[2], z[3]
    aN, aD = jnp.exp(log_aN), jnp.exp(log_aD)
    pred = aD * jnp.logaddexp(aN / aD * (lnc - xN), ldc - xD)
    h, _ = _huber_and_slope(pred - logL, delta)
    return jnp.sum(w * h)


def _kaplan_vg(z: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    w_axis = 0 if w.ndim == 2 else None
    return jax.vmap(jax.value_and_grad(_kaplan_one), in_axes=(0, w_axis, None))(z, w, data)


# ---------------------------------------------------------------------------------------------------
# Batched L-BFGS (Nocedal and Wright 2006, algorithm 7.4) with per-start Armijo backtracking.


class _State(NamedTuple):
    x: jax.Array  # (S, k) current point
    f: jax.Array  # (S,) objective at x
    g: jax.Array  # (S, k) gradient at x
    p: jax.Array  # (S, k) search direction
    t: jax.Array  # (S,) trial step along p
    gp: jax.Array  # (S,) g . p
    sh: jax.Array  # (S, m, k) steps, newest last
    yh: jax.Array  # (S, m, k) gradient changes
    rho: jax.Array  # (S, m) 1 / (s . y); 0 marks an empty slot
    nls: jax.Array  # (S,) failed trials on the current direction
    active: jax.Array  # (S,) still optimising
    converged: jax.Array  # (S,) stopped on the gradient tolerance
    evals: jax.Array  # (S,) objective evaluations used


def _two_loop(g: jax.Array, sh: jax.Array, yh: jax.Array, rho: jax.Array) -> tuple[jax.Array, jax.Array]:
    """L-BFGS direction -H g by the two-loop recursion; steepest descent when it is not a descent."""
    m = rho.shape[1]

    def backward(j, carry):
        q, alphas = carry
        i = m - 1 - j
        a_i = rho[:, i] * jnp.sum(sh[:, i] * q, -1)
        return q - a_i[:, None] * yh[:, i], alphas.at[:, i].set(a_i)

    q, alphas = jax.lax.fori_loop(0, m, backward, (g, jnp.zeros_like(rho)))
    gnorm = jnp.linalg.norm(g, axis=-1)
    first = jnp.minimum(1.0, 1.0 / jnp.maximum(gnorm, 1e-300))  # no curvature yet: unit-length step
    sy = jnp.sum(sh[:, -1] * yh[:, -1], -1)
    yy = jnp.sum(yh[:, -1] ** 2, -1)
    gamma = jnp.where(rho[:, -1] > 0, sy / jnp.where(yy > 0, yy, 1.0), first)

    def forward(i, r):
        b_i = rho[:, i] * jnp.sum(yh[:, i] * r, -1)
        return r + sh[:, i] * (alphas[:, i] - b_i)[:, None]

    p = -jax.lax.fori_loop(0, m, forward, gamma[:, None] * q)
    descent = jnp.sum(g * p, -1) < 0
    p = jnp.where(descent[:, None], p, -g * first[:, None])
    return p, jnp.sum(g * p, -1)


def _push(hist: jax.Array, new: jax.Array, mask: jax.Array) -> jax.Array:
    shifted = jnp.concatenate([hist[:, 1:], new[:, None]], axis=1)
    return jnp.where(mask.reshape((-1,) + (1,) * (hist.ndim - 1)), shifted, hist)


def _step(st: _State, vg: Callable, w: jax.Array, data: tuple, tols: jax.Array, max_ls: int) -> _State:
    """One trial step for every start: accept (Armijo) and update memory, or shrink the step.

    A freshly loaded start has f = inf and t = 0, so its first trial evaluates f and g at x0.
    """
    gtol, ftol, max_evals = tols[0], tols[1], tols[2]
    act = st.active
    xt = st.x + st.t[:, None] * st.p
    fn, gn = vg(xt, w, data)
    finite = jnp.isfinite(fn) & jnp.all(jnp.isfinite(gn), -1)
    ok = act & finite & (fn <= st.f + 1e-4 * st.t * st.gp)
    fail = act & ~ok
    s, y = xt - st.x, gn - st.g
    sy = jnp.sum(s * y, -1)
    store = ok & (sy > 1e-10 * jnp.sum(y * y, -1)) & (sy > 0)
    sh, yh = _push(st.sh, s, store), _push(st.yh, y, store)
    rho = _push(st.rho, 1.0 / jnp.where(store, sy, 1.0), store)
    x, f, g = jnp.where(ok[:, None], xt, st.x), jnp.where(ok, fn, st.f), jnp.where(ok[:, None], gn, st.g)
    # Shrink by quadratic interpolation, safeguarded to [0.1, 0.5] of the failed step.
    curv = 2.0 * (fn - st.f - st.t * st.gp)
    t_quad = jnp.where(finite & (curv > 0), -st.gp * st.t**2 / jnp.where(curv > 0, curv, 1.0), 0.1 * st.t)
    t_new = jnp.clip(t_quad, 0.1 * st.t, 0.5 * st.t)
    nls = jnp.where(fail, st.nls + 1, 0)
    give_up = fail & (nls >= max_ls)  # line search failed: forget the curvature pairs and retry
    had_memory = jnp.any(rho > 0, -1)
    rho = jnp.where(give_up[:, None], 0.0, rho)
    p_new, gp_new = _two_loop(g, sh, yh, rho)
    fresh = ok | give_up
    conv = ok & (jnp.max(jnp.abs(g), -1) <= gtol)
    stalled = ok & jnp.isfinite(st.f) & (st.f - fn <= ftol * jnp.abs(st.f))
    dead = (give_up & ~had_memory) | (fail & ~jnp.isfinite(st.f)) | (st.evals + 1 >= max_evals)
    return _State(
        x=x,
        f=f,
        g=g,
        p=jnp.where(fresh[:, None], p_new, st.p),
        t=jnp.where(fresh, 1.0, jnp.where(fail, t_new, st.t)),
        gp=jnp.where(fresh, gp_new, st.gp),
        sh=sh,
        yh=yh,
        rho=rho,
        nls=jnp.where(give_up, 0, nls),
        active=act & ~conv & ~stalled & ~dead,
        converged=st.converged | conv,
        evals=st.evals + act.astype(jnp.int32),
    )


@partial(jax.jit, static_argnames=("vg", "iters", "max_ls"))
def _run_chunk(
    st: _State, vg: Callable, w: jax.Array, data: tuple, tols: jax.Array, iters: int, max_ls: int = 20
) -> _State:
    return jax.lax.fori_loop(0, iters, lambda _, s: _step(s, vg, w, data, tols, max_ls), st)


def _empty_pool(size: int, k: int) -> dict[str, np.ndarray]:
    shapes = {"sh": (size, _HISTORY, k), "yh": (size, _HISTORY, k), "rho": (size, _HISTORY)}
    pool = {name: np.zeros(shapes.get(name, (size, k)), np.float64) for name in ("x", "g", "p", "sh", "yh", "rho")}
    pool.update({name: np.zeros(size, np.float64) for name in ("f", "t", "gp")})
    pool.update(nls=np.zeros(size, np.int32), evals=np.zeros(size, np.int32))
    pool.update(active=np.zeros(size, bool), converged=np.zeros(size, bool))
    return pool


def _load(pool: dict[str, np.ndarray], rows: np.ndarray, starts: np.ndarray) -> None:
    """Put new starts into free rows: f = inf and t = 0 make the next step evaluate them."""
    for value in pool.values():
        value[rows] = 0
    pool["x"][rows] = starts
    pool["f"][rows] = np.inf
    pool["active"][rows] = True


def _retire(pool: dict[str, np.ndarray], slots: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Copy finished starts out of the pool and free their rows."""
    done = (slots >= 0) & ~pool["active"]
    for name in out:
        out[name][slots[done]] = pool[name][done]
    slots[done] = -1


def _tail_size(n_running: int, size: int) -> int:
    """Batch for the stragglers once no start is queued: the smallest 64 * 4^j holding them, if <= size/4."""
    tail = _MIN_BUCKET
    while tail < n_running:
        tail *= 4
    return tail if tail <= size // 4 else size


def _shrink(
    pool: dict[str, np.ndarray], slots: np.ndarray, size: int, k: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    keep = np.flatnonzero(slots >= 0)
    pad = _empty_pool(size - keep.size, k)
    pool = {name: np.concatenate([v[keep], pad[name]]) for name, v in pool.items()}
    return pool, np.concatenate([slots[keep], np.full(size - keep.size, -1)])


def batched_lbfgs(
    vg: Callable,
    x0: np.ndarray,
    w: np.ndarray,
    data: tuple,
    max_evals: int = 1000,
    gtol: float = 1e-10,
    ftol: float = 1e-10,
    window_ftol: float = 1e-8,
    pool_size: int = 1024,
) -> dict[str, np.ndarray]:
    """Minimise S problems at once from starts x0 (S, k); returns x, f, g, converged, evals per start.

    `vg(z, w, data) -> (f (S,), g (S, k))` must be a module-level function (a jit static argument);
    w is (P,) or per-start (S, P). Starts run `pool_size` at a time; a row whose start has finished is
    refilled with the next start every `_CHUNK` iterations; once none is queued, the stragglers move
    to smaller batches (256, 64), so a fit compiles at most three shapes. A start stops when
    max|g| <= gtol (converged), when an accepted step lowers f by no more than ftol * |f| or
    `_CHUNK` iterations lower it by no more than window_ftol * |f| (stalled: plateaus), when its
    line search fails with no curvature memory left, or after max_evals evaluations.
    """
    S, k = x0.shape
    per_start_w = np.ndim(w) == 2
    size = min(S, pool_size)
    pool, slots = _empty_pool(size, k), np.full(size, -1)
    out = {"x": np.array(x0, np.float64), "f": np.full(S, np.inf), "g": np.zeros((S, k)),
           "converged": np.zeros(S, bool), "evals": np.zeros(S, np.int32)}  # fmt: skip
    queued = 0
    with jax.enable_x64(True):
        data = tuple(jnp.asarray(d, dtype=jnp.float64) for d in data)
        tols = jnp.asarray([gtol, ftol, max_evals], dtype=jnp.float64)
        while True:
            free = np.flatnonzero(slots < 0)[: S - queued]
            if free.size:
                _load(pool, free, x0[queued : queued + free.size])
                slots[free] = np.arange(queued, queued + free.size)
                queued += free.size
            if queued == S and _tail_size(int(np.sum(slots >= 0)), size) < size:
                pool, slots = _shrink(pool, slots, _tail_size(int(np.sum(slots >= 0)), size), k)
                size = len(slots)
            weights = np.asarray(w)[np.clip(slots, 0, None)] if per_start_w else np.asarray(w)
            f_before = pool["f"].copy()
            st = _run_chunk(_State(**pool), vg, jnp.asarray(weights, jnp.float64), data, tols, _CHUNK)
            pool = {name: np.array(v) for name, v in st._asdict().items()}
            with np.errstate(invalid="ignore"):  # f_before is inf for fresh starts
                slow = f_before - pool["f"] <= window_ftol * np.abs(pool["f"])
            pool["active"] &= ~slow
            _retire(pool, slots, out)
            if queued == S and not np.any(slots >= 0):
                return out


# ---------------------------------------------------------------------------------------------------
# Chinchilla Approach 3.


@dataclass(frozen=True)
class FitResult:
    """The best of all starts: the law, raw parameters, objective and convergence diagnostics."""

    law: ChinchillaLaw | KaplanLaw
    params: np.ndarray  # (a, b, e, alpha, beta) for Chinchilla; (log Nc, log Dc, aN, aD) for Kaplan
    param_names: tuple[str, ...]
    objective: float  # sum of Huber losses at params
    grad_norm: float  # max |d objective / d param| at params
    converged: bool  # grad_norm <= grad_tol
    n_starts: int
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    delta: float = DEFAULT_DELTA
    n_at_best: int = 1  # starts that ended within 1e-9 (relative) of the best objective

    @property
    def diagnostics(self) -> dict[str, Any]:
        """JSON-ready fit diagnostics for the law file."""
        return {
            "objective": self.objective,
            "delta": self.delta,
            "params": dict(zip(self.param_names, map(float, self.params), strict=True)),
            "grad_norm": self.grad_norm,
            "converged": self.converged,
            "n_starts": self.n_starts,
            "n_at_best": self.n_at_best,
            "warnings": list(self.warnings),
            "seconds": self.seconds,
        }


def chinchilla_objective(
    params: np.ndarray, points: FitPoints, delta: float = DEFAULT_DELTA, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Approach 3 objective and its gradient in (a, b, e, alpha, beta) (Hoffmann et al. 2022, eq. 3).

    sum_i w_i Huber_delta(LSE(a - alpha log N_i, b - beta log D_i, e) - log L_i), numpy float64.
    """
    a, b, e, alpha, beta = np.asarray(params, dtype=np.float64)
    logN, logD = np.log(points.N), np.log(points.D)
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    terms = np.stack([a - alpha * logN, b - beta * logD, np.full_like(logN, e)])
    top = terms.max(axis=0)
    ex = np.exp(terms - top)
    total = ex.sum(axis=0)
    r = top + np.log(total) - np.log(points.loss)
    huber = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    q = w * np.clip(r, -delta, delta) * ex / total
    grad = np.array([q[0].sum(), q[1].sum(), q[2].sum(), -(q[0] * logN).sum(), -(q[1] * logD).sum()])
    return float(np.sum(w * huber)), grad


def _grid_starts(grid: dict[str, Any] | None, default: dict[str, tuple[float, ...]]) -> tuple[np.ndarray, dict]:
    """Cartesian product of the grid, columns in the order of `default`; validated."""
    grid = default if grid is None else grid
    names = tuple(default)
    if not isinstance(grid, dict) or set(grid) != set(names):
        got = sorted(grid) if isinstance(grid, dict) else type(grid).__name__
        raise UserError(f"fit grid must have exactly the keys {', '.join(names)}; got {got}")
    clean = {}
    for name in names:
        values = np.atleast_1d(np.asarray(grid[name], dtype=np.float64))
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise UserError(f"fit grid[{name!r}] must be a non-empty list of finite numbers")
        clean[name] = tuple(float(v) for v in values)
    return np.array(list(itertools.product(*clean.values()))), clean


def _centring(points: FitPoints) -> tuple[float, float]:
    return float(np.log(points.N).mean()), float(np.log(points.D).mean())


def _to_internal(params: np.ndarray, mu_N: float, mu_D: float) -> np.ndarray:
    z = np.array(params, dtype=np.float64)
    z[..., 0] -= z[..., 3] * mu_N
    z[..., 1] -= z[..., 4] * mu_D
    return z


def _from_internal(z: np.ndarray, mu_N: float, mu_D: float) -> np.ndarray:
    params = np.array(z, dtype=np.float64)
    params[..., 0] += params[..., 3] * mu_N
    params[..., 1] += params[..., 4] * mu_D
    return params


def _chinchilla_data(points: FitPoints, delta: float) -> tuple:
    mu_N, mu_D = _centring(points)
    return (np.log(points.N) - mu_N, np.log(points.D) - mu_D, np.log(points.loss), np.float64(delta))


def _polish(params: np.ndarray, points: FitPoints, delta: float) -> np.ndarray:
    """Continue the best start with scipy's L-BFGS-B (tight tolerances) in centred coordinates."""
    mu_N, mu_D = _centring(points)

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = chinchilla_objective(_from_internal(z, mu_N, mu_D), points, delta)
        # chain rule back to centred coordinates: d/dalpha' = d/dalpha + mu_N d/da, same for beta
        return f, np.array([g[0], g[1], g[2], g[3] + mu_N * g[0], g[4] + mu_D * g[1]])

    res = optimize.minimize(
        fun, _to_internal(params, mu_N, mu_D), jac=True, method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12},
    )  # fmt: skip
    better = res.fun <= chinchilla_objective(params, points, delta)[0]
    return _from_internal(res.x, mu_N, mu_D) if better else params


def _edge_warnings(params: np.ndarray, grid: dict[str, tuple[float, ...]]) -> list[str]:
    """Warn for parameters at or beyond the grid's extremes (within 1% of its range)."""
    out = []
    for value, (name, values) in zip(params, grid.items(), strict=True):
        lo, hi = min(values), max(values)
        if hi == lo:  # a one-value axis has no range to sit at the edge of
            continue
        tol = 0.01 * (hi - lo)
        if value <= lo + tol or value >= hi - tol:
            out.append(f"{name}={value:.4g} is at or beyond the edge of the start grid [{lo:g}, {hi:g}]; widen it")
    return out


def _convergence_warning(grad_norm: float, grad_tol: float) -> list[str]:
    if grad_norm <= grad_tol:
        return []
    return [f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {grad_tol:g}; check the data"]


def _check_spread(points: FitPoints) -> None:
    """A law in N and D needs several model sizes and several token counts."""
    for name in ("N", "D"):
        distinct = len(np.unique(getattr(points, name)))
        if distinct < 2:
            raise UserError(f"all {len(points.N)} points share one {name}; a law in N and D needs runs with "
                            f"several values of {name}")


def fit_chinchilla(
    points: FitPoints,
    delta: float = DEFAULT_DELTA,
    grid: dict[str, Any] | None = None,
    grad_tol: float = GRAD_TOL,
    max_evals: int = 1000,
) -> FitResult:
    """Chinchilla Approach 3 (Hoffmann et al. 2022): L-BFGS on the Huber objective from every grid start.

    The default grid is Chinchilla's 4500 starts (`CHINCHILLA_GRID`); all starts run together in one
    batched L-BFGS, the best is polished to convergence (Besiroglu et al. 2024) and checked.
    """
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive (Chinchilla used 1e-3)")
    _check_spread(points)
    start = time.perf_counter()
    starts, clean_grid = _grid_starts(grid, CHINCHILLA_GRID)
    mu_N, mu_D = _centring(points)
    res = batched_lbfgs(
        _chinchilla_vg, _to_internal(starts, mu_N, mu_D), np.ones(len(points)),
        _chinchilla_data(points, delta), max_evals=max_evals,
    )  # fmt: skip
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf)
    if not np.isfinite(f).any():
        raise UserError("no start gave a finite objective; check that the losses are sensible")
    best = _polish(_from_internal(res["x"][np.argmin(f)], mu_N, mu_D), points, delta)
    objective, grad = chinchilla_objective(best, points, delta)
    grad_norm = float(np.max(np.abs(grad)))
    a, b, e, alpha, beta = best
    if not (alpha > 0 and beta > 0):
        raise UserError(f"fit gave alpha={alpha:.3g}, beta={beta:.3g} (must be > 0); the data show no scaling")
    with np.errstate(over="ignore", under="ignore"):
        degenerate = not all(np.isfinite(np.exp(x)) and np.exp(x) > 0 for x in (a, b, e))
    if degenerate:
        raise UserError(f"the fit is degenerate (log A={a:.3g}, log B={b:.3g}, log E={e:.3g}): the points do not "
                        "pin down the law; add runs that vary N and D more widely")
    return FitResult(
        law=ChinchillaLaw(E=np.exp(e), A=np.exp(a), B=np.exp(b), alpha=alpha, beta=beta),
        params=best,
        param_names=CHINCHILLA_PARAMS,
        objective=objective,
        grad_norm=grad_norm,
        converged=grad_norm <= grad_tol,
        n_starts=len(starts),
        warnings=tuple(_edge_warnings(best, clean_grid) + _convergence_warning(grad_norm, grad_tol)),
        seconds=time.perf_counter() - start,
        delta=delta,
        n_at_best=int(np.sum(f <= objective * (1 + 1e-9) + 1e-15)),
    )


# ---------------------------------------------------------------------------------------------------
# Bootstrap (Besiroglu et al. 2024: percentile intervals from refits of resampled data).


@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap samples of the law's constants and percentile intervals at `level`."""

    fit: FitResult  # the full-grid fit of the original points
    samples: dict[str, np.ndarray]  # E, A, B, alpha, beta, n_exponent, d_exponent: one value per resample
    intervals: dict[str, tuple[float, float]]
    level: float
    n_boot: int
    n_converged: int  # resamples whose best start ended with max|gradient| <= GRAD_TOL
    seconds: float
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _resample_weights(points: FitPoints, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, P) weights: how often each point's group was drawn when drawing G groups of G."""
    index, n_groups = points.group_index
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, index]


def _bootstrap_starts(z_best: np.ndarray, starts: int, rng: np.random.Generator) -> np.ndarray:
    """The best fit plus `starts - 1` perturbations of it, in centred coordinates."""
    scale = np.array([0.3, 0.3, 0.1, 0.1, 0.1])  # log-scale terms and exponents
    noise = rng.normal(size=(starts - 1, 5)) * scale
    return np.vstack([z_best, z_best + noise])


def _percentiles(samples: dict[str, np.ndarray], level: float) -> dict[str, tuple[float, float]]:
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in samples.items()}


def bootstrap_chinchilla(
    points: FitPoints,
    n_boot: int = 1000,
    seed: int = 0,
    delta: float = DEFAULT_DELTA,
    starts: int = 8,
    level: float = 0.95,
    grid: dict[str, Any] | None = None,
    fit: FitResult | None = None,
) -> BootstrapResult:
    """Approach 3 refit on `n_boot` resamples of the runs (groups), all resamples optimised at once.

    Refitting every resample from all 4500 grid starts would cost 4500x the work, so (our choice) each
    resample starts from the full-grid best fit of the original data plus `starts - 1` random
    perturbations of it, and keeps its best: a resample whose optimum lies in another basin far from
    the original fit could be missed. Intervals are percentile intervals at `level` (Besiroglu et al.
    2024 report bootstrap percentile intervals from 4000 resamples).
    """
    if n_boot < 2 or starts < 1 or not 0 < level < 1:
        raise UserError(f"need n_boot >= 2, starts >= 1 and 0 < level < 1; got {n_boot}, {starts}, {level}")
    begin = time.perf_counter()
    fit = fit if fit is not None else fit_chinchilla(points, delta, grid)
    rng = np.random.default_rng(seed)
    weights = _resample_weights(points, n_boot, rng)
    mu_N, mu_D = _centring(points)
    z0 = _bootstrap_starts(_to_internal(fit.params, mu_N, mu_D), starts, rng)
    res = batched_lbfgs(
        _chinchilla_vg, np.tile(z0, (n_boot, 1)), np.repeat(weights, starts, axis=0),
        _chinchilla_data(points, delta),
    )  # fmt: skip
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf).reshape(n_boot, starts)
    pick = np.arange(n_boot) * starts + np.argmin(f, axis=1)
    params = _from_internal(res["x"][pick], mu_N, mu_D)
    g = res["g"][pick]  # centred-coordinate gradient; back to (a, b, e, alpha, beta) by the chain rule
    g_orig = np.c_[g[:, :3], g[:, 3] - mu_N * g[:, 0], g[:, 4] - mu_D * g[:, 1]]
    n_converged = int(np.sum(np.max(np.abs(g_orig), axis=1) <= GRAD_TOL))
    alpha, beta = params[:, 3], params[:, 4]
    samples = {
        "E": np.exp(params[:, 2]), "A": np.exp(params[:, 0]), "B": np.exp(params[:, 1]),
        "alpha": alpha, "beta": beta,
        "n_exponent": beta / (alpha + beta), "d_exponent": alpha / (alpha + beta),
    }  # fmt: skip
    warn = []
    if n_converged < 0.9 * n_boot:
        warn.append(f"only {n_converged} of {n_boot} bootstrap refits converged; intervals may be too wide")
    return BootstrapResult(
        fit=fit, samples=samples, intervals=_percentiles(samples, level), level=level, n_boot=n_boot,
        n_converged=n_converged, seconds=time.perf_counter() - begin, warnings=tuple(warn),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Kaplan form.


def kaplan_objective(params: np.ndarray, points: FitPoints, delta: float = DEFAULT_DELTA) -> float:
    """sum_i Huber_delta(log L_kaplan(N_i, D_i) - log L_i) at (log Nc, log Dc, aN, aD) (Kaplan et al. 2020)."""
    log_Nc, log_Dc, aN, aD = np.asarray(params, dtype=np.float64)
    pred = aD * np.logaddexp(aN / aD * (log_Nc - np.log(points.N)), log_Dc - np.log(points.D))
    r = pred - np.log(points.loss)
    return float(np.sum(np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))))


def fit_kaplan(
    points: FitPoints,
    delta: float = DEFAULT_DELTA,
    grid: dict[str, Any] | None = None,
    grad_tol: float = GRAD_TOL,
    max_evals: int = 1000,
) -> FitResult:
    """Fit L = ((Nc/N)^(aN/aD) + Dc/D)^aD (Kaplan et al. 2020, eq. 1.5) by the same log-space Huber
    objective and batched L-BFGS as Approach 3, from `KAPLAN_GRID` (576 starts). Exponents are
    optimised as logs (they must be positive) and log Nc, log Dc centred on the data.
    """
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive")
    _check_spread(points)
    begin = time.perf_counter()
    starts, clean_grid = _grid_starts(grid, KAPLAN_GRID)
    if np.any(starts[:, 2:] <= 0):
        raise UserError("Kaplan grid values for aN and aD must be positive")
    mu_N, mu_D = _centring(points)
    shift = np.array([mu_N, mu_D, 0.0, 0.0])
    z0 = np.c_[starts[:, :2] - shift[:2], np.log(starts[:, 2:])]
    data = _chinchilla_data(points, delta)
    res = batched_lbfgs(_kaplan_vg, z0, np.ones(len(points)), data, max_evals=max_evals)
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf)
    if not np.isfinite(f).any():
        raise UserError("no start gave a finite Kaplan objective; check that the losses are sensible")
    i = int(np.argmin(f))
    z = res["x"][i]
    params = np.r_[z[:2] + shift[:2], np.exp(z[2:])]
    grad = res["g"][i] / np.r_[1.0, 1.0, params[2:]]  # d/d(log x) = x d/dx
    grad_norm = float(np.max(np.abs(grad)))
    return FitResult(
        law=KaplanLaw(Nc=np.exp(params[0]), Dc=np.exp(params[1]), aN=params[2], aD=params[3]),
        params=params,
        param_names=KAPLAN_PARAMS,
        objective=kaplan_objective(params, points, delta),
        grad_norm=grad_norm,
        converged=grad_norm <= grad_tol,
        n_starts=len(starts),
        warnings=tuple(_edge_warnings(params, clean_grid) + _convergence_warning(grad_norm, grad_tol)),
        seconds=time.perf_counter() - begin,
        delta=delta,
        n_at_best=int(np.sum(f <= f[i] * (1 + 1e-9) + 1e-15)),
    )
