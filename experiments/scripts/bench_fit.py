"""Benchmark: seconds and peak memory of our Approach 3 fit, on Chinchilla's real points and synthetic ones.

    python experiments/scripts/bench_fit.py [--sizes 240 10000 100000 1000000] [--repeats 3]

Each case runs in its own process, so its peak resident memory (`resource.getrusage`, ru_maxrss) is its
own. Cases:

- Epoch's 240 points: Chinchilla's Figure-4 runs as extracted by Besiroglu et al. 2024 (arXiv
  2404.10102; experiments/data/README.md), the 5 highest losses dropped as they did. Our fast fit is
  checked against an exhaustive one (every one of the 4500 starts run to convergence) and against
  Epoch's refit (E = 1.82, A = 482, B = 2085, alpha = 0.348, beta = 0.366).
- synthetic points from Epoch's constants (N log-uniform in 1e7..1e10, D in 1e9..1e12, 1% lognormal
  noise) at each of `--sizes`.

"first" includes jit compilation; "warm" is the median of `--repeats` later calls in the same process.
When the `chinchilla` package (kyo-takano) is installed, its fit of the 240 synthetic points is timed
too (one scipy BFGS per start, finite differences; its objective is the mean of ours, same minimiser).
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from smallest_loss.scaling.chinchilla import CHINCHILLA_GRID, ChinchillaLaw, chinchilla_objective, fit_chinchilla
from smallest_loss.scaling.laws import EPOCH_REPLICATION
from smallest_loss.scaling.optimize import DEFAULT_DELTA
from smallest_loss.scaling.points import FitPoints

EPOCH_CSV = Path(__file__).parents[1] / "data" / "chinchilla_svg_extracted_data.csv"


def epoch_points(path: Path = EPOCH_CSV, drop_highest: int = 5) -> FitPoints:
    """Epoch's extraction of Chinchilla's runs: N = model size, D = training FLOP / (6 N), loss; the
    `drop_highest` highest losses dropped, as Besiroglu et al. 2024 did (245 points -> 240)."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-drop_highest]
    return FitPoints(N[keep], C[keep] / (6 * N[keep]), loss[keep])


def synthetic_points(n: int, seed: int, law: ChinchillaLaw = EPOCH_REPLICATION, noise: float = 0.01) -> FitPoints:
    """n points from `law` with multiplicative lognormal noise of relative size `noise`."""
    rng = np.random.default_rng(seed)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    return FitPoints(N, D, law.loss(N, D) * np.exp(rng.normal(0.0, noise, n)))


def _constants(law: ChinchillaLaw) -> dict[str, float]:
    return {k: getattr(law, k) for k in ("E", "A", "B", "alpha", "beta")}


def _timed(points: FitPoints, repeats: int, **kwargs) -> dict:
    """First call (with compile) and the median of `repeats` warm calls; the last result's law."""
    start = time.perf_counter()
    result = fit_chinchilla(points, **kwargs)
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fit_chinchilla(points, **kwargs)
        warm.append(time.perf_counter() - start)
    return dict(first=first, warm=statistics.median(warm) if warm else None, objective=result.objective,
                law=_constants(result.law), form=result.form, converged=result.converged)  # fmt: skip


def run_case(case: str, repeats: int) -> dict:
    """One case, in this process: 'epoch' or a number of synthetic points."""
    if case == "epoch":
        points = epoch_points()
        out = dict(case="Epoch's 240 real points", fast=_timed(points, repeats))
        out["exhaustive"] = _timed(points, 0, exhaustive=True)
        out["epoch_refit_objective"] = chinchilla_objective(_params(EPOCH_REPLICATION), points, DEFAULT_DELTA)[0]
    else:
        points = synthetic_points(int(case), seed=0)
        out = dict(case=f"{int(case)} synthetic points", fast=_timed(points, repeats if int(case) < 10**6 else 1))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _params(law: ChinchillaLaw) -> np.ndarray:
    return np.array([np.log(law.A), np.log(law.B), np.log(law.E), law.alpha, law.beta])


def time_chinchilla_package(points: FitPoints) -> tuple[float, np.ndarray]:
    """Fit with `chinchilla.Chinchilla` on the same grid and log-Huber loss; returns (seconds, params)."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    from chinchilla import Chinchilla
    from chinchilla._metrics import log_huber

    # Its fit unpacks the grid positionally as (e, a, b, alpha, beta); lower-case e means E = exp(e).
    grid = {name: tuple(CHINCHILLA_GRID[name]) for name in ("e", "a", "b", "alpha", "beta")}
    with tempfile.TemporaryDirectory() as folder:
        cc = Chinchilla(project_dir=folder, param_grid=grid, loss_fn=functools.partial(log_huber, delta=DEFAULT_DELTA),
                        log_level=40)  # fmt: skip
        cc.database.df = pd.DataFrame({"C": 6 * points.N * points.D, "N": points.N, "D": points.D, "loss": points.loss})
        cc.visualizer.optim = lambda *args, **kwargs: None
        start = time.perf_counter()
        cc.fit(parallel=True)
        seconds = time.perf_counter() - start
        p = cc.get_params()
    return seconds, np.log([p["A"], p["B"], p["E"]]).tolist() + [p["alpha"], p["beta"]]


def _law_text(law: dict) -> str:
    return f"E={law['E']:.4f} A={law['A']:.1f} B={law['B']:.1f} alpha={law['alpha']:.4f} beta={law['beta']:.4f}"


def _print(result: dict) -> None:
    fast = result["fast"]
    warm = f"{fast['warm']:.2f}" if fast["warm"] is not None else "-"
    print(f"| {result['case']} | {fast['first']:.2f} | {warm} | {result['peak_rss_mib']:.0f} | "
          f"{fast['objective']:.10g} | {_law_text(fast['law'])} ({fast['form']}) |")  # fmt: skip


def _spawn(case: str, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--one", case, "--repeats", str(repeats)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[240, 10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="warm calls timed after the first")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one case in this process, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one, args.repeats)))
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; 4500-start grid, Huber delta 1e-3\n")
    print("| case | first call s (incl. compile) | warm s (median) | peak RSS MiB | objective | law (form) |")
    print("|---|---|---|---|---|---|")
    epoch = _spawn("epoch", args.repeats)
    _print(epoch)
    for size in args.sizes:
        _print(_spawn(str(size), args.repeats))
    exhaustive = epoch["exhaustive"]
    print(f"\nEpoch's points, exhaustive fit (all 4500 starts to convergence): {exhaustive['first']:.2f} s, objective "
          f"{exhaustive['objective']:.10g}, {_law_text(exhaustive['law'])}; fast minus exhaustive objective "
          f"{epoch['fast']['objective'] - exhaustive['objective']:+.2e}")  # fmt: skip
    print(f"Epoch's published refit ({_law_text(_constants(EPOCH_REPLICATION))}) scores "
          f"{epoch['epoch_refit_objective']:.10g} on the same objective")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    try:
        seconds, params = time_chinchilla_package(synthetic_points(240, seed=0))
    except ImportError:
        print("the chinchilla package is not installed: no comparison with it")
        return
    objective = chinchilla_objective(np.asarray(params), synthetic_points(240, seed=0), DEFAULT_DELTA)[0]
    print(f"chinchilla package on the 240 synthetic points: {seconds:.2f} s, objective {objective:.10g}")


if __name__ == "__main__":
    main()
