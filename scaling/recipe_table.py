"""A recipe table: one row per run of a learning-rate and batch sweep, from anyone's stack (docs/formats.md).

Columns: `N` (parameters), `D` (tokens), `batch` (tokens per step; or sequences per step when a `seq_len` column
is present: tokens = batch x seq_len), `lr` (peak learning rate), `loss` (final loss); optional `C` (FLOPs, names
the point; runs of one N whose D agree within 2% form one (N, D) point), `run` (a name),
`status`, `schedule` (one of the trainer's schedule names), `warmup` (warm-up as a fraction of the run's steps).

A run is diverged when its `status` says so (one of DIVERGED_STATUSES), or its loss is not finite (nan, inf);
scaling/recipe.py `exploded` also counts a loss above EXPLODE_FACTOR times its cell's best, at a rate above the
best run's. Diverged runs stay in the table (a rate the law picks may land on one) but are left out of each
cell's best rate. Read with scaling/tables.py, the one run-table reader.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import Schedule
from smallest_loss.scaling.recipe import RecipeRun
from smallest_loss.scaling.tables import RunTable, read_run_table

DIVERGED_STATUSES = ("diverged", "failed", "nan", "inf", "crashed", "killed", "exploded", "error")
TRAINED_STATUSES = ("", "ok", "finished", "completed", "done", "success", "succeeded", "converged", "trained")
SAME_D = 0.02  # runs of one N whose tokens agree within 2% are one (N, D) point (a batch need not divide D)


def read_recipe_table(source: Any, columns: str | Mapping[str, str] | None = None) -> list[RecipeRun]:
    """The runs of a recipe table (a CSV or JSON-lines path, or a pandas DataFrame); refused in one line naming
    the row: a column missing, a value not a number, N, D, batch, lr or seq_len not positive, a negative loss,
    an unknown status or schedule, a warm-up outside [0, 1]."""
    table = read_run_table(
        source,
        numbers=("N", "D", "batch", "lr", "loss"),
        optional_numbers=("C", "seq_len", "warmup"),
        texts=("run", "status", "schedule"),
        columns=columns,
        what="recipe table",
    )
    table.finite("N", "D", "batch", "lr")
    table.positive("N", "D", "batch", "lr", "C", "seq_len")
    _check_values(table)
    diverged = _diverged(table)
    budgets = _budgets(table)
    seq = table.numbers.get("seq_len", np.ones(len(table)))
    return [_run(table, i, budgets[i], seq[i], bool(diverged[i])) for i in range(len(table))]


def _check_values(table: RunTable) -> None:
    loss = table.numbers["loss"]
    with np.errstate(invalid="ignore"):
        _refuse(table, loss < 0, "loss", "must not be negative")
    if "seq_len" in table.numbers:
        table.finite("seq_len")
        seq = table.numbers["seq_len"]
        _refuse(table, seq != np.round(seq), "seq_len", "must be a whole number of tokens")
    if "warmup" in table.numbers:
        w = table.numbers["warmup"]
        _refuse(table, ~np.isnan(w) & ((w < 0) | (w > 1)), "warmup", "must be a fraction of the steps in [0, 1]")
    names = typing.get_args(Schedule)
    for i, name in enumerate(table.texts.get("schedule", ())):
        if name and name not in names:
            raise UserError(f"{table.where(i)}: schedule {name!r} is not one of {', '.join(names)}")


def _refuse(table: RunTable, bad: np.ndarray, name: str, what: str) -> None:
    rows = np.flatnonzero(bad)
    if len(rows):
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        raise UserError(f"{table.where(int(rows[0]))}: {name}={table.numbers[name][rows[0]]:g} {what}{more}")


def _diverged(table: RunTable) -> np.ndarray:
    """Marked by `status` (DIVERGED_STATUSES) or a non-finite loss; an unknown status is refused."""
    status = np.char.lower(table.texts.get("status", np.full(len(table), "", dtype=str)))
    for i, s in enumerate(map(str, status)):
        if s not in DIVERGED_STATUSES and s not in TRAINED_STATUSES:
            trained = ", ".join(filter(None, TRAINED_STATUSES))
            raise UserError(
                f"{table.where(i)}: status {s!r} is neither a trained run ({trained}, or empty) "
                f"nor a diverged one ({', '.join(DIVERGED_STATUSES)})"
            )
    return np.isin(status, DIVERGED_STATUSES) | ~np.isfinite(table.numbers["loss"])


def _budgets(table: RunTable) -> np.ndarray:
    """Each run's (N, D) point, named by its budget: the runs of one N whose tokens agree within SAME_D form one
    point (a batch need not divide the tokens, so D can differ by a step), at the median of their C where the
    table gives it, else 6 N D at their median D."""
    N, D = table.numbers["N"], table.numbers["D"]
    C = table.numbers.get("C", np.full(len(table), np.nan))
    out = np.empty(len(table))
    for n in np.unique(N):
        rows = np.flatnonzero(N == n)
        rows = rows[np.argsort(D[rows])]
        splits = np.flatnonzero(np.diff(np.log(D[rows])) > np.log1p(SAME_D)) + 1
        for part in np.split(rows, splits):
            given = C[part][~np.isnan(C[part])]
            out[part] = float(np.median(given)) if len(given) else 6.0 * n * float(np.median(D[part]))
    return out


def _run(table: RunTable, i: int, budget: float, seq_len: float, diverged: bool) -> RecipeRun:
    n, t = table.numbers, table.texts
    schedule: dict[str, Any] = {}
    if t.get("schedule") is not None and t["schedule"][i]:
        schedule["schedule"] = str(t["schedule"][i])
    if "warmup" in n and not np.isnan(n["warmup"][i]):
        schedule["warmup_fraction"] = float(n["warmup"][i])
    name = str(t["run"][i]) if "run" in t and t["run"][i] else table.where(i)
    seq = int(seq_len)
    return RecipeRun(
        name,
        int(round(n["N"][i])),
        int(round(n["D"][i])),
        float(budget),
        int(round(n["batch"][i])),
        seq,
        float(n["lr"][i]),
        float(n["loss"][i]),
        None,
        schedule,
        (),
        diverged,
    )
