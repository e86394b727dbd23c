"""Benchmark: our batched Approach 3 fit against the `chinchilla` package (kyo-takano, 0.2.0).

    python experiments/bench_fit.py [--points 240] [--seed 0] [--chinchilla-dtype both]

Both fit the same synthetic points (Epoch constants, Besiroglu et al. 2024; N log-uniform in 1e7..1e10,
D in 1e9..1e12, multiplicative lognormal noise) with the same objective (Huber, delta 1e-3, on
log-loss residuals of the LSE form) from the same 4500-start Chinchilla grid. What each does:

- ours (`scaling.fit.fit_chinchilla`): all starts in one batched L-BFGS, jitted JAX, float64, analytic
  gradients, a pool of 1024 starts refilled as starts finish; then scipy L-BFGS-B polishes the best.
- chinchilla 0.2.0 (`Chinchilla.fit`): one scipy BFGS per start with finite-difference gradients,
  objective in long double (its default; `double` is its faster "agile testing" mode), starts spread
  over `os.cpu_count()` worker processes; its objective is the mean (ours the sum) of the same Huber
  terms, so the minimiser is the same. Its end-of-fit plot is switched off so only fitting is timed.

Both final parameter sets are scored with OUR objective (sum of Huber terms), so they are comparable.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time

import numpy as np
from smallest_loss.scaling.fit import CHINCHILLA_GRID, DEFAULT_DELTA, chinchilla_objective, fit_chinchilla
from smallest_loss.scaling.laws import EPOCH_REPLICATION, ChinchillaLaw
from smallest_loss.scaling.points import FitPoints


def synthetic_points(n: int, seed: int, law: ChinchillaLaw = EPOCH_REPLICATION, noise: float = 0.01) -> FitPoints:
    """n points from `law` with multiplicative lognormal noise of relative size `noise`."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    return FitPoints(N, D, law.loss(N, D) * np.exp(rng.normal(0.0, noise, n)))


def time_ours(points: FitPoints, repeats: int) -> tuple[float, list[float], np.ndarray]:
    """(first-call seconds incl. jit compile, later-call seconds, fitted (a, b, e, alpha, beta))."""
    start = time.perf_counter()
    result = fit_chinchilla(points, DEFAULT_DELTA)
    first = time.perf_counter() - start
    later = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fit_chinchilla(points, DEFAULT_DELTA)
        later.append(time.perf_counter() - start)
    return first, later, result.params


def time_chinchilla_package(points: FitPoints, dtype: str) -> tuple[float, np.ndarray]:
    """Fit with `chinchilla.Chinchilla` on the same grid and log-Huber loss; returns (seconds, params)."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    from chinchilla import Chinchilla, core
    from chinchilla._metrics import log_huber

    core.DTYPE = np.longdouble if dtype == "longdouble" else np.double
    # Its fit unpacks the grid positionally as (e, a, b, alpha, beta); lower-case e means E = exp(e).
    grid = {name: tuple(CHINCHILLA_GRID[name]) for name in ("e", "a", "b", "alpha", "beta")}
    with tempfile.TemporaryDirectory() as folder:
        cc = Chinchilla(
            project_dir=folder, param_grid=grid, loss_fn=functools.partial(log_huber, delta=DEFAULT_DELTA),
            log_level=40,
        )  # fmt: skip
        cc.database.df = pd.DataFrame({"C": 6 * points.N * points.D, "N": points.N, "D": points.D, "loss": points.loss})
        cc.visualizer.optim = lambda *args, **kwargs: None
        start = time.perf_counter()
        cc.fit(parallel=True)
        seconds = time.perf_counter() - start
        p = cc.get_params()
    return seconds, np.log([p["A"], p["B"], p["E"]]).tolist() + [p["alpha"], p["beta"]]


def _row(name: str, seconds: float | None, params: np.ndarray, points: FitPoints) -> str:
    a, b, e, alpha, beta = params
    objective = chinchilla_objective(np.asarray(params), points, DEFAULT_DELTA)[0]
    time_text = f"{seconds:9.2f}" if seconds is not None else " " * 9
    return (f"{name:<31}{time_text}  {objective:.10e}  {np.exp(e):8.4f} {np.exp(a):9.2f} {np.exp(b):9.1f}"
            f"  {alpha:.4f}  {beta:.4f}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.01, help="relative lognormal noise on the loss")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours after the first")
    parser.add_argument("--chinchilla-dtype", choices=("longdouble", "double", "both", "none"), default="both")
    args = parser.parse_args(argv)
    points = synthetic_points(args.points, args.seed, noise=args.noise)
    truth = EPOCH_REPLICATION
    print(f"{args.points} points, seed {args.seed}, noise {args.noise:.1%}, 4500-start grid, Huber delta 1e-3; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    # The package forks worker processes: run it before JAX starts its threads.
    dtypes = {"both": ["longdouble", "double"], "none": []}.get(args.chinchilla_dtype, [args.chinchilla_dtype])
    theirs = {dtype: time_chinchilla_package(points, dtype) for dtype in dtypes}
    first, later, ours = time_ours(points, args.repeats)
    median = statistics.median(later)
    print(f"{'method':<31}{'seconds':>9}  {'objective (ours)':<16}  {'E':>8} {'A':>9} {'B':>9}  alpha   beta")
    print(_row("truth (Epoch 2024)", None, np.log([truth.A, truth.B, truth.E]).tolist() + [truth.alpha, truth.beta],
               points))  # fmt: skip
    print(_row("ours, first call (compile)", first, ours, points))
    print(_row(f"ours, median of {len(later)}", median, ours, points))
    for dtype, (seconds, params) in theirs.items():
        print(_row(f"chinchilla 0.2.0 ({dtype})", seconds, params, points))
    ours_objective = chinchilla_objective(ours, points, DEFAULT_DELTA)[0]
    print(f"ours later calls: {', '.join(f'{s:.2f}' for s in later)} s; load average now {os.getloadavg()[0]:.2f}")
    for dtype, (seconds, params) in theirs.items():
        diff = chinchilla_objective(np.asarray(params), points, DEFAULT_DELTA)[0] - ours_objective
        print(f"speed-up vs chinchilla ({dtype}): {seconds / median:.1f}x (median), {seconds / first:.1f}x "
              f"(first call incl. compile); their objective minus ours: {diff:+.3e}")  # fmt: skip


if __name__ == "__main__":
    main()
