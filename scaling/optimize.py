"""The optimiser of the loss-law fits: a batched, projected L-BFGS that runs many starts at once, start grids,
the fast path from a grid of starts to the best one, and the final polish.

The fits that use it (scaling/kaplan.py, aspect.py, groups.py, and the Chinchilla fit from a user's grid of starts,
scaling/chinchilla_lbfgs.py) minimise a weighted sum of Huber losses (Huber 1964; delta = 1e-3 as Hoffmann et al.
2022, sec. 3.3, eq. 3) between predicted and observed log losses, from a grid of starts, keeping the best;
following Besiroglu et al. 2024 (arXiv 2404.10102) the best start is polished until it converges, and convergence
is checked. (The default Chinchilla fit goes by variable projection in numpy instead: scaling/projection.py.)
JAX and scipy are loaded on first use (configs/lazy.py), so importing this module costs neither.

All starts are optimised together: a batched, projected L-BFGS (two-loop recursion on the free coordinates,
steps projected into the box, Armijo backtracking one trial step per iteration so each start moves at its own
pace, per-start stopping) runs in a jitted JAX loop (float64 enabled only inside this module's calls). Starts run
in a pool whose rows are refilled as starts finish, sized so that a pool never holds more than `ELEMENT_BUDGET`
start-point pairs: memory does not grow as starts times points, and points are padded with zero weight to a power
of two so that data sets of similar size share compiled code.

Speed (`minimise`). The starts are screened for `SCREEN_EVALS` L-BFGS iterations in float32 on at most
`SCREEN_POINTS` points, and the best `REFINE_STARTS` are run to convergence in float64; with more points than
that, the best `FINAL_STARTS` distinct optima are then refined on all points, and the best is polished with
scipy's L-BFGS-B. `exhaustive=True` runs every start to convergence on all points instead (what the benchmark
checks the fast path against).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.lazy import jax, jit, jnp, optimize
from smallest_loss.scaling import fitbase
from smallest_loss.scaling.fitbase import (  # noqa: F401  (re-exported: the fits import them from here)
    BOUND_TOL,
    DEFAULT_DELTA,
    GRAD_TOL,
    blocked,
    distinct_best,
    grid_starts,
    scaled_tol,
    subset_index,
)
from smallest_loss.scaling.points import FitPoints

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
# Objectives (`vg`, defined with each law: chinchilla.py, kaplan.py, aspect.py, groups.py). Each takes parameters
# u (S, k), weights w (P,) or (S, P), and data, and returns the per-start objective (S,) and its gradient (S, k).


def huber(r: Any, delta: Any, xp: Any = jnp) -> tuple[Any, Any]:
    """`fitbase.huber` on JAX arrays by default (the objectives here are traced)."""
    return fitbase.huber(r, delta, xp)


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


def _direction(g, x, sh, yh, rho, box) -> tuple[jax.Array, jax.Array]:
    """L-BFGS direction -H g by the two-loop recursion restricted to the free coordinates (those no bound
    blocks: the reduced quasi-Newton step of Kim, Sra and Dhillon 2010); projected steepest descent when
    that is not a descent direction."""
    m = rho.shape[1]
    free = ~blocked(x, g, box)
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
    conv = ok & (jnp.max(jnp.abs(jnp.where(blocked(x, g, box), 0.0, g)), -1) <= gtol)
    stalled = ok & jnp.isfinite(st.f) & (st.f - fn <= ftol * jnp.abs(st.f))
    dead = (give_up & ~had_memory) | (fail & ~jnp.isfinite(st.f)) | (st.evals + 1 >= max_evals)
    return _State(
        x=x, f=f, g=g, p=jnp.where(fresh[:, None], p_new, st.p),
        t=jnp.where(fresh, 1.0, jnp.where(fail, t_new, st.t)), gp=jnp.where(fresh, gp_new, st.gp),
        sh=sh, yh=yh, rho=rho, nls=jnp.where(give_up, 0, nls), active=act & ~conv & ~stalled & ~dead,
        converged=st.converged | conv, evals=st.evals + act.astype(jnp.int32),
    )  # fmt: skip


@partial(jit, static_argnames=("vg", "iters", "max_ls"))
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
        """(len(starts), P) weights of the given starts."""
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


def _pool_size(S: int, n_points: int, pool_size: int) -> int:
    """Rows of a pool: at most `pool_size`, `ELEMENT_BUDGET` // n_points and S rounded up, a power of two (so that
    fits with similar numbers of starts share compiled shapes)."""
    size = 1 << int(math.log2(max(1, min(pool_size, ELEMENT_BUDGET // max(n_points, 1)))))
    return min(size, 1 << math.ceil(math.log2(S)))


def _fill(pool: dict[str, np.ndarray], slots: np.ndarray, x0: np.ndarray, queued: int) -> int:
    """Load the next queued starts of x0 into the pool's free rows; returns how many are now queued."""
    free = np.flatnonzero(slots < 0)[: len(x0) - queued]
    if free.size:
        _load(pool, free, x0[queued : queued + free.size])
        slots[free] = np.arange(queued, queued + free.size)
    return queued + free.size


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
    size = _pool_size(S, n_points, pool_size)
    pool, slots = _empty_pool(size, k), np.full(size, -1)
    out = {"x": np.clip(np.array(x0, np.float64), box[0], box[1]), "f": np.full(S, np.inf), "g": np.zeros((S, k)),
           "converged": np.zeros(S, bool), "evals": np.zeros(S, np.int32)}  # fmt: skip
    queued = 0
    with jax.enable_x64(True):
        cast = partial(jnp.asarray, dtype=dtype)
        data, jbox = tuple(cast(d) for d in data), cast(box)
        tols = cast(np.array([gtol, ftol, max_evals]))
        while True:
            queued = _fill(pool, slots, out["x"], queued)
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
                out["g"] = np.where(blocked(out["x"], out["g"], box), 0.0, out["g"])
                return out


# ---------------------------------------------------------------------------------------------------
# Minimising one problem from many starts: screen, refine, finish on all points, polish.


class Problem(NamedTuple):
    """An objective, how to build its data for a set of points, and the box of its coordinates."""

    vg: Callable
    data_for: Callable[[FitPoints], tuple]
    box: np.ndarray  # (2, k)


def _subset(points: FitPoints, size: int, seed: int = 0) -> FitPoints | None:
    """A fixed random subset of `size` points (None when there are no more points than that)."""
    index = subset_index(len(points), size, seed)
    return (
        None if index is None else FitPoints(points.N[index], points.D[index], points.loss[index], points.group[index])
    )


def minimise(problem: Problem, points: FitPoints, starts: np.ndarray, max_evals: int,
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
            starts = screen["x"][distinct_best(screen["x"], screen["f"], REFINE_STARTS)]
        res = run(starts, sub_ones, sub_data, max_evals=max_evals)
        if sub is not None:
            res = run(res["x"][distinct_best(res["x"], res["f"], FINAL_STARTS)], ones, full, max_evals=max_evals)
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf)
    if not np.isfinite(f).any():
        raise UserError("no start gave a finite objective; check that the losses are sensible")
    best = polish(problem, points, res["x"][np.argmin(f)])
    return best, int(np.sum(f <= f.min() * (1 + 1e-9) + 1e-15))


@partial(jit, static_argnames=("vg",))
def _value_and_grad(u: jax.Array, w: jax.Array, data: tuple, vg: Callable) -> tuple[jax.Array, jax.Array]:
    f, g = vg(u[None], w, data)
    return f[0], g[0]


def evaluator(vg: Callable, data: tuple, w: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """x -> (objective, gradient) at one point, float64, points padded as in `batched_lbfgs`."""
    data, w = _pad_points(data, w)
    with jax.enable_x64(True):
        data, w = tuple(jnp.asarray(d, jnp.float64) for d in data), jnp.asarray(w, jnp.float64)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        with jax.enable_x64(True):
            f, g = _value_and_grad(jnp.asarray(x, jnp.float64), w, data, vg)
            return float(f), np.array(g)

    return fun


def evaluate(problem: Problem, points: FitPoints, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Objective and gradient at one point, float64, on all points."""
    return evaluator(problem.vg, problem.data_for(points), np.ones(len(points)))(u)


def polish(problem: Problem, points: FitPoints, u: np.ndarray) -> np.ndarray:
    """Continue the best start with scipy's L-BFGS-B (tight tolerances, same box) on all points."""
    fun = evaluator(problem.vg, problem.data_for(points), np.ones(len(points)))
    bounds = [(lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None) for lo, hi in problem.box.T]
    res = optimize.minimize(fun, u, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})  # fmt: skip
    return res.x if np.isfinite(res.fun) and res.fun <= fun(u)[0] else u
