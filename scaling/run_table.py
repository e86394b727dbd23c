"""Run folders as a table: one row per finished run with every column a law reads from a table.

The laws fit tables from any trainer (scaling/tables.py); this writes this project's own runs in those columns, so
every law fits them the same way: `N` (all parameters), `N_active` and `N_total` (a mixture of experts' active and
total parameters; both `N` for a dense model), `experts`, `top_k`, `granularity` (1, 1, 1 dense), `bits_w`,
`bits_a`, `bits_kv` (quantised training's bits; blank unquantised), `dtype`, `D` (tokens), `C` (the sweep's budget,
6ND outside a sweep), `loss` (final evaluation loss), `d`, `n`, `run` (the folder's name). Runs quantised after
training (`smallest-loss ptq`, the run's `ptq.json`) add a column `loss_post_<P>` per width P: the run's loss plus
the rise that quantising its weights to P bits measured (blank for runs without that width). Replicates (runs whose
configurations differ in the seed alone) are one row, their geometric mean loss (scaling/collect.py).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from smallest_loss.configs.errors import UserError
from smallest_loss.model.params import count_params
from smallest_loss.model.runs import RunDir, read_ptq
from smallest_loss.scaling.collect import collect_runs, run_folders

COLUMNS = (
    "run", "N", "N_active", "N_total", "experts", "top_k", "granularity", "bits_w", "bits_a", "bits_kv", "dtype",
    "D", "C", "loss", "d", "n",
)  # fmt: skip


def run_rows(paths: list[str | Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per finished run under `paths` (run or sweep folders), and a line for each run left out."""
    records, left_out = collect_runs(paths)
    folders = {folder.name: folder for path in paths for folder in run_folders(Path(path))}
    rows = []
    for r in records:
        model = RunDir.open(folders[r.name]).config.model
        counts = count_params(model)
        rows.append(
            dict(
                run=r.name,
                N=r.N,
                N_active=counts.active,
                N_total=counts.total,
                experts=max(1, model.experts),
                top_k=model.top_k if model.experts else 1,
                granularity=model.granularity if model.experts else 1,
                bits_w=model.bits_weights or "",
                bits_a=model.bits_activations or "",
                bits_kv=model.bits_kv or "",
                dtype=model.dtype,
                D=r.D,
                C=r.budget,
                loss=r.loss,
                d=r.d,
                n=r.n,
                **post_training_columns(folders[r.name], r.loss),
            )
        )
    return rows, left_out


def post_training_columns(folder: Path, loss: float) -> dict[str, float]:
    """`loss_post_<P>` for each width the run was quantised to after training: its loss plus the rise measured on
    the common sample (model/evaluate.py), so that the rise is paired on identical tokens; {} without `ptq.json`."""
    ptq = read_ptq(folder)
    if not ptq or ptq.get("loss") is None:
        return {}
    return {f"loss_post_{P}": loss + (after - ptq["loss"]) for P, after in ptq["loss_post"].items()}


def write_run_table(paths: list[str | Path], out: str | Path) -> tuple[Path, int, list[str]]:
    """Write the runs under `paths` as a CSV at `out` (parent folders made); the path, the rows written and the
    runs left out."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: give a CSV file name")
    rows, left_out = run_rows(paths)
    post = sorted({k for row in rows for k in row if k.startswith("loss_post_")}, key=lambda k: int(k.split("_")[-1]))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, *post], restval="")
        writer.writeheader()
        writer.writerows(rows)
    return out, len(rows), left_out
