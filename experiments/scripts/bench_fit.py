"""Benchmark: seconds and peak memory of our Approach 3 fit, against the paper's many-start L-BFGS, on Chinchilla's
real points and on synthetic points with known constants.

    python experiments/scripts/bench_fit.py [--sizes 10000 100000 1000000] [--repeats 5]

Each case runs in its own process, so its peak resident memory (`resource.getrusage`, ru_maxrss) is its own.

- Epoch's 240 points: Chinchilla's Figure-4 runs as extracted by Besiroglu et al. 2024 (arXiv 2404.10102;
  experiments/data/README.md), the 5 highest losses dropped as they did. Timed: the default fit (variable
  projection, scaling/projection.py: numpy only, nothing compiled), the method it replaced (L-BFGS from the
  paper's 4500 starts in JAX, screened: `grid=CHINCHILLA_GRID`) and every start run to convergence
  (`exhaustive=True`, the reference optimum), and 1000 bootstrap resamples of the default fit.
- Synthetic sets with known constants (Epoch's refit; N log-uniform 1e7..1e10, D 1e9..1e12, lognormal noise): the
  default fit's objective against the exhaustive one's.
- `--sizes`: synthetic sets of that many points, the default fit's seconds and memory.
- The whole command from a cold start: `smallest-loss fit --csv experiments/data/chinchilla_epoch_240.csv` in a
  fresh process (Python start-up, imports, reading, the fit, 1000 bootstrap resamples, the hold-outs by scale),
  and with `--bootstrap 0 --no-holdout`; no compilation cache (`SMALLEST_LOSS_XLA_CACHE=off`; the default fit
  compiles nothing anyway).

"first" is the first call in the process; "warm" the median of `--repeats` later calls.
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
from smallest_loss.scaling.bootstrap import bootstrap_chinchilla
from smallest_loss.scaling.chinchilla import CHINCHILLA_GRID, ChinchillaLaw, chinchilla_objective, fit_chinchilla
from smallest_loss.scaling.fitbase import DEFAULT_DELTA
from smallest_loss.scaling.laws import EPOCH_REPLICATION
from smallest_loss.scaling.points import FitPoints

EPOCH_CSV = Path(__file__).parents[1] / "data" / "chinchilla_svg_extracted_data.csv"
EPOCH_FIT_CSV = Path(__file__).parents[1] / "data" / "chinchilla_epoch_240.csv"  # the same 240 points as a fit CSV
VPNLS = "vpnls (Open-Athena, variable projection): 124 Chinchilla points in 0.106 s, 16x faster than apple/ml-scalefit"


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


SYNTHETIC = (("240 points, 1% noise", 240, 0.01, 0), ("60 points, 0.3% noise", 60, 0.003, 1),
             ("30 points, 3% noise", 30, 0.03, 2))  # fmt: skip


def run_case(case: str, repeats: int) -> dict:
    """One case, in this process: 'epoch', 'known' (the synthetic sets) or a number of synthetic points."""
    if case == "epoch":
        points = epoch_points()
        out = dict(case="Epoch's 240 real points", fast=_timed(points, repeats))
        out["lbfgs"] = _timed(points, 1, grid=CHINCHILLA_GRID)
        out["exhaustive"] = _timed(points, 0, exhaustive=True)
        out["epoch_refit_objective"] = chinchilla_objective(_params(EPOCH_REPLICATION), points, DEFAULT_DELTA)[0]
        fit = fit_chinchilla(points)
        seconds = []
        for _ in range(max(repeats, 1)):
            start = time.perf_counter()
            boot = bootstrap_chinchilla(points, n_boot=1000, fit=fit)
            seconds.append(time.perf_counter() - start)
        out["bootstrap"] = dict(seconds=statistics.median(seconds), converged=boot.n_converged)
    elif case == "known":
        out = dict(case="known constants", sets=[])
        for name, n, noise, seed in SYNTHETIC:
            points = synthetic_points(n, seed=seed, noise=noise)
            out["sets"].append(
                dict(name=name, fast=_timed(points, repeats), exhaustive=_timed(points, 0, exhaustive=True))
            )
    else:
        points = synthetic_points(int(case), seed=0)
        out = dict(case=f"{int(case)} synthetic points", fast=_timed(points, repeats if int(case) < 10**6 else 1))
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def time_command(extra: list[str], repeats: int) -> float:
    """Median wall-clock seconds of `smallest-loss fit --csv` on Epoch's 240 points in a fresh process."""
    exe = Path(sys.executable).parent / "smallest-loss"
    cmd = [str(exe) if exe.exists() else "smallest-loss", "fit", "--csv", str(EPOCH_FIT_CSV), *extra]
    env = dict(os.environ, SMALLEST_LOSS_XLA_CACHE="off")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


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


def _rel(a: float, b: float) -> str:
    return f"{(a - b) / b:+.1e}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=5, help="warm calls timed after the first")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run one case in this process, print JSON
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_case(args.one, args.repeats)))
        return
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; Huber delta 1e-3\n")
    epoch = _spawn("epoch", args.repeats)
    fast, lbfgs, ex = epoch["fast"], epoch["lbfgs"], epoch["exhaustive"]
    print("| Epoch's 240 points | first call s | warm s (median) | objective | relative to exhaustive |")
    print("|---|---|---|---|---|")
    for name, r in (("variable projection (default)", fast), ("L-BFGS, 4500 starts screened (before)", lbfgs),
                    ("L-BFGS, 4500 starts to convergence", ex)):  # fmt: skip
        warm = f"{r['warm']:.3f}" if r["warm"] is not None else "-"
        print(
            f"| {name} | {r['first']:.3f} | {warm} | {r['objective']:.12g} | {_rel(r['objective'], ex['objective'])} |"
        )
    print(f"\ndefault law: {_law_text(fast['law'])} ({fast['form']}); Epoch's published refit "
          f"({_law_text(_constants(EPOCH_REPLICATION))}) scores {epoch['epoch_refit_objective']:.10g}")  # fmt: skip
    boot = epoch["bootstrap"]
    print(
        f"1000 bootstrap resamples of the default fit: {boot['seconds']:.2f} s (median), {boot['converged']} converged"
    )
    print(f"peak RSS of that process: {epoch['peak_rss_mib']:.0f} MiB\n")
    known = _spawn("known", args.repeats)
    print("| known constants | default s (warm) | default objective | exhaustive s | relative difference |")
    print("|---|---|---|---|---|")
    for one in known["sets"]:
        f, e = one["fast"], one["exhaustive"]
        print(
            f"| {one['name']} | {f['warm']:.3f} | {f['objective']:.12g} | {e['first']:.1f} | "
            f"{_rel(f['objective'], e['objective'])} |"
        )
    print("\n| synthetic points | first call s | warm s (median) | peak RSS MiB | law (form) |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        r = _spawn(str(size), args.repeats)
        warm = f"{r['fast']['warm']:.2f}" if r["fast"]["warm"] is not None else "-"
        print(
            f"| {size} | {r['fast']['first']:.2f} | {warm} | {r['peak_rss_mib']:.0f} | "
            f"{_law_text(r['fast']['law'])} ({r['fast']['form']}) |"
        )
    cold, bare = time_command([], 3), time_command(["--bootstrap", "0", "--no-holdout"], 3)
    print(
        f"\nsmallest-loss fit --csv {EPOCH_FIT_CSV.name}, cold process, median of 3: {cold:.2f} s "
        f"(1000 bootstrap resamples and the hold-outs by scale); {bare:.2f} s with --bootstrap 0 --no-holdout"
    )
    print(f"published beside it: {VPNLS}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
