"""Luo et al. 2025's training curves ("A Multi-Power Law for Loss Curve Prediction Across Learning Rate
Schedules", arXiv:2503.12811) as one long curve table: `run, step, tokens, lr, loss, N, kind, schedule, peak_lr,
warmup_steps, total_steps, final_lr, decay_step, split`.

Upstream: github.com/thu-yao-01-luo/MultiPowerLaw, `loss_curve_repo/csv_{25,100,400}/*.csv`: for each model
size, nine runs, each logged every 128 steps after warmup as `step, lr, loss`. The schedules, as the upstream
data loader rebuilds them (`src/data_loader.py`, `src/lr_schedules.py`): linear warmup from 0 to 3e-4 over
2,160 steps, then
- `cosine_T`: cosine from 3e-4 to 3e-5 over T steps (T = 24,000 or 72,000);
- `constant_T`: 3e-4 to step T;
- `wsd_20000_24000`: 3e-4 to step 20,000, then geometric (exponential) decay to 3e-5 at step 24,000;
- `wsdld_20000_24000`: the same with a linear decay;
- `wsdcon_X`: 3e-4 to step 8,000, then X * 1e-5 to step 16,000 (two stages).
The logged `lr` column agrees with these. Upstream fits on `cosine_24000`, `constant_24000` and `wsdcon_9`
(`src/config.py` TRAIN_SET) and predicts the other six (TEST_SET); `split` says which (`fit` or `predict`).

The conversion keeps every logged point. `N` is the paper's nominal size (25e6, 100e6, 400e6; the release
does not say which parameters it counts); `kind` is `train` (the loss the repository fits); `tokens` is left
empty: the release does not state the batch size. `schedule` is one of cosine, constant, wsd_exp, wsd_linear,
two_stage; `decay_step` is where the decay (WSD) or the second stage (two_stage) starts.

    python -m smallest_loss.experiments.scripts.convert_multipower UPSTREAM [--out results/public/multipower]

UPSTREAM is a checkout or a bare git directory of thu-yao-01-luo/MultiPowerLaw; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from smallest_loss.experiments.scripts.public_source import read_upstream, upstream_commit, write_csv

SIZES = (25, 100, 400)  # millions of parameters, the folders csv_25, csv_100, csv_400
FIT = ("cosine_24000", "constant_24000", "wsdcon_9")  # upstream src/config.py TRAIN_SET
PREDICT = ("constant_72000", "cosine_72000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_18")
PEAK_LR, WARMUP, END_LR = 3e-4, 2160, 3e-5  # upstream src/data_loader.py
OUT = Path(__file__).parents[2] / "results" / "public" / "multipower"
COLUMNS = ["run", "step", "tokens", "lr", "loss", "N", "kind", "schedule", "peak_lr", "warmup_steps",
           "total_steps", "final_lr", "decay_step", "split"]  # fmt: skip


def schedule_of(name: str) -> dict[str, object]:
    """The schedule description of one upstream run, from its file name (as upstream's loader reads it)."""
    parts = name.split("_")
    base = {"peak_lr": PEAK_LR, "warmup_steps": WARMUP, "decay_step": ""}
    if parts[0] == "cosine":
        return base | {"schedule": "cosine", "total_steps": int(parts[1]), "final_lr": END_LR}
    if parts[0] == "constant":
        return base | {"schedule": "constant", "total_steps": int(parts[1]), "final_lr": PEAK_LR}
    if parts[0] in ("wsd", "wsdld"):
        shape = "wsd_exp" if parts[0] == "wsd" else "wsd_linear"
        decay, total = int(parts[1]), int(parts[2])
        return base | {"schedule": shape, "total_steps": total, "final_lr": END_LR, "decay_step": decay}
    if parts[0] == "wsdcon":
        second = int(parts[1]) * 1e-5  # wsdcon_X: the second stage's rate is X * 1e-5
        return base | {"schedule": "two_stage", "total_steps": 16000, "final_lr": second, "decay_step": 8000}
    raise ValueError(f"unknown upstream schedule {name}")


def curve_rows(root: str | Path) -> list[dict[str, object]]:
    """Every logged point of the 27 upstream runs, by size, then fit runs before predicted ones, then step."""
    rows = []
    for size in SIZES:
        for name in FIT + PREDICT:
            text = read_upstream(root, f"loss_curve_repo/csv_{size}/{name}.csv")
            described = schedule_of(name) | {"split": "fit" if name in FIT else "predict"}
            for up in csv.DictReader(io.StringIO(text)):
                rows.append({"run": f"{size}M_{name}", "step": int(up["step"]), "tokens": "", "lr": float(up["lr"]),
                             "loss": float(up["loss"]), "N": int(size * 1e6), "kind": "train"} | described)  # fmt: skip
    return rows


def write_curves(rows: list[dict[str, object]], path: Path) -> Path:
    """Write the long curve table."""
    return write_csv(rows, COLUMNS, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream", help="checkout or bare git directory of github.com/thu-yao-01-luo/MultiPowerLaw")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(f"upstream commit {upstream_commit(args.upstream) or 'unknown'}")
    rows = curve_rows(args.upstream)
    runs = {row["run"] for row in rows}
    print(f"wrote {write_curves(rows, args.out / 'curves.csv')}: {len(rows)} points, {len(runs)} runs")


if __name__ == "__main__":
    main()
