"""How the quickstart's `quick-isoflop` design was made: `suggest` (scaling/design.py) on a simulated law like this
CPU's, and the share of simulated sweeps whose fit identifies all five constants.

    python experiments/scripts/quick_design.py [--reps 60]

The simulated law is the one fitted to this CPU's cpu-isoflop sweep (results/cpu/scaling/runs.csv), with its 1.1%
residual scatter. The seed is six runs of the old quickstart design (15 runs: 1e11, 2e11 and 4e11 FLOPs x five
shapes): three shapes at each of its two smaller budgets. `suggest_runs` then spends what brings the total to
5.5e12 FLOPs on the runs that most shrink the interval at 2.4e11 FLOPs (20 s of this CPU's training, the
quickstart's plan) and pin down E, alpha and beta, N within the `cpu` space's sizes; each N becomes the nearest
`cpu` shape. The step-time profile of results/cpu/quickstart predicts each design's training time. The design in
configs/designs.py is this one less one run (d16-n1 at 1.02e11 FLOPs), left out after the real sweep was trained at
ten seeds (experiments/scripts/seed_laws.py; results/cpu/quickstart/README.md, stop 56).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from smallest_loss.configs.designs import DESIGNS, SweepDesign
from smallest_loss.configs.spaces import get_space
from smallest_loss.model.params import count_params
from smallest_loss.scaling.chinchilla import fit_chinchilla
from smallest_loss.scaling.design import suggest_runs
from smallest_loss.scaling.design_shapes import shaped_runs
from smallest_loss.scaling.fitting import read_table
from smallest_loss.scaling.plan import param_range
from smallest_loss.scaling.points import FitPoints
from smallest_loss.timing.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
NOISE, TARGET, TOTAL = 0.0114, 2.4e11, 5.5e12
OLD = SweepDesign("old quick-isoflop", "isoflop", (1e11, 2e11, 4e11), (
    ((16, 1, 2), (24, 1, 2), (32, 1, 2), (32, 2, 2), (48, 2, 2)),
    ((24, 1, 2), (32, 1, 2), (32, 2, 2), (48, 2, 2), (64, 3, 2)),
    ((24, 1, 2), (32, 1, 2), (32, 2, 2), (48, 2, 2), (64, 3, 2))), base=DESIGNS["quick-isoflop"].base)  # fmt: skip
SEED = [1, 2, 3, 6, 7, 8]  # of the old design's runs, in order


def runs_of(design: SweepDesign, profile) -> tuple[np.ndarray, np.ndarray, float]:
    """N, D of each configuration and the predicted training seconds of all runs, replicates included (16 x 64
    tokens a step, as the sweep trains them)."""
    N, D, seconds = [], [], 0.0
    for i, (C, shapes) in enumerate(zip(design.budgets, design.shapes, strict=True)):
        for shape in shapes:
            m = design.model(shape)
            n = count_params(m).total
            steps = math.floor(C / (6 * n * 1024))
            N.append(n)
            D.append(steps * 1024.0)
            step = profile.predict_step_seconds(m.d, m.n, m.h, 4 * m.d, 64, 256, 16)
            seconds += len(design.seeds(i)) * steps * float(np.ravel(step)[0])
    return np.array(N, float), np.array(D), seconds


def identified(law, N: np.ndarray, D: np.ndarray, reps: int) -> float:
    full = 0
    for seed in range(reps):
        loss = law.loss(N, D) * np.exp(np.random.default_rng(seed).normal(0, NOISE, len(N)))
        full += fit_chinchilla(FitPoints(N, D, loss)).form == "full"
    return full / reps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=60)
    args = parser.parse_args()
    law = fit_chinchilla(read_table(ROOT / "results" / "cpu" / "scaling" / "runs.csv")).law
    profile = load_profile(ROOT / "results" / "cpu" / "quickstart" / "calibration" / "profile.json")
    N, D, _ = runs_of(OLD, profile)
    seed = FitPoints(N[SEED], D[SEED], law.loss(N[SEED], D[SEED]))
    spend = TOTAL - float(np.sum(6 * N[SEED] * D[SEED]))
    design = suggest_runs(seed, TARGET, spend, runs=10, fit=fit_chinchilla(seed), noise=NOISE,
                          n_range=param_range(get_space("cpu")), identify=("E", "alpha", "beta"))  # fmt: skip
    for run in shaped_runs(design, get_space("cpu")):
        print(f"budget {run.budget:.3g}: shape {run.shape} (N {run.N}, wanted {run.N_wanted:.3g}), D {run.D:.3g}")
    for name, candidate in (("old", OLD), ("new", DESIGNS["quick-isoflop"])):
        n, d, seconds = runs_of(candidate, profile)
        print(f"{name} design: {len(n)} runs, {np.sum(6 * n * d):.3g} FLOPs, {seconds:.0f} s predicted training, "
              f"full law identified in {identified(law, n, d, args.reps):.0%} of {args.reps} noise draws")  # fmt: skip


if __name__ == "__main__":
    main()
