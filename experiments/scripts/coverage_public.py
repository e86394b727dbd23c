"""Public-data check of the calibrated prediction interval (issue 24, item 2): on each IsoFLOP table, fit every budget
but the largest (Approach 3 with the bootstrap), then ask how many of the largest budget's runs fall inside their 95%
interval, BEFORE (the bootstrap's percentile interval of the law's loss) and AFTER (scaling/intervals.py's interval
of a new run), and how wide it is against the errors. Nothing here tunes anything: the calibration comes from the
simulation (experiments/scripts/coverage_study.py).

    python -m smallest_loss.experiments.scripts.coverage_public [TABLE ...] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from smallest_loss.scaling.bootstrap import bootstrap_chinchilla
from smallest_loss.scaling.chinchilla import fit_chinchilla
from smallest_loss.scaling.holdout import holdout_split
from smallest_loss.scaling.intervals import prediction_interval, sample_log_loss
from smallest_loss.scaling.points import read_fit_table

ROOT = Path(__file__).resolve().parents[2]
TABLES = {  # name: (table, its column map for scaling/tables.py)
    "chinchilla": (ROOT / "experiments/data/chinchilla_isoflop.csv", None),  # Hoffmann et al. 2022, Epoch's extraction
    **{f"porian2024/{p.stem}": (p, None) for p in sorted((ROOT / "results/public/porian2024").glob("*.csv"))},
    "cpu (this project's, not public)": (ROOT / "results/cpu/scaling/runs.csv", "C=budget"),
}


def check(path: Path, n_boot: int, columns: str | None = None, seed: int = 0) -> dict:
    """Fit all budgets but the largest; the held-out runs against their intervals."""
    points = read_fit_table(path, columns)
    test = holdout_split(points.budgets)
    train = points.take(~test)
    fit = fit_chinchilla(train)
    boot = bootstrap_chinchilla(train, n_boot=n_boot, seed=seed, fit=fit)
    N, D, loss = points.N[test], points.D[test], points.loss[test]
    span = prediction_interval(boot, N, D, train)
    before = np.exp(np.percentile(sample_log_loss(boot.samples, N, D), [2.5, 97.5], axis=0))
    error = np.abs(span.predicted / loss - 1)
    return dict(
        points=int(test.sum()), train=len(train), form=fit.form, mean_error=float(error.mean()),
        inside_before=float(np.mean((before[0] <= loss) & (loss <= before[1]))),
        inside_after=float(np.mean((span.low <= loss) & (loss <= span.high))),
        half_before=float(np.median((before[1] - before[0]) / (2 * span.predicted))),
        half_after=float(np.median(span.half_width)), scatter=span.calibration.scatter,
        shape=span.calibration.shape, step_ratio=span.calibration.step_ratio,
    )  # fmt: skip


HEADER = ("| table | held out | form | mean abs error | inside 95% before | after | median half-width before | "
          "after | after / mean error | scatter s | profile c | rho |\n|" + "---|" * 12)  # fmt: skip


def row(name: str, r: dict) -> str:
    cells = [name, f"{r['points']} (of {r['points'] + r['train']})", r["form"], f"{r['mean_error']:.2%}",
             f"{r['inside_before']:.0%}", f"{r['inside_after']:.0%}", f"{r['half_before']:.2%}",
             f"{r['half_after']:.2%}", f"{r['half_after'] / r['mean_error']:.2f}", f"{r['scatter']:.2%}",
             f"{r['shape']:.1f}", f"{r['step_ratio']:.2f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tables", nargs="*", help=f"fit tables (default: {', '.join(TABLES)})")
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args(argv)
    tables = {Path(t).stem: (Path(t), None) for t in args.tables} or TABLES
    lines = [HEADER] + [row(name, check(path, args.bootstrap, columns)) for name, (path, columns) in tables.items()]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
