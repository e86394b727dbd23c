"""How often do the law's 95% intervals contain the truth? A simulation with known constants (issue 24, item 2).

Laws: Epoch's refit of Chinchilla (Besiroglu et al. 2024: E=1.82, A=482, B=2085, alpha=0.348, beta=0.366) on
Chinchilla's budgets (6e18-3e21 FLOPs), and this CPU's fitted law (results/cpu/scaling/law.json) on its budgets
(1e11-2.7e12 FLOPs). Designs like real IsoFLOP sweeps: K budgets evenly spaced in log C, M runs per budget spread
over +-0.6 decades of N around a centre within 0.15 decades of the true N_opt; lognormal noise on every loss. Each
replicate fits all budgets (Approach 3, scaling/chinchilla.py), bootstraps it (scaling/bootstrap.py), and asks
whether each interval holds the truth: the five constants, the law's loss at the true optimum of the largest budget
and of 10x and 100x beyond it, a new run's loss there (the true loss times fresh noise), and N_opt there. BEFORE:
the plain percentile bootstrap; AFTER: scaling/intervals.py. With --records, writes every replicate (JSON lines)
and the factors that would make the pooled AFTER coverage exactly nominal. --hetero H makes the noise grow away from
N_opt (sigma (1 + H x^2), x in decades) and --misfit M adds a curvature the Chinchilla form lacks (the loss times
exp(M x^2)); a second table scores new runs at the optima and 0.5 decades off the optimum with one scatter for
every run (the first calibration) and with the current one (the scatter's profile and the check one budget up).

    python -m smallest_loss.experiments.scripts.coverage_study            # the default, a few minutes on 2 cores
    python -m smallest_loss.experiments.scripts.coverage_study --replicates 25 --bootstrap 200 --designs 3x5,5x7,9x5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from smallest_loss.scaling.bootstrap import bootstrap_chinchilla
from smallest_loss.scaling.chinchilla import ChinchillaLaw, fit_chinchilla
from smallest_loss.scaling.intervals import (
    CONSTANTS,
    LOG_CONSTANTS,
    calibrate,
    calibrated_bounds,
    constant_intervals,
    optimum_distance,
    prediction_interval,
    sample_log_loss,
    sample_n_opt,
)
from smallest_loss.scaling.laws import EPOCH_REPLICATION
from smallest_loss.scaling.points import FitPoints

CPU_LAW = ChinchillaLaw(E=0.4013, A=14.54, B=212.4, alpha=0.2627, beta=0.4155)  # results/cpu/scaling/law.json
LAWS = {"chinchilla": (EPOCH_REPLICATION, (6e18, 3e21)), "cpu": (CPU_LAW, (1e11, 2.7e12))}
SPREAD = 0.6  # decades of N either side of a budget's centre
CENTRE_JITTER = 0.15  # decades between a budget's centre and the true N_opt
TARGETS = (1.0, 10.0, 100.0)  # prediction budgets, times the largest fitted one
OFF = (-0.5, 0.5)  # off-optimum new runs at the largest fitted budget: decades of N from the true N_opt
LEVEL = 0.95


def design(law: ChinchillaLaw, budgets: tuple[float, float], k: int, m: int, rng: np.random.Generator):
    """(N, D, C) of an IsoFLOP sweep: k budgets, m runs each around the (jittered) true optimum."""
    C = np.repeat(np.geomspace(*budgets, k), m)
    centre = np.repeat(law.optimal_allocation(np.geomspace(*budgets, k))[0]
                       * 10 ** (CENTRE_JITTER * rng.uniform(-1, 1, k)), m)  # fmt: skip
    N = centre * 10 ** np.tile(np.linspace(-SPREAD, SPREAD, m), k)
    return N, C / (6 * N), C


def _covered(truth: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[bool]:
    return [bool(x) for x in np.ravel((lo <= truth) & (truth <= hi))]


def _ratio(truth: np.ndarray, center: np.ndarray, lo: np.ndarray, hi: np.ndarray, log: bool | np.ndarray = True
           ) -> list[float]:  # fmt: skip
    """|truth - center| over the interval's half on truth's side (<= 1: covered), in log space where `log`."""
    f = lambda v: np.where(log, np.log(np.maximum(v, 1e-300)), v)  # noqa: E731
    t, c = f(np.asarray(truth, float)), f(np.asarray(center, float))
    side = np.where(t >= c, f(np.asarray(hi, float)) - c, c - f(np.asarray(lo, float)))
    return [float(x) for x in np.abs(t - c) / np.maximum(side, 1e-300)]


def truth(law: ChinchillaLaw, N: np.ndarray, D: np.ndarray, misfit: float) -> np.ndarray:
    """The simulated mean loss: the law times exp(misfit x^2), x the decades between N and the true N_opt at 6ND (a
    curvature of the IsoFLOP profiles that the Chinchilla form lacks; 0 on the optimum)."""
    return np.asarray(law.loss(N, D), float) * np.exp(misfit * optimum_distance(law, N, D) ** 2)


def noisy(law: ChinchillaLaw, N: np.ndarray, D: np.ndarray, noise: float, hetero: float, misfit: float,
          rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Losses with lognormal noise of sigma noise (1 + hetero x^2), x as in `truth`."""
    sigma = noise * (1 + hetero * optimum_distance(law, N, D) ** 2)
    return truth(law, N, D, misfit) * np.exp(sigma * rng.standard_normal(np.shape(N)))


def replicate(law: ChinchillaLaw, budgets: tuple[float, float], k: int, m: int, noise: float, n_boot: int,
              rng: np.random.Generator, hetero: float = 0.0, misfit: float = 0.0) -> dict:  # fmt: skip
    """One simulated sweep: fit, bootstrap, and every interval's verdict against the truth."""
    N, D, C = design(law, budgets, k, m, rng)
    points = FitPoints(N, D, noisy(law, N, D, noise, hetero, misfit, rng), C=C)
    fit = fit_chinchilla(points)
    boot = bootstrap_chinchilla(points, n_boot=n_boot, seed=int(rng.integers(2**31)), fit=fit)
    Ct = budgets[1] * np.array(TARGETS)
    Nt, Dt = law.optimal_allocation(Ct)
    mean_true = law.loss(Nt, Dt)
    new_true = noisy(law, Nt, Dt, noise, hetero, misfit, rng)
    after = prediction_interval(boot, Nt, Dt, points, LEVEL)
    consts = constant_intervals(boot, Ct, points, LEVEL)
    before_loss = np.exp(np.percentile(sample_log_loss(boot.samples, Nt, Dt), [2.5, 97.5], axis=0))
    before_nopt = np.percentile(sample_n_opt(boot.samples, Ct), [2.5, 97.5], axis=0)
    truth_c = np.array([getattr(law, c) for c in CONSTANTS])
    fitted_c = np.array([getattr(fit.law, c) for c in CONSTANTS])
    before_c = np.array([boot.intervals[c] for c in CONSTANTS]).T
    after_c = np.array([consts.intervals[c] for c in CONSTANTS]).T
    logs = np.array([c in LOG_CONSTANTS for c in CONSTANTS])
    return dict(
        form=fit.form, scatter=after.calibration.scatter, shape=after.calibration.shape,
        step_ratio=after.calibration.step_ratio,
        const_before=_covered(truth_c, *before_c), const_after=_covered(truth_c, *after_c),
        const_ratio=_ratio(truth_c, fitted_c, *after_c, log=logs),
        mean_before=_covered(mean_true, *before_loss), mean_after=_covered(mean_true, after.mean_low, after.mean_high),
        mean_ratio=_ratio(mean_true, after.predicted, after.mean_low, after.mean_high),
        new_before=_covered(new_true, *before_loss), new_after=_covered(new_true, after.low, after.high),
        new_ratio=_ratio(new_true, after.predicted, after.low, after.high),
        new_half_before=[float(x) for x in (before_loss[1] - before_loss[0]) / (2 * after.predicted)],
        new_half_after=[float(x) for x in after.half_width],
        new_error=[float(x) for x in np.abs(after.predicted / new_true - 1)],
        nopt_before=_covered(Nt, *before_nopt), nopt_after=_covered(Nt, consts.n_opt_low, consts.n_opt_high),
        nopt_ratio=_ratio(Nt, consts.n_opt, consts.n_opt_low, consts.n_opt_high),
        **versus_one_scatter(law, boot, points, np.concatenate([Nt, off_optimum(law, budgets[1])]), new_true,
                             (noise, hetero, misfit), rng),
    )  # fmt: skip


def off_optimum(law: ChinchillaLaw, C: float) -> np.ndarray:
    """N of the off-optimum new runs at budget C (`OFF` decades from the true N_opt)."""
    return float(law.optimal_allocation(C)[0]) * 10 ** np.array(OFF)


def versus_one_scatter(law: ChinchillaLaw, boot, points: FitPoints, Nq: np.ndarray, new_true: np.ndarray,
                       noise: tuple[float, float, float], rng: np.random.Generator) -> dict:  # fmt: skip
    """New runs at the targets' optima (`new_true`, already drawn) and off the optimum at the largest fitted budget
    (`OFF`), against the calibrated interval with one scatter for every point (`one_`: the calibration before the
    scatter's profile and the check one budget up) and the current one (`cur_`)."""
    C = np.concatenate([points.budgets.max() * np.array(TARGETS), np.full(len(OFF), points.budgets.max())])
    D = C / (6 * Nq)
    off = noisy(law, Nq[len(TARGETS) :], D[len(TARGETS) :], *noise, rng)
    actual = np.concatenate([new_true, off])
    center = np.log(np.asarray(boot.fit.law.loss(Nq, D), float))
    draws = sample_log_loss(boot.samples, Nq, D)
    x = optimum_distance(boot.fit.law, Nq, D)
    out = dict(cmp_error=[float(v) for v in np.abs(np.exp(center) / actual - 1)])
    for tag, kw in (("one", dict(profile=False, step=False)), ("cur", {})):
        _, new = calibrated_bounds(center, draws, calibrate(boot.fit.law, points, boot.fit.form, **kw), LEVEL, x)
        out[tag + "_in"] = _covered(actual, *np.exp(new))
        out[tag + "_half"] = [float(v) for v in (np.exp(new[1]) - np.exp(new[0])) / (2 * np.exp(center))]
    return out


def _share(records: list[dict], key: str, target: int | None = None) -> float:
    """Share of True verdicts of `key` over the records (at target index `target`, else over all entries)."""
    if target is not None:
        return float(np.mean([r[key][target] for r in records]))
    return float(np.mean([v for r in records for v in r[key]]))


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def table_rows(setting: str, records: list[dict]) -> list[str]:
    """One markdown row per prediction target of a setting."""
    rows = []
    for t, times in enumerate(TARGETS):
        cells = [setting, f"{times:g}x", _pct(np.mean([r["form"] == "full" for r in records])),
                 f"{_pct(_share(records, 'const_before'))} / {_pct(_share(records, 'const_after'))}"]  # fmt: skip
        for key in ("mean", "new", "nopt"):
            cells.append(f"{_pct(_share(records, key + '_before', t))} / {_pct(_share(records, key + '_after', t))}")
        error = np.median([r["new_error"][t] for r in records])
        half = np.median([r["new_half_after"][t] for r in records])
        cells += [f"{100 * np.median([r['new_half_before'][t] for r in records]):.2f}%", f"{100 * half:.2f}%",
                  f"{100 * error:.2f}%", f"{half / error:.1f}"]  # fmt: skip
        rows.append("| " + " | ".join(cells) + " |")
    return rows


HEADER = ("| setting | target | full law | constants | mean loss | new run | N_opt | new-run half-width before | "
          "after | median abs error | after / error |\n|" + "---|" * 11)  # fmt: skip


def fitted_factors(records: list[dict]) -> dict[str, float]:
    """The factor each AFTER interval's half-width would need for exactly nominal pooled coverage (the 95th
    percentile of |error| / half-width)."""
    out = {}
    for key in ("const", "mean", "new", "nopt"):
        ratios = np.concatenate([r[key + "_ratio"] for r in records])
        out[key] = float(np.quantile(ratios[np.isfinite(ratios)], LEVEL))
    return out


CMP_HEADER = ("| setting | new run at the optimum: one scatter | now | half-width / median error: one | now | "
              "off the optimum: one | now | half-width / median error: one | now | profiled fits | mean rho |\n|"
              + "---|" * 11)  # fmt: skip


def cmp_row(setting: str, records: list[dict]) -> str:
    """One markdown row: new runs at the targets' optima and off the optimum, one scatter against the current."""
    cells, t = [setting], len(TARGETS)
    for part in (slice(0, t), slice(t, None)):
        error = np.median([v for r in records for v in r["cmp_error"][part]])
        cov = {g: np.mean([v for r in records for v in r[g + "_in"][part]]) for g in ("one", "cur")}
        half = {g: np.median([v for r in records for v in r[g + "_half"][part]]) for g in ("one", "cur")}
        cells += [_pct(cov["one"]), _pct(cov["cur"]), f"{half['one'] / error:.1f}", f"{half['cur'] / error:.1f}"]
    cells += [_pct(np.mean([r["shape"] > 0 for r in records])), f"{np.mean([r['step_ratio'] for r in records]):.2f}"]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--laws", default="chinchilla,cpu", help=f"comma-separated, of {', '.join(LAWS)}")
    p.add_argument("--designs", default="3x5,5x7", help="budgets x runs per budget, comma-separated")
    p.add_argument("--noise", default="0.003,0.01,0.03", help="lognormal noise sigmas, comma-separated")
    p.add_argument("--replicates", type=int, default=8, help="sweeps per setting (the README's table: 25)")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples per sweep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hetero", type=float, default=0.0, help="noise sigma x (1 + H x^2), x: decades from N_opt")
    p.add_argument("--misfit", type=float, default=0.0, help="true loss x exp(M x^2), a term the form lacks")
    p.add_argument("--records", help="write every replicate's verdicts here (JSON lines)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    start, every, lines, cmp = time.perf_counter(), [], [HEADER], [CMP_HEADER]
    for name in args.laws.split(","):
        law, budgets = LAWS[name]
        for d in args.designs.split(","):
            k, m = map(int, d.split("x"))
            for noise in map(float, args.noise.split(",")):
                records = [replicate(law, budgets, k, m, noise, args.bootstrap, rng, args.hetero, args.misfit)
                           for _ in range(args.replicates)]  # fmt: skip
                setting = f"{name} {k}x{m} {100 * noise:g}%"
                for r in records:
                    r["setting"] = setting
                every += records
                lines += table_rows(setting, records)
                cmp.append(cmp_row(setting, records))
                print("\n".join(lines[-3:]), flush=True)
    lines += table_rows(f"all ({len(every)} sweeps)", every)
    cmp.append(cmp_row(f"all ({len(every)} sweeps)", every))
    print("\n".join(lines) + "\n\n" + "\n".join(cmp))
    print(f"factors for nominal pooled coverage: {json.dumps(fitted_factors(every))}")
    print(f"{len(every)} sweeps in {time.perf_counter() - start:.0f} s")
    if args.records:
        Path(args.records).write_text("".join(json.dumps(r) + "\n" for r in every))


if __name__ == "__main__":
    main()
