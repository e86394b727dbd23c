"""Luo et al. 2025's protocol on their released curves (results/public/multipower/curves.csv): at each model size,
fit the multi-power law to the `fit` runs (cosine and constant to 24,000 steps, the two-stage wsdcon_9) through the
curve-table reader, predict the six `predict` runs (72,000-step cosine and constant, WSD with exponential and linear
decay, two-stage to 3e-5 and 1.8e-4), and score each predicted curve as upstream does: the mean over its logged
points of |loss - prediction| / loss (PredE) and the largest (WorstE), averaged over the six curves.

    python experiments/scripts/multipower_holdout.py [results/public/multipower/curves.csv]
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
from smallest_loss.scaling.curve_law import fit_curve_law_of_shape
from smallest_loss.scaling.curve_table import read_curves

PAPER = {25_000_000: (0.110, 0.409), 100_000_000: (0.142, 0.583), 400_000_000: (0.168, 0.995)}


def split_tables(path: Path, folder: Path) -> dict[str, Path]:
    """The table's `fit` and `predict` rows as two curve tables."""
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for split in ("fit", "predict"):
        out[split] = folder / f"{split}.csv"
        with out[split].open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(r for r in rows if r["split"] == split)
    return out


def errors(law, curve) -> tuple[float, float]:
    """PredE and WorstE (%) of one curve's logged points: the law's loss after t updates of the curve's schedule."""
    t, loss = curve.fitted_evals()
    predicted = law.curve(np.append(curve.lr, curve.lr[-1]))[t]
    rel = np.abs(loss - predicted) / loss
    return 100 * float(np.mean(rel)), 100 * float(np.max(rel))


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "results/public/multipower/curves.csv")
    with tempfile.TemporaryDirectory() as folder:
        tables = split_tables(path, Path(folder))
        fit, predict = read_curves(tables["fit"]), read_curves(tables["predict"])
    print("| size | fitted on | PredE (ours) | WorstE (ours) | PredE (paper) | WorstE (paper) |")
    print("|---|---|---|---|---|---|")
    for N in sorted({c.N for c in fit}):
        law, _ = fit_curve_law_of_shape([c for c in fit if c.N == N], form="multipower")
        scores = np.array([errors(law, c) for c in predict if c.N == N])
        fitted = ", ".join(c.name for c in fit if c.N == N)
        paper = PAPER.get(N, (float("nan"), float("nan")))
        print(f"| {N / 1e6:g}M | {fitted} | {scores[:, 0].mean():.3f}% | {scores[:, 1].mean():.3f}% | "
              f"{paper[0]:.3f}% | {paper[1]:.3f}% |")  # fmt: skip
        for c, (mean, worst) in zip([c for c in predict if c.N == N], scores, strict=True):
            print(f"|   | {c.name} | {mean:.3f}% | {worst:.3f}% |  |  |")


if __name__ == "__main__":
    main()
