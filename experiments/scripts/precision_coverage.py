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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--form", default="auto")
    args = parser.parse_args()
    data = read_precision_table(args.table)
    data = data.take(data.training_rows())
    labels = budget_labels(data.points.budgets)
    top = labels == labels.max()
    law_file = fit_precision_law(data.take(~top), args.form, args.bootstrap)
    held = data.take(top)
    inside_new, inside_boot, half_new, half_boot, errors = [], [], [], [], []
    for i in range(len(held.points)):
        bits = {NAMES[k]: int(held.bits[k][i]) for k in KINDS if math.isfinite(held.bits[k][i])}
        priced = law_with_training_penalty(law_file, "float32", bits)
        priced = law_at_precision(priced, profile_penalty(law_file, "float32", bits))
        N, D, loss = held.points.N[i], held.points.D[i], held.points.loss[i]
        pi = prediction_interval(priced, N, D)
        boot = np.exp(np.percentile(sample_log_loss(priced.samples, np.atleast_1d(N), np.atleast_1d(D)), [2.5, 97.5]))
        errors.append(abs(loss / pi.predicted[0] - 1))
        inside_new.append(pi.low[0] <= loss <= pi.high[0])
        inside_boot.append(boot[0] <= loss <= boot[1])
        half_new.append((pi.high[0] - pi.low[0]) / 2 / pi.predicted[0])
        half_boot.append((boot[1] - boot[0]) / 2 / pi.predicted[0])
    form = law_file.diagnostics["form"]
    print(f"fitted on {int((~top).sum())} runs (form {form}), held out the largest budget's {int(top.sum())} runs")
    print(f"held-out errors: {np.mean(errors):.2%} mean, {np.max(errors):.2%} max")
    print(f"calibrated new-run interval: {np.mean(inside_new):.0%} inside, median half-width {np.median(half_new):.2%}")
    boot = f"{np.mean(inside_boot):.0%} inside, median half-width {np.median(half_boot):.2%}"
    print(f"bootstrap percentile interval: {boot}")


if __name__ == "__main__":
    main()
