"""Chinchilla's IsoFLOP runs as a fit CSV (N, D, loss, C), recovered from Epoch's extraction of its points.

Epoch's table (experiments/data/chinchilla_svg_extracted_data.csv; Besiroglu et al. 2024) gives each run's
model size and training FLOPs as read off Hoffmann et al. 2022's Figure 4, not the budget it was trained
for. Hoffmann et al. ran nine IsoFLOP budgets, 6e18 to 3e21 FLOPs (sec. 3.2, Figure 3); the figure's points
cluster within about 10% of those budgets, so a point within `WINDOW` (in log C) of one
of the nine is taken as a run of that budget, and its C column is that budget. The other points (runs of
other lengths) are left out, as are the 5 highest losses that Epoch dropped before fitting. D is the
point's own FLOPs / (6 N), as in Epoch's analysis.

    python -m smallest_loss.experiments.scripts.convert_chinchilla_isoflop   # writes both CSVs in experiments/data/

It also writes all of Epoch's 240 points as a fit CSV (N, D = FLOPs / (6 N), loss; `EPOCH_OUT`): the table
`smallest-loss fit --csv` reads as it is, on which Epoch refitted Approach 3 and the benchmark times our fit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from smallest_loss.experiments.scripts.bench_fit import EPOCH_CSV, epoch_points

ISOFLOP_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)  # Hoffmann et al. 2022, Figure 3
WINDOW = 0.1  # |ln(FLOPs / budget)| below this: a run of that budget (the clusters span 0.91 to 1.10 of it)
OUT = Path(__file__).parents[1] / "data" / "chinchilla_isoflop.csv"
EPOCH_OUT = Path(__file__).parents[1] / "data" / "chinchilla_epoch_240.csv"


def isoflop_rows(source: Path = EPOCH_CSV) -> list[tuple[float, float, float, float]]:
    """(N, D, loss, C) of every point within `WINDOW` of one of Chinchilla's IsoFLOP budgets, by C then N."""
    points = epoch_points(source)  # Epoch's 240 points: the 5 highest losses dropped
    flops = 6.0 * points.N * points.D
    budgets = np.array(ISOFLOP_BUDGETS)
    distance = np.log(flops[:, None] / budgets[None, :])
    nearest = np.argmin(np.abs(distance), axis=1)
    keep = np.abs(distance[np.arange(len(flops)), nearest]) < WINDOW
    rows = [(float(points.N[i]), float(points.D[i]), float(points.loss[i]), float(budgets[nearest[i]]))
            for i in np.flatnonzero(keep)]  # fmt: skip
    return sorted(rows, key=lambda row: (row[3], row[0]))


def write_csv(path: Path = OUT, source: Path = EPOCH_CSV) -> Path:
    """Write the fit CSV (N, D, loss, C) and return its path."""
    lines = ["N,D,loss,C"] + [f"{N!r},{D!r},{loss!r},{C:g}" for N, D, loss, C in isoflop_rows(source)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_epoch_csv(path: Path = EPOCH_OUT, source: Path = EPOCH_CSV) -> Path:
    """Write Epoch's 240 points (the 5 highest losses dropped) as a fit CSV (N, D, loss) and return its path."""
    points = epoch_points(source)
    rows = zip(points.N.tolist(), points.D.tolist(), points.loss.tolist(), strict=True)
    lines = ["N,D,loss"] + [f"{N!r},{D!r},{loss!r}" for N, D, loss in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_csv()}")
    print(f"wrote {write_epoch_csv()}")
