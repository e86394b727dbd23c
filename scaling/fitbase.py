"""What every loss-law fit shares, without JAX: the Huber loss, the default tolerances, the box test, start grids.

Every fit here (scaling/chinchilla.py, kaplan.py, aspect.py, groups.py) minimises a weighted sum of Huber losses
(Huber 1964; delta = 1e-3 as Hoffmann et al. 2022, sec. 3.3, eq. 3) between predicted and observed log losses.
The Chinchilla fit runs in numpy alone (scaling/projection.py), so that `smallest-loss fit` never loads JAX; the
other fits use the batched L-BFGS of scaling/optimize.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError

DEFAULT_DELTA = 1e-3  # the Huber loss's delta (Hoffmann et al. 2022)
GRAD_TOL = 1e-6  # convergence: max |projected gradient| in the fitted (centred) coordinates at the best,
# per 1000 points beyond the first 1000 (the objective is a sum over points, and so is its rounding)
BOUND_TOL = 1e-4  # a fitted coordinate within this fraction of its range from a bound is "at the bound"


def huber(r: Any, delta: Any, xp: Any = np) -> tuple[Any, Any]:
    """Huber loss of residuals r and its slope (Huber 1964; Hoffmann et al. 2022 use delta = 1e-3)."""
    ar = xp.abs(r)
    return xp.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta)), xp.clip(r, -delta, delta)


def blocked(x: Any, g: Any, box: Any) -> Any:
    """Coordinates at a bound whose gradient pushes them out of the box: they stay put."""
    return ((x <= box[0]) & (g > 0)) | ((x >= box[1]) & (g < 0))


def scaled_tol(grad_tol: float, n_points: int) -> float:
    """The gradient tolerance for a sum over n points (see `GRAD_TOL`)."""
    return grad_tol * max(1.0, n_points / 1000)


def grid_starts(grid: dict[str, Any] | None, default: dict[str, tuple[float, ...]]) -> tuple[np.ndarray, dict]:
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


def subset_index(n: int, size: int, seed: int = 0) -> np.ndarray | None:
    """Sorted indices of a fixed random subset of `size` of n points (None when there are no more than that)."""
    if n <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def distinct_best(x: np.ndarray, f: np.ndarray, count: int) -> np.ndarray:
    """Rows of the `count` best distinct optima (rows closer than 1e-6 in every coordinate are one)."""
    chosen: list[int] = []
    for i in np.argsort(np.where(np.isfinite(f), f, np.inf)):
        if all(np.max(np.abs(x[i] - x[j])) > 1e-6 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == count:
            break
    return np.array(chosen, dtype=int)
