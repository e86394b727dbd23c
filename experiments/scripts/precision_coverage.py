"""How often the precision law's 95% interval of a new run's loss holds a run it was not fitted to.

The precision law is fitted on every budget of a precision table but the largest, with bootstrap resamples; each
run of the largest budget is then predicted at its own training bits, and its loss checked against the calibrated
interval of a new run (what `plan` prints, scaling/precision_intervals.py) and against the bootstrap's percentile
interval of the law's loss (what plans printed before). Prints the share of held-out runs inside each, and their
median half-widths.

    python experiments/scripts/precision_coverage.py results/cpu/precision/runs.csv [--bootstrap 200]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from smallest_loss.scaling.intervals import prediction_interval, sample_log_loss
from smallest_loss.scaling.points import budget_labels
from smallest_loss.scaling.precision_fit import fit_precision_law
from smallest_loss.scaling.precision_law import KINDS
from smallest_loss.scaling.precision_pricing import law_at_precision, law_with_training_penalty, profile_penalty
from smallest_loss.scaling.precision_table import read_precision_table

NAMES = {"w": "weights", "a": "activations", "kv": "kv"}


def held_out(table: str, bootstrap: int = 200, form: str = "auto") -> dict:
    """The precision law fitted on every budget but the largest; per held-out run, its error and whether it lies
    inside the calibrated interval of a new run and the bootstrap's percentile interval, and their half-widths."""
    data = read_precision_table(table)
    data = data.take(data.training_rows())
    top = budget_labels(data.points.budgets) == budget_labels(data.points.budgets).max()
    law_file = fit_precision_law(data.take(~top), form, bootstrap)
    rows = []
    for i in np.flatnonzero(top):  # the held-out runs (indices: a budget may hold fewer runs than a fit needs)
        bits = {NAMES[k]: int(data.bits[k][i]) for k in KINDS if math.isfinite(data.bits[k][i])}
        priced = law_with_training_penalty(law_file, "float32", bits)
        priced = law_at_precision(priced, profile_penalty(law_file, "float32", bits))
        N, D, loss = data.points.N[i], data.points.D[i], data.points.loss[i]
        pi = prediction_interval(priced, N, D)
        boot = np.exp(np.percentile(sample_log_loss(priced.samples, np.atleast_1d(N), np.atleast_1d(D)), [2.5, 97.5]))
        rows.append(dict(error=abs(loss / pi.predicted[0] - 1), inside_new=bool(pi.low[0] <= loss <= pi.high[0]),
                         inside_boot=bool(boot[0] <= loss <= boot[1]),
                         half_new=(pi.high[0] - pi.low[0]) / 2 / pi.predicted[0],
                         half_boot=(boot[1] - boot[0]) / 2 / pi.predicted[0]))  # fmt: skip
    return dict(fitted=int((~top).sum()), form=law_file.diagnostics["form"], runs=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--form", default="auto")
    args = parser.parse_args()
    r = held_out(args.table, args.bootstrap, args.form)
    col = {k: np.array([row[k] for row in r["runs"]]) for k in r["runs"][0]}
    print(f"fitted on {r['fitted']} runs (form {r['form']}), held out the largest budget's {len(r['runs'])} runs")
    print(f"held-out errors: {col['error'].mean():.2%} mean, {col['error'].max():.2%} max")
    new = f"{col['inside_new'].mean():.0%} inside, median half-width {np.median(col['half_new']):.2%}"
    print(f"calibrated new-run interval: {new}")
    boot = f"{col['inside_boot'].mean():.0%} inside, median half-width {np.median(col['half_boot']):.2%}"
    print(f"bootstrap percentile interval: {boot}")


if __name__ == "__main__":
    main()
