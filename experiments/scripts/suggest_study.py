"""Simulation: does following `suggest` shrink the interval predicted at a target more than spending the same
compute on one more IsoFLOP budget?

    python experiments/scripts/suggest_study.py [--reps 12] [--seed 0]

For each law with known constants (this CPU's, fitted to results/cpu/scaling/runs.csv, and Epoch's refit of
Chinchilla, Besiroglu et al. 2024, arXiv 2404.10102: E 1.82, A 482, B 2085, alpha 0.348, beta 0.366) and each
replication: a first sweep of three IsoFLOP budgets a factor 3 apart with five sizes each (a factor 10 apart, around
the true optimum), 1% lognormal noise on every loss; the target is 100x the largest budget; the compute left is one
more IsoFLOP budget of five runs at 3x the largest. The two arms spend it:

- isoflop: that budget, five sizes around the optimum the first fit predicts for it (as a user would add it);
- suggest: `suggest_runs(points, target, spend, runs=5)` from the first fit.

Each arm's runs get the same kind of noise; the law is refitted with 200 bootstrap resamples. Reported: the median
over replications of the 95% bootstrap interval's half-width (relative) of the compute-optimal loss and of N_opt at
the target, the median |error| of each against the truth, and how often the refit identifies the full law.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
from smallest_loss.scaling.bootstrap import bootstrap_chinchilla
from smallest_loss.scaling.chinchilla import ChinchillaLaw, fit_chinchilla
from smallest_loss.scaling.design import design_widths, suggest_runs
from smallest_loss.scaling.fitting import read_table
from smallest_loss.scaling.points import FitPoints

ROOT = Path(__file__).resolve().parents[2]
NOISE = 0.01
EPOCH = ChinchillaLaw(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366)


def laws() -> dict[str, tuple[ChinchillaLaw, float]]:
    """Each law and its first sweep's smallest budget (FLOPs)."""
    cpu = fit_chinchilla(read_table(ROOT / "results" / "cpu" / "scaling" / "runs.csv")).law
    return {"this CPU's (results/cpu/scaling)": (cpu, 1e11), "Chinchilla (Epoch's refit)": (EPOCH, 1e18)}


def isoflop(law: ChinchillaLaw, budgets: list[float], sizes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    N = np.concatenate([law.optimal_allocation(C)[0] * np.geomspace(1 / math.sqrt(10), math.sqrt(10), sizes)
                        for C in budgets])  # fmt: skip
    return N, np.repeat(budgets, sizes) / (6 * N)


def observe(law: ChinchillaLaw, N: np.ndarray, D: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return law.loss(N, D) * np.exp(rng.normal(0.0, NOISE, len(N)))


def at_target(samples: dict[str, np.ndarray], C: float) -> tuple[np.ndarray, np.ndarray]:
    """Each bootstrap law's compute-optimal loss and N_opt at C (Hoffmann et al. 2022, eq. 4)."""
    E, A, B, a, b = (samples[k] for k in ("E", "A", "B", "alpha", "beta"))
    G = (a * A / (b * B)) ** (1 / (a + b))
    N = G * (C / 6) ** (b / (a + b))
    D = (C / 6) ** (a / (a + b)) / G
    return E + A / N**a + B / D**b, N


def score(law: ChinchillaLaw, points: FitPoints, target: float, seed: int) -> dict[str, float]:
    fit = fit_chinchilla(points)
    boot = bootstrap_chinchilla(points, n_boot=200, seed=seed, fit=fit)
    loss, nopt = at_target(boot.samples, target)
    true_N, true_D = law.optimal_allocation(target)
    pred_N, pred_D = fit.law.optimal_allocation(target)
    pred_L = fit.law.loss(pred_N, pred_D)
    half = lambda x, centre: (np.percentile(x, 97.5) - np.percentile(x, 2.5)) / 2 / centre  # noqa: E731
    return dict(loss_width=half(loss, pred_L), nopt_width=half(nopt, pred_N),
                loss_error=abs(pred_L / law.loss(true_N, true_D) - 1), nopt_error=abs(pred_N / true_N - 1),
                full=float(fit.form == "full"))  # fmt: skip


def replicate(law: ChinchillaLaw, smallest: float, seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    budgets = [smallest, 3 * smallest, 9 * smallest]
    N, D = isoflop(law, budgets)
    first = FitPoints(N, D, observe(law, N, D, rng))
    target, extra = 100 * budgets[-1], 3 * budgets[-1]
    spend = 5 * extra
    fit = fit_chinchilla(first)
    Nb = fit.law.optimal_allocation(extra)[0] * np.geomspace(1 / math.sqrt(10), math.sqrt(10), 5)
    Db = extra / (6 * Nb)
    design = suggest_runs(first, target, spend, runs=5, fit=fit)
    Ns, Ds = np.array([r.N for r in design.runs]), np.array([r.D for r in design.runs])
    out = {}
    for arm, (n, d) in (("isoflop", (Nb, Db)), ("suggest", (Ns, Ds))):
        points = FitPoints(np.append(N, n), np.append(D, d), np.append(first.loss, observe(law, n, d, rng)))
        out[arm] = score(law, points, target, seed)
        out[arm]["spent"] = float(np.sum(6 * n * d) / spend)
        out[arm]["linear_width"] = design_widths(first, target, n, d, fit=fit)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    begin = time.perf_counter()
    print(
        "| law | arm | loss: linearised half-width | bootstrap half-width | median error | 90th pct error | "
        "N_opt: bootstrap half-width | median error | 90th pct error | full law | compute used |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (law, smallest) in laws().items():
        results = [replicate(law, smallest, args.seed + r) for r in range(args.reps)]
        for arm in ("isoflop", "suggest"):
            med = {k: statistics.median(r[arm][k] for r in results) for k in results[0][arm]}
            p90 = {k: float(np.percentile([r[arm][k] for r in results], 90)) for k in ("loss_error", "nopt_error")}
            full = statistics.mean(r[arm]["full"] for r in results)
            print(f"| {name} | {arm} | {med['linear_width']:.2%} | {med['loss_width']:.2%} | {med['loss_error']:.2%} | "
                  f"{p90['loss_error']:.2%} | {med['nopt_width']:.1%} | {med['nopt_error']:.1%} | "
                  f"{p90['nopt_error']:.1%} | {full:.0%} | {med['spent']:.0%} |")  # fmt: skip
    print(f"\n{args.reps} replications per law, {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
    main()
