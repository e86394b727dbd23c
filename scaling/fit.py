"""Fitting loss laws to (N, D, loss) points: Chinchilla Approach 3, its bootstrap, and the Kaplan form.

Approach 3 (Hoffmann et al. 2022, sec. 3.3, eq. 3) minimises over (a, b, e, alpha, beta)

    sum_i Huber_delta( LSE(a - alpha*log N_i, b - beta*log D_i, e) - log L_i ),   delta = 1e-3,

with L-BFGS from a grid of starts (alpha, beta in {0, 0.5, .., 2}; e in {-1, -0.5, .., 1}; a, b in
{0, 5, .., 25}: 4500 starts), keeping the best; A = exp(a), B = exp(b), E = exp(e). Following Besiroglu
et al. 2024 (arXiv 2404.10102) we check convergence, polish the best start until it converges, and
report bootstrap intervals.

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
- Speed. The grid is projected into the box (4500 starts become about 900 distinct ones), screened
  for `SCREEN_EVALS` L-BFGS iterations in float32 on at most `SCREEN_POINTS` points, and the best
  `REFINE_STARTS` are run to convergence in float64; with more points than that, the best
  `FINAL_STARTS` distinct optima are then refined on all points. `exhaustive=True` runs every start to
  convergence on all points instead (what the benchmark checks the fast path against).

All starts are optimised together: a batched, projected L-BFGS (two-loop recursion on the free
coordinates, steps projected into the box, Armijo backtracking one trial step per iteration so each
start moves at its own pace, per-start stopping) runs in a jitted JAX loop (float64 enabled only
inside this module's calls). Starts run in a pool whose rows are refilled as starts finish, sized so
that a pool never holds more than `ELEMENT_BUDGET` start-point pairs: memory does not grow as starts
times points, and points are padded with zero weight to a power of two so that data sets of similar
size share compiled code. Internally `a` and `b` are centred, a' = a - alpha*mean(log N), b' = b - beta*mean(log D):
the same objective, far better conditioned (log N ~ 20 otherwise couples a and alpha), and a' is the
log of the N-term at the data's geometric-mean N, the quantity the term bounds constrain.
"""

from __future__ import annotations

import itertools
import math
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
GRAD_TOL = 1e-6  # convergence: max |projected gradient| in the fitted (centred) coordinates at the best,
# per 1000 points beyond the first 1000 (the objective is a sum over points, and so is its rounding)

# The physical box (see the module docstring).
E_FLOOR = 0.01  # E >= E_FLOOR * min(loss)
EXPONENT_BOUNDS = (0.01, 2.0)  # alpha, beta
TERM_BOUNDS = (1e-4, 10.0)  # A/N^alpha at the geometric-mean N in [1e-4 * min(loss), 10 * max(loss)]; B likewise
BOUND_TOL = 1e-4  # a fitted coordinate within this fraction of its range from a bound is "at the bound"
COND_MAX = 1e6  # largest condition number of the column-scaled Jacobian of log predictions
SE_LIMITS = {"e": math.log(2.0), "alpha": 1.0, "beta": 1.0}  # SE(log E) <= log 2; SE(exponent) <= 100% of it

# The fast path (see the module docstring).
SCREEN_POINTS = 1024
SCREEN_EVALS = 50
REFINE_STARTS = 32
FINAL_STARTS = 4
ELEMENT_BUDGET = 1 << 22  # start-point pairs in one pool (32 MiB per float64 array)

_HISTORY = 10  # L-BFGS memory m
_CHUNK = 25  # iterations between pool refills (and host syncs)
_TAIL = 64  # once no start is queued, stragglers move to a pool of this many rows
_MIN_POINTS_BUCKET = 64  # points are padded (with zero weight) to a power of two at least this large


# ---------------------------------------------------------------------------------------------------
# Objectives. Each takes parameters u (S, k), weights w (P,) or (S, P), and data, and returns the
# per-start objective (S,) and its gradient (S, k).


def huber(r: Any, delta: Any, xp: Any = jnp) -> tuple[Any, Any]:
    """Huber loss of residuals r and its slope (Huber 1964; Hoffmann et al. 2022 use delta = 1e-3)."""
    ar = xp.abs(r)
    return xp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)), xp.clip(r, -delta, delta)


def _chinchilla_vg(z: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    """Huber(log(exp(a' - alpha*xN) + exp(b' - beta*xD) + exp(e)) - log L) summed with weights.

    The gradient is analytic. No max-shift in the log-sum-exp: inside the bounds every exponent is
    moderate, and outside them an overflow gives a non-finite value that the line search rejects.
    """
    xN, xD, logL, delta = data[:4]
    a, b, e, alpha, beta = (z[:, i : i + 1] for i in range(5))
    e1, e2, e3 = jnp.exp(a - alpha * xN), jnp.exp(b - beta * xD), jnp.exp(e)
    total = e1 + e2 + e3
    h, slope = huber(jnp.log(total) - logL, delta)
    q = w * slope / total
    q1, q2 = q * e1, q * e2
    g = jnp.stack([q1.sum(-1), q2.sum(-1), q.sum(-1) * e3[:, 0], -(q1 * xN).sum(-1), -(q2 * xD).sum(-1)], axis=-1)
    return jnp.sum(w * h, axis=-1), g


def _form_vg(u: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    """The Chinchilla objective in a form's free coordinates u: z = z0 + u M^T, gradient M^T g_z."""
    M, z0 = data[4], data[5]
    f, g = _chinchilla_vg(z0 + u @ M.T, w, data)
    return f, g @ M


def _kaplan_one(z: jax.Array, w: jax.Array, data: tuple) -> jax.Array:
    """Huber(log L_kaplan - log L); log L_kaplan = aD * LSE((aN/aD)(log Nc - log N), log Dc - log D)."""
    xN, xD, logL, delta = data
    lnc, ldc, log_aN, log_aD = z[0], z[1], z[2], z[3]
    aN, aD = jnp.exp(log_aN), jnp.exp(log_aD)
    pred = aD * jnp.logaddexp(aN / aD * (lnc - xN), ldc - xD)
    return jnp.sum(w * huber(pred - logL, delta)[0])


def _kaplan_vg(z: jax.Array, w: jax.Array, data: tuple) -> tuple[jax.Array, jax.Array]:
    w_axis = 0 if w.ndim == 2 else None
    return jax.vmap(jax.value_and_grad(_kaplan_one), in_axes=(0, w_axis, None))(z, w, data)


# ---------------------------------------------------------------------------------------------------
# Batched projected L-BFGS (Nocedal and Wright 2006, algorithm 7.4; projection onto the box as in
# Kim, Sra and Dhillon 2010) with per-start Armijo backtracking.


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


def _blocked(x: Any, g: Any, box: Any) -> Any:
    """Coordinates at a bound whose gradient pushes them out of the box: they stay put."""
    return ((x <= box[0]) & (g > 0)) | ((x >= box[1]) & (g < 0))


def _direction(g, x, sh, yh, rho, box) -> tuple[jax.Array, jax.Array]:
    """L-BFGS direction -H g by the two-loop recursion restricted to the free coordinates (those no bound
    blocks: the reduced quasi-Newton step of Kim, Sra and Dhillon 2010); projected steepest descent when
    that is not a descent direction."""
    m = rho.shape[1]
    free = ~_blocked(x, g, box)
    g = jnp.where(free, g, 0.0)
    sh, yh = sh * free[:, None, :], yh * free[:, None, :]
    sy_all = jnp.sum(sh * yh, -1)  # curvature pairs on the free coordinates; drop those without curvature
    rho = jnp.where((rho > 0) & (sy_all > 1e-10 * jnp.sum(yh * yh, -1)), 1.0 / jnp.where(sy_all > 0, sy_all, 1.0), 0.0)

    def backward(j, carry):
        q, alphas = carry
        i = m - 1 - j
        a_i = rho[:, i] * jnp.sum(sh[:, i] * q, -1)
        return q - a_i[:, None] * yh[:, i], alphas.at[:, i].set(a_i)

    q, alphas = jax.lax.fori_loop(0, m, backward, (g, jnp.zeros_like(rho)))
    gnorm = jnp.linalg.norm(g, axis=-1)
    first = jnp.minimum(1.0, 1.0 / jnp.maximum(gnorm, 1e-30))  # no curvature yet: unit-length step
    sy = jnp.sum(sh[:, -1] * yh[:, -1], -1)
    yy = jnp.sum(yh[:, -1] ** 2, -1)
    gamma = jnp.where(rho[:, -1] > 0, sy / jnp.where(yy > 0, yy, 1.0), first)

    def forward(i, r):
        b_i = rho[:, i] * jnp.sum(yh[:, i] * r, -1)
        return r + sh[:, i] * (alphas[:, i] - b_i)[:, None]

    p = jnp.where(free, -jax.lax.fori_loop(0, m, forward, gamma[:, None] * q), 0.0)
    p = jnp.where((jnp.sum(g * p, -1) < 0)[:, None], p, -g * first[:, None])
    return p, jnp.sum(g * p, -1)


def _push(hist: jax.Array, new: jax.Array, mask: jax.Array) -> jax.Array:
    shifted = jnp.concatenate([hist[:, 1:], new[:, None]], axis=1)
    return jnp.where(mask.reshape((-1,) + (1,) * (hist.ndim - 1)), shifted, hist)


def _step(st: _State, vg: Callable, w: jax.Array, data: tuple, tols: jax.Array, box: jax.Array,
          max_ls: int) -> _State:  # fmt: skip
    """One trial step for every start: accept (Armijo along the projected step) and update memory, or
    shrink the step. A freshly loaded start has f = inf and t = 0, so its first trial evaluates x0."""
    gtol, ftol, max_evals = tols[0], tols[1], tols[2]
    act = st.active
    xt = jnp.clip(st.x + st.t[:, None] * st.p, box[0], box[1])
    fn, gn = vg(xt, w, data)
    finite = jnp.isfinite(fn) & jnp.all(jnp.isfinite(gn), -1)
    s, y = xt - st.x, gn - st.g
    ok = act & finite & (fn <= st.f + 1e-4 * jnp.minimum(jnp.sum(st.g * s, -1), 0.0))
    fail = act & ~ok
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
    p_new, gp_new = _direction(g, x, sh, yh, rho, box)
    fresh = ok | give_up
    conv = ok & (jnp.max(jnp.abs(jnp.where(_blocked(x, g, box), 0.0, g)), -1) <= gtol)
    stalled = ok & jnp.isfinite(st.f) & (st.f - fn <= ftol * jnp.abs(st.f))
    dead = (give_up & ~had_memory) | (fail & ~jnp.isfinite(st.f)) | (st.evals + 1 >= max_evals)
    return _State(
        x=x, f=f, g=g, p=jnp.where(fresh[:, None], p_new, st.p),
        t=jnp.where(fresh, 1.0, jnp.where(fail, t_new, st.t)), gp=jnp.where(fresh, gp_new, st.gp),
        sh=sh, yh=yh, rho=rho, nls=jnp.where(give_up, 0, nls), active=act & ~conv & ~stalled & ~dead,
        converged=st.converged | conv, evals=st.evals + act.astype(jnp.int32),
    )  # fmt: skip


@partial(jax.jit, static_argnames=("vg", "iters", "max_ls"))
def _run_chunk(st: _State, vg: Callable, w: jax.Array, data: tuple, tols: jax.Array, box: jax.Array,
               iters: int, max_ls: int = 20) -> _State:  # fmt: skip
    return jax.lax.fori_loop(0, iters, lambda _, s: _step(s, vg, w, data, tols, box, max_ls), st)


class GroupWeights(NamedTuple):
    """Per-start weights without an (S, P) array: start s weighs point i by counts[row[s], index[i]].

    A bootstrap resample is a row of group counts (R, G); its starts share that row. Only the rows of
    the starts in the pool are expanded to points, so memory stays within the pool's budget.
    """

    counts: np.ndarray  # (R, G)
    index: np.ndarray  # (P,) group of each point
    row: np.ndarray  # (S,) resample of each start

    def take(self, starts: np.ndarray) -> np.ndarray:
        return self.counts[self.row[starts]][:, self.index]


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
    """Pool for the stragglers once no start is queued: `_TAIL` rows when they fit and that is <= size/4."""
    return _TAIL if n_running <= _TAIL <= size // 4 else size


def _pad_points(data: tuple, w: np.ndarray | GroupWeights) -> tuple[tuple, np.ndarray | GroupWeights]:
    """Pad the points to a power of two (at least `_MIN_POINTS_BUCKET`) with zero-weight copies of the
    first point, so that data sets of similar size share compiled shapes. Per-point arrays are the data
    arrays whose first axis has one entry per point."""
    index = w.index if isinstance(w, GroupWeights) else np.asarray(w)
    n = len(index)
    size = max(_MIN_POINTS_BUCKET, 1 << math.ceil(math.log2(n)))
    if size == n:
        return data, w
    extra = size - n

    def pad(d: Any) -> Any:
        return np.concatenate([d, np.repeat(d[:1], extra, axis=0)]) if np.ndim(d) and len(d) == n else d

    if isinstance(w, GroupWeights):  # padded points belong to an extra group that is never drawn
        counts = np.c_[w.counts, np.zeros(len(w.counts), w.counts.dtype)]
        padded = GroupWeights(counts, np.r_[w.index, np.full(extra, counts.shape[1] - 1)], w.row)
    else:
        padded = np.r_[np.asarray(w, np.float64), np.zeros(extra)]
    return tuple(pad(d) for d in data), padded


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
    w: np.ndarray | GroupWeights,
    data: tuple,
    max_evals: int = 1000,
    gtol: float = 1e-10,
    ftol: float = 1e-10,
    window_ftol: float = 1e-8,
    pool_size: int = 1024,
    bounds: np.ndarray | None = None,
    dtype: Any = np.float64,
) -> dict[str, np.ndarray]:
    """Minimise S problems at once from starts x0 (S, k) within `bounds` (2, k) (None: unbounded);
    returns x, f, g (projected: zero where a bound blocks), converged, evals per start.

    `vg(z, w, data) -> (f (S,), g (S, k))` must be a module-level function (a jit static argument);
    w is (P,) shared or `GroupWeights`. Starts run in a pool of at most `pool_size` rows and at most
    `ELEMENT_BUDGET` // P rows (a power of two); a row whose start has finished is refilled every `_CHUNK` iterations;
    once none is queued, the stragglers move to smaller batches (256, 64). A start stops when
    max|projected g| <= gtol (converged), when an accepted step lowers f by no more than ftol * |f| or
    `_CHUNK` iterations lower it by no more than window_ftol * |f| (stalled), when its line search fails
    with no curvature memory left, or after max_evals evaluations. `dtype` float32 halves the work of
    a screening pass.
    """
    S, k = x0.shape
    data, w = _pad_points(data, w)
    n_points = len(w.index) if isinstance(w, GroupWeights) else np.size(w)
    box = np.array([[-np.inf] * k, [np.inf] * k]) if bounds is None else np.asarray(bounds, np.float64)
    # Powers of two, so that fits with similar numbers of starts share compiled shapes.
    size = 1 << int(math.log2(max(1, min(pool_size, ELEMENT_BUDGET // max(n_points, 1)))))
    size = min(size, 1 << math.ceil(math.log2(S)))
    pool, slots = _empty_pool(size, k), np.full(size, -1)
    out = {"x": np.clip(np.array(x0, np.float64), box[0], box[1]), "f": np.full(S, np.inf), "g": np.zeros((S, k)),
           "converged": np.zeros(S, bool), "evals": np.zeros(S, np.int32)}  # fmt: skip
    queued = 0
    with jax.enable_x64(True):
        cast = partial(jnp.asarray, dtype=dtype)
        data, jbox = tuple(cast(d) for d in data), cast(box)
        tols = cast(np.array([gtol, ftol, max_evals]))
        while True:
            free = np.flatnonzero(slots < 0)[: S - queued]
            if free.size:
                _load(pool, free, out["x"][queued : queued + free.size])
                slots[free] = np.arange(queued, queued + free.size)
                queued += free.size
            if queued == S and _tail_size(int(np.sum(slots >= 0)), size) < size:
                pool, slots = _shrink(pool, slots, _tail_size(int(np.sum(slots >= 0)), size), k)
                size = len(slots)
            weights = w.take(np.clip(slots, 0, None)) if isinstance(w, GroupWeights) else w
            f_before = pool["f"].copy()
            state = _State(**{n: cast(v) if v.dtype == np.float64 else v for n, v in pool.items()})
            st = _run_chunk(state, vg, cast(weights), data, tols, jbox, _CHUNK)
            pool = {name: np.array(v, np.float64 if v.dtype == dtype else v.dtype) for name, v in st._asdict().items()}
            with np.errstate(invalid="ignore"):  # f_before is inf for fresh starts
                slow = f_before - pool["f"] <= window_ftol * np.abs(pool["f"])
            pool["active"] &= ~slow
            _retire(pool, slots, out)
            if queued == S and not np.any(slots >= 0):
                out["g"] = np.where(_blocked(out["x"], out["g"], box), 0.0, out["g"])
                return out


# ---------------------------------------------------------------------------------------------------
# Minimising one problem from many starts: screen, refine, finish on all points, polish.


class _Problem(NamedTuple):
    """An objective, how to build its data for a set of points, and the box of its coordinates."""

    vg: Callable
    data_for: Callable[[FitPoints], tuple]
    box: np.ndarray  # (2, k)


def _subset(points: FitPoints, size: int, seed: int = 0) -> FitPoints | None:
    """A fixed random subset of `size` points (None when there are no more points than that)."""
    if len(points) <= size:
        return None
    index = np.sort(np.random.default_rng(seed).choice(len(points), size, replace=False))
    return FitPoints(points.N[index], points.D[index], points.loss[index], points.group[index])


def _distinct_best(x: np.ndarray, f: np.ndarray, count: int) -> np.ndarray:
    """Rows of the `count` best distinct optima (rows closer than 1e-6 in every coordinate are one)."""
    chosen: list[int] = []
    for i in np.argsort(np.where(np.isfinite(f), f, np.inf)):
        if all(np.max(np.abs(x[i] - x[j])) > 1e-6 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == count:
            break
    return np.array(chosen)


def _minimise(problem: _Problem, points: FitPoints, starts: np.ndarray, max_evals: int,
              exhaustive: bool) -> tuple[np.ndarray, int]:  # fmt: skip
    """Best point over all starts and how many starts reached it (see the module docstring)."""
    full = problem.data_for(points)
    ones = np.ones(len(points))
    run = partial(batched_lbfgs, problem.vg, bounds=problem.box)
    if exhaustive:
        res = run(starts, ones, full, max_evals=max_evals)
    else:
        sub = _subset(points, SCREEN_POINTS)
        sub_data, sub_ones = (full, ones) if sub is None else (problem.data_for(sub), np.ones(len(sub)))
        if len(starts) > REFINE_STARTS:
            screen = run(starts, sub_ones, sub_data, max_evals=SCREEN_EVALS, dtype=np.float32)
            starts = screen["x"][_distinct_best(screen["x"], screen["f"], REFINE_STARTS)]
        res = run(starts, sub_ones, sub_data, max_evals=max_evals)
        if sub is not None:
            res = run(res["x"][_distinct_best(res["x"], res["f"], FINAL_STARTS)], ones, full, max_evals=max_evals)
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf)
    if not np.isfinite(f).any():
        raise UserError("no start gave a finite objective; check that the losses are sensible")
    best = _polish(problem, points, res["x"][np.argmin(f)])
    return best, int(np.sum(f <= f.min() * (1 + 1e-9) + 1e-15))


@partial(jax.jit, static_argnames=("vg",))
def _value_and_grad(u: jax.Array, w: jax.Array, data: tuple, vg: Callable) -> tuple[jax.Array, jax.Array]:
    f, g = vg(u[None], w, data)
    return f[0], g[0]


def _evaluator(vg: Callable, data: tuple, w: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """x -> (objective, gradient) at one point, float64, points padded as in `batched_lbfgs`."""
    data, w = _pad_points(data, w)
    with jax.enable_x64(True):
        data, w = tuple(jnp.asarray(d, jnp.float64) for d in data), jnp.asarray(w, jnp.float64)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        with jax.enable_x64(True):
            f, g = _value_and_grad(jnp.asarray(x, jnp.float64), w, data, vg)
            return float(f), np.array(g)

    return fun


def _objective(problem: _Problem, points: FitPoints, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Objective and gradient at one point, float64, on all points."""
    return _evaluator(problem.vg, problem.data_for(points), np.ones(len(points)))(u)


def _polish(problem: _Problem, points: FitPoints, u: np.ndarray) -> np.ndarray:
    """Continue the best start with scipy's L-BFGS-B (tight tolerances, same box) on all points."""
    fun = _evaluator(problem.vg, problem.data_for(points), np.ones(len(points)))
    bounds = [(lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None) for lo, hi in problem.box.T]
    res = optimize.minimize(fun, u, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})  # fmt: skip
    return res.x if np.isfinite(res.fun) and res.fun <= fun(u)[0] else u


# ---------------------------------------------------------------------------------------------------
# Chinchilla Approach 3: bounds, forms, identification.


def _centring(points: FitPoints) -> tuple[float, float]:
    return float(np.log(points.N).mean()), float(np.log(points.D).mean())


def chinchilla_bounds(points: FitPoints) -> np.ndarray:
    """The box (2, 5) on centred (a', b', e, alpha, beta) for these points (module docstring)."""
    log_lo, log_hi = math.log(points.loss.min()), math.log(points.loss.max())
    term = (log_lo + math.log(TERM_BOUNDS[0]), log_hi + math.log(TERM_BOUNDS[1]))
    return np.array([[term[0], term[0], log_lo + math.log(E_FLOOR), EXPONENT_BOUNDS[0], EXPONENT_BOUNDS[0]],
                     [term[1], term[1], log_lo, EXPONENT_BOUNDS[1], EXPONENT_BOUNDS[1]]])  # fmt: skip


@dataclass(frozen=True)
class _Form:
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


def _make_form(name: str, box5: np.ndarray, e_fixed: float | None = None, ratio: float | None = None,
               ratio_source: str = "") -> _Form:  # fmt: skip
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
    return _Form(name, description, M, z0, tuple(int(i) for i in np.flatnonzero(M.any(axis=0))), box)


def _form_problem(form: _Form, mu: tuple[float, float], delta: float) -> _Problem:
    def data_for(pts: FitPoints) -> tuple:
        return (np.log(pts.N) - mu[0], np.log(pts.D) - mu[1], np.log(pts.loss), np.float64(delta), form.M, form.z0)

    return _Problem(_form_vg, data_for, form.box)


def _jacobian(z: np.ndarray, points: FitPoints, mu: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Residuals log pred - log L and the Jacobian (P, 5) of log pred in centred coordinates."""
    a, b, e, alpha, beta = z
    xN, xD = np.log(points.N) - mu[0], np.log(points.D) - mu[1]
    t1, t2 = np.exp(a - alpha * xN), np.exp(b - beta * xD)
    pred = t1 + t2 + math.exp(e)
    J = np.stack([t1, t2, np.full_like(t1, math.exp(e)), -xN * t1, -xD * t2], axis=1) / pred[:, None]
    return np.log(pred) - np.log(points.loss), J


_NATURAL = ("A", "B", "E", "alpha", "beta")  # what each centred coordinate (a', b', e, alpha, beta) sets


def _at_bounds(form: _Form, u: np.ndarray) -> np.ndarray:
    """(..., 5) booleans: free coordinates at (within `BOUND_TOL` of the range of) a bound."""
    span = form.box[1] - form.box[0]
    near = (np.abs(u - form.box[0]) <= BOUND_TOL * span) | (np.abs(u - form.box[1]) <= BOUND_TOL * span)
    return near & form.M.any(axis=0)


def _not_identified(form: _Form, u: np.ndarray, points: FitPoints, mu: tuple[float, float]) -> list[str]:
    """Why the fitted form is not identified (empty when it is): bounds, conditioning, standard errors."""
    lower = u - form.box[0] < form.box[1] - u
    reasons = [f"{_NATURAL[i]} ran to its {'lower' if lower[i] else 'upper'} bound"
               for i in np.flatnonzero(_at_bounds(form, u))]  # fmt: skip
    r, J = _jacobian(form.z0 + form.M @ u, points, mu)
    free = list(form.free)
    Ju = (J @ form.M)[:, free]
    scaled = Ju / np.maximum(np.linalg.norm(Ju, axis=0), 1e-300)
    eig = np.linalg.eigvalsh(scaled.T @ scaled)
    cond = math.sqrt(eig[-1] / eig[0]) if eig[0] > 0 else math.inf
    if cond > COND_MAX:
        return reasons + [f"the Jacobian is ill-conditioned (condition number {cond:.3g})"]
    sigma2 = float(np.sum(r * r)) / max(len(points) - len(free), 1)
    se = np.sqrt(np.maximum(np.diag(sigma2 * np.linalg.pinv(Ju.T @ Ju)), 0.0))
    for i, s in zip(free, se, strict=True):
        name = CHINCHILLA_PARAMS[i]
        relative = s if name == "e" else s / max(u[i], 1e-300)
        if name in SE_LIMITS and relative > SE_LIMITS[name]:
            what = f"standard error of log E {s:.3g}" if name == "e" else f"standard error {relative:.0%} of it"
            reasons.append(f"{_NATURAL[i]} is not determined ({what})")
    return reasons


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


def _form_starts(form: _Form, grid_z: np.ndarray, extra: list[np.ndarray]) -> np.ndarray:
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
    free: np.ndarray | None = field(default=None, repr=False)  # fitted coordinates (for the bootstrap)
    _form: _Form | None = field(default=None, repr=False, compare=False)

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
        }  # fmt: skip


def chinchilla_objective(
    params: np.ndarray, points: FitPoints, delta: float = DEFAULT_DELTA, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Approach 3 objective and its gradient in (a, b, e, alpha, beta) (Hoffmann et al. 2022, eq. 3).

    sum_i w_i Huber_delta(log(exp(a - alpha log N_i) + exp(b - beta log D_i) + exp(e)) - log L_i), float64.
    """
    w = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=np.float64)
    data = (np.log(points.N), np.log(points.D), np.log(points.loss), np.float64(delta))
    return _evaluator(_chinchilla_vg, data, w)(np.asarray(params, np.float64))


def _natural_bounds(box: np.ndarray, mu: tuple[float, float]) -> dict[str, list[float]]:
    return {"E": np.exp(box[:, 2]).tolist(), "alpha": box[:, 3].tolist(), "beta": box[:, 4].tolist(),
            "A_term_at_mean_N": np.exp(box[:, 0]).tolist(), "B_term_at_mean_D": np.exp(box[:, 1]).tolist(),
            "mean_N": math.exp(mu[0]), "mean_D": math.exp(mu[1])}  # fmt: skip


def _scaled_tol(grad_tol: float, n_points: int) -> float:
    """The gradient tolerance for a sum over n points (see `GRAD_TOL`)."""
    return grad_tol * max(1.0, n_points / 1000)


def _check_spread(points: FitPoints) -> None:
    """A law in N and D needs several model sizes and several token counts."""
    for name in ("N", "D"):
        distinct = len(np.unique(getattr(points, name)))
        if distinct < 2:
            raise UserError(
                f"all {len(points.N)} points share one {name}; a law in N and D needs runs with "
                f"several values of {name}"
            )


def _forms(box: np.ndarray, allocation_exponent: float | None) -> list[Callable[[float], _Form]]:
    """The fallback ladder: full, E fixed, beta tied to alpha, both (each given the last best e)."""
    if allocation_exponent is not None and 0 < allocation_exponent < 1:
        ratio, source = allocation_exponent / (1 - allocation_exponent), "from Approach 2's N_opt ~ C^a"
    else:
        ratio, source = 1.0, "alpha = beta, equal scaling as Hoffmann et al. 2022 found"
    return [
        lambda e: _make_form("full", box),
        lambda e: _make_form("fixed_E", box, e_fixed=e),
        lambda e: _make_form("tied", box, ratio=ratio, ratio_source=source),
        lambda e: _make_form("tied_fixed_E", box, e_fixed=e, ratio=ratio, ratio_source=source),
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

    The grid (default: Chinchilla's 4500 starts) is projected into `chinchilla_bounds`; the best start
    is polished (Besiroglu et al. 2024) and its identification checked; if the full law is not
    identified the fallback forms are tried (module docstring). `allocation_exponent` (Approach 2's
    a in N_opt ~ C^a) sets the tie between the exponents. Raises only for unusable input.
    """
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive (Chinchilla used 1e-3)")
    _check_spread(points)
    start = time.perf_counter()
    starts, _ = _grid_starts(grid, CHINCHILLA_GRID)
    mu = _centring(points)
    grid_z = starts.copy()  # the grid in centred coordinates: a' = a - alpha mean(log N), b' likewise
    grid_z[:, :2] -= starts[:, 3:5] * np.array(mu)
    box = chinchilla_bounds(points)
    tried: dict[str, list[str]] = {}
    found: list[np.ndarray] = []
    for make in _forms(box, allocation_exponent):
        form = make(float(np.clip(found[-1][2], box[0, 2], box[1, 2])) if found else 0.0)
        u, n_at_best = _minimise(_form_problem(form, mu, delta), points, _form_starts(form, grid_z, found),
                                 max_evals, exhaustive)  # fmt: skip
        found.append(form.z0 + form.M @ u)
        reasons = _not_identified(form, u, points, mu)
        if reasons:
            tried[form.name] = reasons
        if not reasons:
            break
    return _chinchilla_result(form, u, points, mu, delta, grad_tol, len(starts), n_at_best, tried, box,
                              time.perf_counter() - start)  # fmt: skip


def _fallback_warning(form: _Form, tried: dict[str, list[str]]) -> list[str]:
    if not tried:
        return []
    why = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in tried.items())
    if form.name in tried:
        return [
            f"no form of the law is identified by these points ({why}); using the last fallback, "
            f"{form.description}: treat its constants as a rough description of these points only"
        ]
    return [f"the full law is not identified ({why}); using {form.description}"]


def _chinchilla_result(form: _Form, u: np.ndarray, points: FitPoints, mu: tuple[float, float], delta: float,
                       grad_tol: float, n_starts: int, n_at_best: int, tried: dict[str, list[str]],
                       box: np.ndarray, seconds: float) -> FitResult:  # fmt: skip
    """FitResult of the chosen form: uncentred parameters, law, gradient check, warnings."""
    z = form.z0 + form.M @ u
    params = np.array([z[0] + z[3] * mu[0], z[1] + z[4] * mu[1], z[2], z[3], z[4]])
    objective, g = _objective(_form_problem(form, mu, delta), points, u)
    grad_norm = float(np.max(np.abs(np.where(_blocked(u, g, form.box), 0.0, g))))
    a, b, e, alpha, beta = params
    warnings = _fallback_warning(form, tried)
    grad_tol = _scaled_tol(grad_tol, len(points))
    if grad_norm > grad_tol:
        warnings.append(f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {grad_tol:g}; check the data")
    return FitResult(
        law=ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta),
        params=params, param_names=CHINCHILLA_PARAMS, objective=objective, grad_norm=grad_norm,
        converged=grad_norm <= grad_tol, n_starts=n_starts, warnings=tuple(warnings), seconds=seconds,
        delta=delta, n_at_best=n_at_best, identified=form.name not in tried, form=form.name,
        form_description=form.description, not_identified=tried, bounds=_natural_bounds(box, mu), free=u,
        _form=form,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Bootstrap (Besiroglu et al. 2024: percentile intervals from refits of resampled data).

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


def _bootstrap_groups(points: FitPoints, rng: np.random.Generator) -> np.ndarray:
    """Groups to resample: all, or random groups holding about `BOOT_MAX_POINTS` points (at least
    `BOOT_MIN_GROUPS` groups) so that a resample's refit costs the same at any number of points."""
    index, n_groups = points.group_index
    if len(points) <= BOOT_MAX_POINTS:
        return np.arange(n_groups)
    order = rng.permutation(n_groups)
    filled = np.cumsum(np.bincount(index, minlength=n_groups)[order])
    count = max(int(np.searchsorted(filled, BOOT_MAX_POINTS, side="right")), min(n_groups, BOOT_MIN_GROUPS))
    return np.sort(order[:count])


def _resample_counts(n_groups: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, G) counts: how often each group was drawn when drawing G groups of G with replacement."""
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups), np.float32)
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def _bootstrap_starts(u_best: np.ndarray, form: _Form, starts: int, rng: np.random.Generator) -> np.ndarray:
    """The best fit plus `starts - 1` perturbations of it, in the form's coordinates, inside its box."""
    scale = np.array([0.3, 0.3, 0.1, 0.1, 0.1]) * form.M.any(axis=0)  # log terms, e, exponents; 0 when fixed
    noise = rng.normal(size=(starts - 1, len(u_best))) * scale
    return np.clip(np.vstack([u_best, u_best + noise]), form.box[0], form.box[1])


def _percentiles(samples: dict[str, np.ndarray], level: float) -> dict[str, tuple[float, float]]:
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    return {k: (float(np.percentile(v, lo)), float(np.percentile(v, hi))) for k, v in samples.items()}


def _samples(form: _Form, u: np.ndarray, mu: tuple[float, float]) -> dict[str, np.ndarray]:
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
    starts: int = 8,
    level: float = 0.95,
    grid: dict[str, Any] | None = None,
    fit: FitResult | None = None,
) -> BootstrapResult:
    """Refit the fit's form on `n_boot` resamples of the runs (groups), all resamples optimised at once.

    Each resample starts from the fit of the original data plus `starts - 1` random perturbations of it
    (refitting from all 4500 grid starts would cost 4500x the work) and keeps its best, within the same
    bounds. Intervals are percentile intervals at `level` (Besiroglu et al. 2024 report bootstrap
    percentile intervals from 4000 resamples). With more than `BOOT_MAX_POINTS` points, resamples draw
    q of a random subset of q groups and the deviations from that subset's fit are scaled by sqrt(q/G)
    (the m-out-of-n bootstrap, Bickel, Goetze and van Zwet 1997), so memory and time stay bounded; each
    such resample then starts from at most `BOOT_LARGE_STARTS` points.
    """
    if n_boot < 2 or starts < 1 or not 0 < level < 1:
        raise UserError(f"need n_boot >= 2, starts >= 1 and 0 < level < 1; got {n_boot}, {starts}, {level}")
    begin = time.perf_counter()
    fit = fit if fit is not None else fit_chinchilla(points, delta, grid)
    if fit._form is None or fit.free is None:
        raise UserError("the bootstrap refits a Chinchilla fit; got a fit of another form")
    form, mu, rng = fit._form, _centring(points), np.random.default_rng(seed)
    problem = _form_problem(form, mu, fit.delta)
    index, n_groups = points.group_index
    chosen = _bootstrap_groups(points, rng)
    keep = np.isin(index, chosen)
    sub = points if keep.all() else FitPoints(points.N[keep], points.D[keep], points.loss[keep], index[keep])
    u_sub = fit.free if keep.all() else _polish(problem, sub, fit.free)
    if not keep.all():  # thousands of groups pin each resample's optimum near the subset's: fewer starts do
        starts = min(starts, BOOT_LARGE_STARTS)
    weights = GroupWeights(_resample_counts(len(chosen), n_boot, rng), np.searchsorted(chosen, index[keep]),
                           np.repeat(np.arange(n_boot), starts))  # fmt: skip
    res = batched_lbfgs(problem.vg, np.tile(_bootstrap_starts(u_sub, form, starts, rng), (n_boot, 1)), weights,
                        problem.data_for(sub), bounds=form.box)  # fmt: skip
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf).reshape(n_boot, starts)
    pick = np.arange(n_boot) * starts + np.argmin(f, axis=1)
    u = res["x"][pick]
    at_bound = _at_bounds(form, u)
    shrink = math.sqrt(len(chosen) / n_groups)
    samples = _samples(form, np.clip(fit.free + shrink * (u - u_sub), form.box[0], form.box[1]), mu)
    n_converged = int(np.sum(np.max(np.abs(res["g"][pick]), axis=1) <= _scaled_tol(GRAD_TOL, len(sub))))
    warn = _bootstrap_warnings(form, n_boot, n_converged, at_bound, len(chosen), n_groups, len(sub))
    return BootstrapResult(
        fit=fit, samples=samples, intervals=_percentiles(samples, level), level=level, n_boot=n_boot,
        n_converged=n_converged, seconds=time.perf_counter() - begin, warnings=tuple(warn),
        n_at_bound=int(np.sum(at_bound.any(axis=1))), n_groups_used=len(chosen), n_groups=n_groups,
    )  # fmt: skip


def _bootstrap_warnings(form: _Form, n_boot: int, n_converged: int, at_bound: np.ndarray, used: int,
                        n_groups: int, n_points: int) -> list[str]:  # fmt: skip
    warn = []
    if n_converged < 0.9 * n_boot:
        warn.append(f"only {n_converged} of {n_boot} bootstrap refits converged; intervals may be too wide")
    hit = at_bound.any(axis=1).sum()
    if hit > 0.05 * n_boot:
        names = ", ".join(name for name, column in zip(_NATURAL, at_bound.T, strict=True) if column.any())
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


# ---------------------------------------------------------------------------------------------------
# Kaplan form.


def kaplan_objective(params: np.ndarray, points: FitPoints, delta: float = DEFAULT_DELTA) -> float:
    """sum_i Huber_delta(log L_kaplan(N_i, D_i) - log L_i) at (log Nc, log Dc, aN, aD) (Kaplan et al. 2020)."""
    log_Nc, log_Dc, aN, aD = np.asarray(params, dtype=np.float64)
    pred = aD * np.logaddexp(aN / aD * (log_Nc - np.log(points.N)), log_Dc - np.log(points.D))
    return float(np.sum(huber(pred - np.log(points.loss), delta, np)[0]))


def fit_kaplan(
    points: FitPoints,
    delta: float = DEFAULT_DELTA,
    grid: dict[str, Any] | None = None,
    grad_tol: float = GRAD_TOL,
    max_evals: int = 1000,
    exhaustive: bool = False,
) -> FitResult:
    """Fit L = ((Nc/N)^(aN/aD) + Dc/D)^aD (Kaplan et al. 2020, eq. 1.5) by the same log-space Huber
    objective and minimiser as Approach 3, from `KAPLAN_GRID` (576 starts). Exponents are optimised as
    logs (they must be positive) and log Nc, log Dc centred on the data.
    """
    if not (np.isfinite(delta) and delta > 0):
        raise UserError(f"Huber delta={delta!r} must be positive")
    _check_spread(points)
    begin = time.perf_counter()
    starts, _ = _grid_starts(grid, KAPLAN_GRID)
    if np.any(starts[:, 2:] <= 0):
        raise UserError("Kaplan grid values for aN and aD must be positive")
    mu = _centring(points)
    shift = np.array([mu[0], mu[1], 0.0, 0.0])
    unbounded = np.array([[-np.inf] * 4, [np.inf] * 4])
    problem = _Problem(_kaplan_vg, lambda pts: (np.log(pts.N) - mu[0], np.log(pts.D) - mu[1], np.log(pts.loss),
                                                np.float64(delta)), unbounded)  # fmt: skip
    z, n_at_best = _minimise(problem, points, np.c_[starts[:, :2] - shift[:2], np.log(starts[:, 2:])], max_evals,
                             exhaustive)  # fmt: skip
    params = np.r_[z[:2] + shift[:2], np.exp(z[2:])]
    grad = _objective(problem, points, z)[1] / np.r_[1.0, 1.0, params[2:]]  # d/d(log x) = x d/dx
    grad_norm = float(np.max(np.abs(grad)))
    grad_tol = _scaled_tol(grad_tol, len(points))
    warnings = (
        []
        if grad_norm <= grad_tol
        else [f"best fit did not converge: max |gradient| = {grad_norm:.3g} > {grad_tol:g}; check the data"]
    )
    return FitResult(
        law=KaplanLaw(Nc=np.exp(params[0]), Dc=np.exp(params[1]), aN=params[2], aD=params[3]),
        params=params, param_names=KAPLAN_PARAMS, objective=kaplan_objective(params, points, delta),
        grad_norm=grad_norm, converged=grad_norm <= grad_tol, n_starts=len(starts), warnings=tuple(warnings),
        seconds=time.perf_counter() - begin, delta=delta, n_at_best=n_at_best, form="kaplan",
        form_description="Kaplan et al. 2020 form: Nc, Dc, aN, aD fitted",
    )  # fmt: skip
