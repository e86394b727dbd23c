"""A synthetic learning-rate and batch sweep with a known truth, as recipe-table rows, for tests and checks.

The loss of a run at (N, D, B, eta) is
    L = (E + A/N^alpha + Bd/D^beta) exp(gamma_B log(B/B_opt)^2) (1 + gamma_lr log(eta/eta*)^2) (1 + noise),
    B_opt = b0 D^b_d,   eta* = c N^a D^d,
a U in log batch around a best batch that grows with the tokens and a parabola in log rate around a best rate
that falls with N. Runs at rates above `diverge_above` times eta* diverge: their loss is written as nan.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SweepTruth:
    """The ground truth of `synthetic_rows` (the defaults are of the order real sweeps show)."""

    E: float = 1.8
    A: float = 400.0
    alpha: float = 0.34
    Bd: float = 400.0
    beta: float = 0.28
    b0: float = 2.0  # B_opt = b0 D^b_d tokens per step
    b_d: float = 0.5
    gamma_b: float = 0.004  # curvature of log L in log B
    c: float = 0.6  # eta* = c N^a D^d
    a: float = -0.5
    d: float = 0.1
    gamma_lr: float = 0.01  # curvature of L in log eta
    diverge_above: float = 3.0

    def lr_star(self, N: float, D: float) -> float:
        return self.c * N**self.a * D**self.d

    def b_opt(self, D: float) -> float:
        return self.b0 * D**self.b_d

    def loss(self, N: float, D: float, B: float, lr: float) -> float:
        base = self.E + self.A / N**self.alpha + self.Bd / D**self.beta
        batch = math.exp(self.gamma_b * math.log(B / self.b_opt(D)) ** 2)
        return base * batch * (1 + self.gamma_lr * math.log(lr / self.lr_star(N, D)) ** 2)


def synthetic_rows(
    truth: SweepTruth = SweepTruth(),
    points: tuple[tuple[float, float], ...] = ((2e7, 4e8), (5e7, 1e9), (1e8, 2e9), (2e8, 4e9), (4e8, 8e9)),
    batch_factors: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8),
    lr_factors: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8),
    noise: float = 0.001,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per run (N, D, batch in tokens, lr, loss, run, status) over (N, D) `points`, batches at
    `batch_factors` times a rounded B_opt(D), rates at `lr_factors` times a rounded eta* (the grids are
    deliberately off the truth's optimum)."""
    rng = np.random.default_rng(seed)
    rows = []
    for N, D in points:
        b_mid = 2.0 ** round(math.log2(truth.b_opt(D)))
        lr_mid = 10 ** (round(math.log10(truth.lr_star(N, D)) * 4) / 4)
        for bf in batch_factors:
            for lf in lr_factors:
                B, lr = b_mid * bf, lr_mid * lf
                loss = truth.loss(N, D, B, lr) * (1 + noise * rng.standard_normal())
                diverged = lr > truth.diverge_above * truth.lr_star(N, D)
                rows.append(
                    dict(
                        N=N, D=D, batch=B, lr=lr, loss=math.nan if diverged else loss, run=f"N{N:.0e}-B{B:g}-lr{lr:.3g}"
                    )
                )
    return rows


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """The rows as a CSV (nan losses written as nan)."""
    path = Path(path)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


EXAMPLE_POINTS = ((2e7, 2e8), (2e7, 8e8), (5e7, 1e9), (1e8, 1e9), (1e8, 4e9), (4e8, 8e9))
EXAMPLE_FACTORS = (1 / 4, 1 / 2, 1, 2, 4, 8)


def example_rows(seed: int = 0) -> list[dict[str, Any]]:
    """The example recipe table of experiments/data/recipe_synthetic.csv: six (N, D) points whose N and D do not
    vary together, 6 batches x 6 rates each, numbers rounded as a logger would write them, `status` diverged
    where the loss is nan."""
    rows = synthetic_rows(SweepTruth(), EXAMPLE_POINTS, EXAMPLE_FACTORS, EXAMPLE_FACTORS, seed=seed)
    for r in rows:
        r.update(N=f"{r['N']:g}", D=f"{r['D']:g}", batch=f"{r['batch']:g}", lr=f"{r['lr']:.4g}")
        r["status"] = "diverged" if math.isnan(r["loss"]) else "finished"
        r["loss"] = f"{r['loss']:.5f}"
    return rows


if __name__ == "__main__":  # python -m smallest_loss.scaling.recipe_synth OUT.csv
    import sys

    print(write_rows(example_rows(), sys.argv[1] if len(sys.argv) > 1 else "recipe_synthetic.csv"))
