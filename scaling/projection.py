"""Chinchilla Approach 3 by variable projection, in numpy: a grid over the exponents, the linear constants solved
exactly at each grid point, then a batched projected Newton polish of the best grid points on the Huber objective.

For fixed exponents (alpha, beta) the law L = E + A'/exp(alpha xN) + B'/exp(beta xD) (centred coordinates,
scaling/chinchilla.py) is linear in (A', B', E). Each grid point's constants are the bounded least-squares fit of
the relative errors (pred - L)/L (first order in log pred - log L, the Huber objective's residual), solved exactly
within the box by enumerating which constants sit at a bound (3^3 faces of a 3-dimensional box; the optimum of a
convex quadratic is the best feasible face solution). This is variable projection (Golub and Pereyra 1973), as
Open-Athena's `vpnls` fits the same law. The grid's local minima, ranked by the Huber objective itself, start a
batched projected Newton method (Bertsekas 1982): exact Hessian of the Huber objective, eigenvalues replaced by
their absolute values (floored), bounds blocking the coordinates they hold, Armijo backtracking along the
projected arc. Every start runs at once on numpy arrays, as do the bootstrap's resamples (scaling/bootstrap.py).

A form (full law, E fixed, beta tied to alpha: scaling/chinchilla.py's `ChinchillaForm`) maps its free coordinates
u to z = z0 + M u; the grid covers the form's exponents (alpha and beta, or alpha alone when beta is tied), and the
fixed E is held in the linear solve.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.fitbase import blocked, distinct_best, huber, scaled_tol, subset_index
from smallest_loss.scaling.points import FitPoints

GRID_SIZE = 41  # exponent values over the box, per free exponent
GRID_POINTS = 4096  # the grid stage runs on a fixed random subset of at most this many points
POLISH_STARTS = 16  # grid local minima polished by Newton
FINAL_STARTS = 4  # with a subset, the best distinct optima finished on all points
ELEMENTS = 1 << 21  # start-point pairs evaluated at once (memory: about 100 bytes each)
MAX_ITERS = 200
POLISH_TOL = 1e-4  # the fit's starts run on to this fraction of the gradient tolerance (or until f stops falling)
_ARMIJO = 1e-4


@dataclass(frozen=True)
class Data:
    """Centred log N and log D, log loss, the Huber delta, and a form's map z = z0 + M u with its box."""

    xN: np.ndarray
    xD: np.ndarray
    logL: np.ndarray
    delta: float
    M: np.ndarray
    z0: np.ndarray
    box: np.ndarray

    def take(self, index: np.ndarray) -> Data:
        return Data(self.xN[index], self.xD[index], self.logL[index], self.delta, self.M, self.z0, self.box)


def make_data(points: FitPoints, mu: tuple[float, float], delta: float, M: np.ndarray, z0: np.ndarray,
              box: np.ndarray) -> Data:  # fmt: skip
    return Data(np.log(points.N) - mu[0], np.log(points.D) - mu[1], np.log(points.loss), float(delta), M, z0, box)


# ---------------------------------------------------------------------------------------------------
# The objective, its gradient and its Hessian for a batch of parameter vectors.


def _terms(u: np.ndarray, d: Data) -> tuple[np.ndarray, ...]:
    z = d.z0 + u @ d.M.T
    a, b, e, alpha, beta = (z[:, i : i + 1] for i in range(5))
    with np.errstate(over="ignore", invalid="ignore"):
        t1, t2 = np.exp(a - alpha * d.xN), np.exp(b - beta * d.xD)
        t3 = np.broadcast_to(np.exp(e), t1.shape)
        pred = t1 + t2 + t3
        return t1, t2, t3, pred, np.log(pred) - d.logL


def objective(u: np.ndarray, w: np.ndarray, d: Data) -> np.ndarray:
    """(S,) weighted Huber objective of the starts u (S, 5); w is (P,) or (S, P)."""
    *_, r = _terms(u, d)
    h, _ = huber(r, d.delta)
    return np.sum(w * h, axis=-1)


def derivatives(u: np.ndarray, w: np.ndarray, d: Data,
                hessian: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:  # fmt: skip
    """Objective (S,), gradient (S, 5) and Hessian (S, 5, 5) in u.

    With J = grad log pred = G / pred (G = grad pred) and psi the Huber slope, the Hessian in z is
    sum w [(h'' - psi) J J^T + psi / pred * hess pred]; hess pred has t1 on (a, a), -xN t1 on (a, alpha),
    xN^2 t1 on (alpha, alpha), the same for (b, beta) with t2, and t3 on (e, e).
    """
    t1, t2, t3, pred, r = _terms(u, d)
    h, psi = huber(r, d.delta)
    f = np.sum(w * h, axis=-1)
    inv = 1.0 / pred
    Jt = np.empty((len(u), 5, pred.shape[-1]))  # grad log pred, coordinates first (batched matmuls below)
    np.multiply(t1, inv, out=Jt[:, 0])
    np.multiply(t2, inv, out=Jt[:, 1])
    np.multiply(t3, inv, out=Jt[:, 2])
    np.multiply(Jt[:, 0], -d.xN, out=Jt[:, 3])
    np.multiply(Jt[:, 1], -d.xD, out=Jt[:, 4])
    wpsi = w * psi
    g = np.matmul(Jt, wpsi[:, :, None])[:, :, 0] @ d.M
    if not hessian:
        return f, g, None
    c = np.where(np.abs(r) <= d.delta, w, 0.0) - wpsi
    H = np.matmul(Jt * c[:, None, :], Jt.transpose(0, 2, 1))
    xN, xD = d.xN, d.xD
    q = wpsi * inv
    q1, q2 = q * t1, q * t2
    s1, s1x, s1xx = q1 @ np.ones_like(xN), q1 @ xN, q1 @ (xN * xN)
    s2, s2x, s2xx = q2 @ np.ones_like(xD), q2 @ xD, q2 @ (xD * xD)
    H[:, 0, 0] += s1
    H[:, 0, 3] -= s1x
    H[:, 3, 0] -= s1x
    H[:, 3, 3] += s1xx
    H[:, 1, 1] += s2
    H[:, 1, 4] -= s2x
    H[:, 4, 1] -= s2x
    H[:, 4, 4] += s2xx
    H[:, 2, 2] += (q * t3).sum(-1)
    return f, g, d.M.T @ H @ d.M


def _chunks(n_starts: int, n_points: int) -> list[slice]:
    size = max(1, ELEMENTS // max(n_points, 1))
    return [slice(i, min(i + size, n_starts)) for i in range(0, n_starts, size)]


def _weights_rows(w: np.ndarray, rows: slice) -> np.ndarray:
    return w[rows] if w.ndim == 2 else w


# ---------------------------------------------------------------------------------------------------
# Batched projected Newton.


def _fixed(box: np.ndarray) -> np.ndarray:
    return box[1] <= box[0]


def _direction(g: np.ndarray, H: np.ndarray, x: np.ndarray, box: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Newton direction on the coordinates no bound blocks, eigenvalues taken in absolute value (floored) plus the
    damping `mu` times the largest (Levenberg-Marquardt): always a descent direction, shorter and closer to the
    gradient's as `mu` grows."""
    held = blocked(x, g, box) | _fixed(box)
    free = (~held).astype(np.float64)
    Hf = H * free[:, :, None] * free[:, None, :] + np.eye(H.shape[-1]) * (1.0 - free)[:, :, None]
    lam, V = np.linalg.eigh(Hf)
    scale = np.maximum(np.max(np.abs(lam), axis=-1, keepdims=True), 1e-300)
    lam = np.maximum(np.abs(lam), 1e-10 * scale) + mu[:, None] * scale
    gf = g * free
    p = -np.einsum("sij,sj->si", V, np.einsum("sji,sj->si", V, gf) / lam)
    return p * free


def newton(u0: np.ndarray, w: np.ndarray, d: Data, gtol: float, max_iters: int = MAX_ITERS,
           stop_tol: float | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Minimise the weighted objective from every start u0 (S, 5) at once, within d.box.

    Returns x, f, g (projected: zero where a bound holds the coordinate), converged (max|projected g| <= gtol)
    and iterations per start. A start stops when max|projected g| <= stop_tol (default gtol), when a step
    lowers f by no more than 1e-15 |f| twice in a row, or when its line search fails.
    """
    out = {"x": np.clip(np.array(u0, np.float64), d.box[0], d.box[1])}
    S = len(u0)
    out.update(f=np.empty(S), g=np.empty((S, u0.shape[1])), converged=np.zeros(S, bool), iters=np.zeros(S, int))
    for rows in _chunks(S, len(d.logL)):
        res = _newton_batch(out["x"][rows], _weights_rows(w, rows), d, gtol if stop_tol is None else stop_tol,
                            max_iters)  # fmt: skip
        res["converged"] = np.max(np.abs(res["g"]), axis=-1) <= gtol
        for name, value in res.items():
            out[name][rows] = value
    return out


def _projected(g: np.ndarray, x: np.ndarray, box: np.ndarray) -> np.ndarray:
    return np.where(blocked(x, g, box) | _fixed(box), 0.0, g)


def _newton_batch(x: np.ndarray, w: np.ndarray, d: Data, gtol: float, max_iters: int) -> dict[str, np.ndarray]:
    S = len(x)
    f, g, H = derivatives(x, w, d)
    active = np.isfinite(f)
    stall, iters, mu = np.zeros(S, int), np.zeros(S, int), np.zeros(S)
    for _ in range(max_iters):
        pg = _projected(g, x, d.box)
        active &= np.max(np.abs(pg), axis=-1) > gtol
        if not active.any():
            break
        idx = np.flatnonzero(active)
        wi = _weights_rows(w, idx) if w.ndim == 2 else w
        p = _direction(g[idx], H[idx], x[idx], d.box, mu[idx])
        # The full step first, with its derivatives (Newton's step is mostly taken whole); backtrack the others.
        xt = np.clip(x[idx] + p, d.box[0], d.box[1])
        ft, gt, Ht = derivatives(xt, wi, d)
        whole = _armijo(ft, f[idx], g[idx], xt - x[idx])
        xn, fn, ok = xt, ft, whole.copy()
        back = np.flatnonzero(~whole)
        if back.size:
            wb = wi[back] if w.ndim == 2 else w
            xb, fb, okb = _line_search(x[idx[back]], f[idx[back]], g[idx[back]], p[back], wb, d, 0.5)
            xn[back], fn[back], ok[back] = xb, fb, okb
            redo = back[okb]
            if redo.size:
                ft[redo], gt[redo], Ht[redo] = derivatives(xn[redo], wi[redo] if w.ndim == 2 else w, d)
        # Levenberg-Marquardt damping: relaxed after a whole step, raised after a shortened or failed one.
        mu[idx] = np.where(whole, mu[idx] / 4, np.maximum(mu[idx] * 8, 1e-6))
        small = ok & (f[idx] - fn <= 1e-15 * np.abs(f[idx]))
        stall[idx] = np.where(small, stall[idx] + 1, 0)
        x[idx[ok]], f[idx[ok]], g[idx[ok]], H[idx[ok]] = xn[ok], ft[ok], gt[ok], Ht[ok]
        iters[idx] += 1
        active &= (stall < 3) & (mu < 1e6)
    pg = _projected(g, x, d.box)
    return {"x": x, "f": f, "g": pg, "converged": np.max(np.abs(pg), axis=-1) <= gtol, "iters": iters}


def _armijo(ft: np.ndarray, f: np.ndarray, g: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Sufficient decrease along a projected step (Armijo's rule)."""
    return np.isfinite(ft) & (ft <= f + _ARMIJO * np.minimum(np.sum(g * step, -1), 0.0))


def _line_search(x: np.ndarray, f: np.ndarray, g: np.ndarray, p: np.ndarray, w: np.ndarray, d: Data,
                 t0: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Armijo backtracking along the projected arc clip(x + t p) from t = t0: the accepted points, values and which
    accepted."""
    t = np.full(len(x), t0)
    xn, fn = x.copy(), f.copy()
    todo = np.ones(len(x), bool)
    for _ in range(40):
        i = np.flatnonzero(todo)
        if not i.size:
            break
        xt = np.clip(x[i] + t[i, None] * p[i], d.box[0], d.box[1])
        ft = objective(xt, w[i] if w.ndim == 2 else w, d)
        good = _armijo(ft, f[i], g[i], xt - x[i])
        xn[i[good]], fn[i[good]] = xt[good], ft[good]
        todo[i[good]] = False
        t[i[~good]] *= 0.5
    return xn, fn, ~todo


# ---------------------------------------------------------------------------------------------------
# The grid stage: exponents on a grid, the linear constants solved within the box.


def _exponent_pairs(d: Data) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(alpha, beta) of every grid point, and the grid's shape (for its local minima)."""
    lo, hi = d.box[0, 3], d.box[1, 3]
    alphas = np.linspace(lo, hi, GRID_SIZE) if hi > lo else np.array([lo])
    if d.M[4, 4]:  # beta free
        betas = np.linspace(d.box[0, 4], d.box[1, 4], GRID_SIZE)
        A, B = np.meshgrid(alphas, betas, indexing="ij")
        return A.ravel(), B.ravel(), (len(alphas), len(betas))
    return alphas, d.z0[4] + d.M[4, 3] * alphas, (len(alphas),)  # beta tied: beta = ratio * alpha


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross products of (K, 3) arrays."""
    return np.column_stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                            a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]])  # fmt: skip


def _solve3(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solutions of K 3x3 systems by their adjugates (columns of A^-1 are cross products of A's rows); nan where
    a system is singular. Far faster than a LAPACK call per system for thousands of them."""
    r0, r1, r2 = A[:, 0], A[:, 1], A[:, 2]
    c0, c1, c2 = _cross(r1, r2), _cross(r2, r0), _cross(r0, r1)
    det = np.sum(r0 * c0, -1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (c0 * b[:, :1] + c1 * b[:, 1:2] + c2 * b[:, 2:]) / det


def _bounded_lsq(G: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """argmin c^T G c - 2 b^T c over lo <= c <= hi for every (K, 3, 3) G: the best feasible face solution."""
    K, m = b.shape
    best, best_q = np.tile(lo, (K, 1)), np.full(K, np.inf)
    G = G + 1e-12 * np.trace(G, axis1=1, axis2=2)[:, None, None] * np.eye(m)  # a ridge against singular faces
    slack = 1e-9 * (hi - lo)
    rows = np.arange(K)
    for status in itertools.product((0, 1, 2), repeat=m):  # all free first: where feasible, it is the optimum
        held = np.array([s > 0 for s in status])
        value = np.array([(0.0, lo[j], hi[j])[s] for j, s in enumerate(status)])
        Gr, br = G[rows], b[rows]
        c = np.where(held, value, _solve3(np.where(held[:, None], np.eye(m), Gr), np.where(held, value, br)))
        with np.errstate(invalid="ignore"):
            ok = np.all((c >= lo - slack) & (c <= hi + slack), axis=1)
        c = np.clip(c, lo, hi)
        q = np.einsum("ki,kij,kj->k", c, Gr, c) - 2 * np.sum(br * c, 1)
        better = ok & (q < best_q[rows])
        best[rows[better]], best_q[rows[better]] = c[better], q[better]
        if not any(status):
            rows = rows[~ok]
            if not rows.size:
                break
    return best


def _design(values: np.ndarray, x: np.ndarray, inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp(-value * x) / L for each distinct value (rows), and each value's row."""
    distinct, row = np.unique(values, return_inverse=True)
    return np.exp(-distinct[:, None] * x) * inv, row


def grid_stage(d: Data) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Every grid point's u (K, 5) with its constants solved, its Huber objective (K,), and the grid's shape.

    The design of the relative errors pred / L - 1 has columns phi1 = exp(-alpha xN) / L (for A'), phi2 (for B')
    and 1 / L (for E); its Gram matrix is built from the distinct exponents' columns (matrix products)."""
    alpha, beta, shape = _exponent_pairs(d)
    inv = np.exp(-d.logL)
    (p1, i1), (p2, i2) = _design(alpha, d.xN, inv), _design(beta, d.xD, inv)
    E = 0.0 if d.M[2, 2] else math.exp(d.z0[2])
    target = 1.0 - E * inv
    G = np.empty((len(alpha), 3, 3))
    G[:, 0, 0], G[:, 1, 1], G[:, 2, 2] = np.sum(p1 * p1, 1)[i1], np.sum(p2 * p2, 1)[i2], inv @ inv
    G[:, 0, 1] = G[:, 1, 0] = (p1 @ p2.T)[i1, i2]
    G[:, 0, 2] = G[:, 2, 0] = (p1 @ inv)[i1]
    G[:, 1, 2] = G[:, 2, 1] = (p2 @ inv)[i2]
    b = np.column_stack([(p1 @ target)[i1], (p2 @ target)[i2], np.full(len(alpha), inv @ target)])
    zlo, zhi = d.z0 + d.M @ d.box[0], d.z0 + d.M @ d.box[1]
    lo, hi = np.exp(np.minimum(zlo, zhi)[:3]), np.exp(np.maximum(zlo, zhi)[:3])
    if E:  # E held in the target: its coefficient is 0
        G[:, 2, :], G[:, :, 2], G[:, 2, 2], b[:, 2] = 0.0, 0.0, 1.0, 0.0
        lo[2] = hi[2] = 0.0
    c = _bounded_lsq(G, b, lo, hi)
    with np.errstate(divide="ignore"):
        r = np.log(c[:, :1] * p1[i1] + c[:, 1:2] * p2[i2] + (c[:, 2:] + E) * inv)  # log pred - log L
    f = np.sum(huber(r, d.delta)[0], axis=-1)
    z = np.column_stack([np.log(c[:, :2]), np.full(len(c), d.z0[2]), alpha, beta])
    if not E:
        z[:, 2] = np.log(c[:, 2])
    u = np.clip(np.linalg.lstsq(d.M, (z - d.z0).T, rcond=None)[0].T, d.box[0], d.box[1])
    return u, f, shape


def local_minima(f: np.ndarray, shape: tuple[int, ...], count: int) -> np.ndarray:
    """Indices of the `count` best grid points that no neighbour (8 in 2-D, 2 in 1-D) beats, best first."""
    grid = np.where(np.isfinite(f), f, np.inf).reshape(shape)
    padded = np.pad(grid, 1, constant_values=np.inf)
    is_min = np.ones(shape, bool)
    for shift in itertools.product((-1, 0, 1), repeat=len(shape)):
        if any(shift):
            view = tuple(slice(1 + s, 1 + s + n) for s, n in zip(shift, shape, strict=True))
            is_min &= grid <= padded[view]
    minima = np.flatnonzero(is_min.ravel() & np.isfinite(grid.ravel()))
    order = minima[np.argsort(grid.ravel()[minima])]
    return order[:count] if order.size else np.argsort(grid.ravel())[:1]


# ---------------------------------------------------------------------------------------------------
# One form from the grid and any earlier optima: the best point and how many starts reached it.


def minimise_form(d: Data, extra: np.ndarray, grad_tol: float) -> tuple[np.ndarray, int]:
    """The best u of the form over the grid's local minima and the `extra` starts (E, 5), and how many of the
    polished starts reached it (within 1e-9 relative)."""
    n = len(d.logL)
    sub = subset_index(n, GRID_POINTS)
    ds = d if sub is None else d.take(sub)
    u, f, shape = grid_stage(ds)
    starts = np.vstack([u[local_minima(f, shape, POLISH_STARTS)], extra])
    tol = scaled_tol(grad_tol, len(ds.logL))
    res = newton(starts, np.ones(len(ds.logL)), ds, tol, stop_tol=POLISH_TOL * tol)
    if sub is not None:
        keep = distinct_best(res["x"], res["f"], FINAL_STARTS)
        res = newton(res["x"][keep], np.ones(n), d, scaled_tol(grad_tol, n), stop_tol=POLISH_TOL * tol)
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf)
    if not np.isfinite(f).any():
        raise UserError("no start gave a finite objective; check that the losses are sensible")
    return res["x"][np.argmin(f)], int(np.sum(f <= f.min() * (1 + 1e-9) + 1e-15))
