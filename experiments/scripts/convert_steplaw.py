"""Li et al. 2025's learning-rate x batch-size grids ("Predictable Scale: Part I -- Step Law", arXiv:2503.04715)
as recipe tables: one row per trained run, `N, D, batch, seq_len, lr, loss, C, run, status, final_lr`.

Upstream: github.com/step-law/steplaw, `data/dense_lr_bs_loss.csv` (dense models) and `data/moe_lr_bs_loss.csv`
(mixture-of-experts models). Each of their rows is one run: its shape, peak `lr`, batch `bs` in sequences of
2,048 tokens (`bs * ti * 2048` equals `D` within 0.3% on every dense row; the MoE file states `seq_len`), `ti`
steps, the last logged training loss `loss` and the smoothed final training loss `smooth loss` (the quantity
the paper's optima and errors are stated in), `D` tokens and `N` parameters.

The conversion:
- `loss` is upstream's `smooth loss`; `loss_last` keeps the last logged loss.
- `N` (dense) is upstream's `N`: non-embedding parameters, attention 4 h^2 plus gated FFN 3 h ffn per layer.
  For MoE, `N` is upstream's `Na` (active non-embedding parameters) and `N_total` upstream's `N`.
- `batch` stays in sequences, with `seq_len` = 2048; `C` = 6 N D.
- `lr` is snapped to the grid the runs were drawn from, 2^(k/2) (2^-12 to 2^-5.5): upstream writes the same
  rate to 3 or 4 significant digits (0.00391 and 0.003906, 0.0111 and 0.01105), which would otherwise split
  one rate of a cell in two. The snap moves no rate by more than 0.5%; `lr_upstream` keeps the written value.
- `final_lr` = 1e-5, the minimum rate every run's name carries (`mlr1e-5`); the schedule's shape is not in
  the released files, so `schedule` and `warmup` are left out.
- `status`: `diverged` where a run's loss exceeds `DIVERGED_RATIO` times the best loss of its (N, D) cell,
  else `ok`. The cut sits in an empty gap of the ratio (no dense run between 1.21 and 1.70 times its cell's
  best; 181 runs above); upstream marks none. Losses are kept as logged.

    python -m smallest_loss.experiments.scripts.convert_steplaw UPSTREAM [--out results/public/steplaw]

UPSTREAM is a checkout or a bare git directory of step-law/steplaw; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections import defaultdict
from pathlib import Path

from smallest_loss.experiments.scripts.public_source import read_upstream, upstream_commit

DENSE = "data/dense_lr_bs_loss.csv"
MOE = "data/moe_lr_bs_loss.csv"
SEQ_LEN = 2048  # tokens per sequence (bs * ti * 2048 = D on every dense row; the MoE file's seq_len)
FINAL_LR = 1e-5  # every run's name: mlr1e-5 / mlr1.00e-05
DIVERGED_RATIO = 1.5  # loss above this times its (N, D) cell's best: diverged (no run from 1.21 to 1.70)
OUT = Path(__file__).parents[2] / "results" / "public" / "steplaw"
LR_SNAP = 0.005  # the largest relative move the snap to 2^(k/2) may make (0.0111 for 2^-6.5 = 0.011049: 0.46%)
COLUMNS = ["N", "D", "batch", "seq_len", "lr", "loss", "loss_last", "C", "final_lr", "status", "run", "lr_upstream"]


def grid_rate(lr: float) -> float:
    """The rate of the sweep's grid 2^(k/2) nearest `lr`; refused if upstream wrote a rate off that grid."""
    snapped = 2.0 ** (round(2 * math.log2(lr)) / 2)
    if abs(snapped / lr - 1) > LR_SNAP:
        raise ValueError(f"lr {lr} is not within {LR_SNAP:.1%} of the grid 2^(k/2)")
    return snapped


def recipe_rows(text: str, moe: bool = False) -> list[dict[str, object]]:
    """One recipe row per upstream run, sorted by N, D, batch, lr; `status` marks diverged runs."""
    rows = []
    for up in csv.DictReader(io.StringIO(text)):
        N, D = float(up["Na"] if moe else up["N"]), float(up["D"])
        lr = float(up["lr"])
        row = {"N": int(N), "D": int(D), "batch": int(up["bs"]), "seq_len": int(up.get("seq_len") or SEQ_LEN),
               "lr": grid_rate(lr), "loss": float(up["smooth loss"]), "loss_last": float(up["loss"]),
               "C": 6.0 * N * D, "final_lr": FINAL_LR, "status": "", "run": up["exp_name"]}  # fmt: skip
        row["lr_upstream"] = lr
        if moe:
            row["N_total"] = int(float(up["N"]))
        rows.append(row)
    best: dict[tuple, float] = defaultdict(lambda: math.inf)
    for row in rows:
        best[row["N"], row["D"]] = min(best[row["N"], row["D"]], row["loss"])
    for row in rows:
        row["status"] = "diverged" if row["loss"] > DIVERGED_RATIO * best[row["N"], row["D"]] else "ok"
    return sorted(rows, key=lambda r: (r["N"], r["D"], r["batch"], r["lr"], r["run"]))


def write_table(rows: list[dict[str, object]], path: Path) -> Path:
    """Write rows as CSV with the recipe columns first (and `N_total` where present)."""
    columns = COLUMNS + (["N_total"] if rows and "N_total" in rows[0] else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if k == "C" else repr(v) if isinstance(v, float) else v)
                             for k, v in row.items()})  # fmt: skip
    return path


def summary(rows: list[dict[str, object]]) -> str:
    """Rows, (N, D) cells, batches and rates per cell, diverged runs: for the README."""
    cells = defaultdict(list)
    for row in rows:
        cells[row["N"], row["D"]].append(row)
    batches = {len({r["batch"] for r in c}) for c in cells.values()}
    rates = [len({r["lr"] for r in c}) for c in cells.values()]
    diverged = sum(r["status"] == "diverged" for r in rows)
    return (f"{len(rows)} runs, {len(cells)} (N, D) cells, {sorted(batches)} batch sizes per cell, "
            f"{min(rates)}-{max(rates)} rates per cell, {diverged} diverged")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", help="checkout or bare git directory of github.com/step-law/steplaw")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(f"upstream commit {upstream_commit(args.upstream) or 'unknown'}")
    for name, path, moe in (("dense", DENSE, False), ("moe", MOE, True)):
        rows = recipe_rows(read_upstream(args.upstream, path), moe=moe)
        print(f"wrote {write_table(rows, args.out / f'{name}.csv')}: {summary(rows)}")


if __name__ == "__main__":
    main()
