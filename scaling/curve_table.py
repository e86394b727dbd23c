"""Curve tables: learning curves logged by any stack, one row per logged point, read into the curves a curve law
fits (scaling/curve_law.py `Curve`), however sparsely they were logged.

Long format, one row per logged point: `run`, `step` (updates done when the loss was measured), `loss`, `lr` (the
rate of that step's update), optional `tokens` (tokens seen at that step: gives the tokens per step), `N`
(parameters: runs of one N are one model shape; without it every run is one shape), `kind` (`train` or `eval`:
by default the eval rows where there are any, else the train rows) and a schedule description (`schedule`
cosine/wsd/constant, `peak_lr`, `warmup_steps`, `total_steps`, `final_lr`, and for wsd `cooldown_fraction` or
`cooldown_start`, `decay` linear/1-sqrt). Without a `run` column the table is one run, named after its file.

The law is fitted on the logged points only: each is a point at its step's update count (the `fit_evals` path of
the laws, which evaluates the law at exactly those counts). The schedule between logged points, which the law's
areas need at every update, comes from the schedule description where a run has one (exact), else from the
logged `lr` column interpolated linearly in step (every row of the run that logs a rate, whatever its kind). The
warmup between logged points is pinned by a `warmup_steps` column (a linear ramp from 0 at step 0 to the peak,
`peak_lr` or the largest logged rate, at that step); without one, a run whose first logged rate is below its peak
ramps from 0 at step 0, and one logged first at its peak is taken to have had no warmup (log step 0, or give
warmup_steps, where a warmup ended before the first logged point). A row whose
loss cell is empty (a W&B history row where the loss was not logged) gives its rate and no point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.schedule import schedule_values
from smallest_loss.scaling.curve_law import Curve
from smallest_loss.scaling.tables import RunTable, parse_columns, read_run_table

NUMBERS = ("step",)
OPTIONAL = ("loss", "lr", "tokens", "N", "peak_lr", "warmup_steps", "total_steps", "final_lr",
            "cooldown_fraction", "cooldown_start")  # fmt: skip
TEXTS = ("run", "kind", "schedule", "decay", "loss")  # loss also as text: an empty cell is "not logged here"
DESCRIPTION = ("peak_lr", "total_steps")  # what a schedule description needs besides `schedule`
KINDS = ("train", "eval")
MIN_POINTS = 3  # logged points after warmup a run needs to be fitted
FINAL_LR_RATIO = 0.1  # a described cosine or wsd schedule without final_lr ends at this share of peak_lr
WHAT = "curve table"


@dataclass(frozen=True)
class TableRun:
    """One run of a curve table: its curve (logged points as `fit_evals` points, rates at every update up to its
    last logged step) and, where the table describes its schedule, the rates of every planned update."""

    curve: Curve
    planned: np.ndarray | None
    kind: str  # the loss its points are: train or eval


def read_table_runs(source: Any, columns: str | Mapping[str, str] | None = None, kind: str | None = None,
                    fill: str | Mapping[str, Any] | None = None) -> list[TableRun]:  # fmt: skip
    """A curve table's runs, in the order they first appear, refused in one line naming the row where a column is
    missing, a rate is negative, a loss is not finite and positive, a run has one point, or a run's steps are out
    of order or repeated. `fill` (`schedule=cosine,peak_lr=3e-4,...`): columns the table lacks, one value for
    every row (a TensorBoard export of one run's loss, its schedule given here)."""
    table = _filled(read_run_table(source, NUMBERS, OPTIONAL, TEXTS, columns, what=WHAT), fill)
    _check_columns(table)
    table.finite("step")
    _refuse(table, table.numbers["step"] < 0, "step", "must not be negative")
    if "lr" in table.numbers:
        _refuse(table, table.numbers["lr"] < 0, "lr", "must not be negative (a learning rate)")
    points = _point_rows(table, kind)
    default = Path(source).stem if isinstance(source, str | Path) else "run"
    names = table.texts["run"] if "run" in table.texts else np.full(len(table), default)
    runs = []
    for name in dict.fromkeys(names[points]):
        rows = points[names[points] == name]
        runs.append(_table_run(table, str(name), rows, np.flatnonzero(names == name), _kind_of(table, rows)))
    return runs


def _filled(table: RunTable, fill: str | Mapping[str, Any] | None) -> RunTable:
    """The table with `fill`'s columns added, one value in every row (a column the table has is refused)."""
    try:
        values = parse_columns({k: str(v) for k, v in fill.items()} if isinstance(fill, Mapping) else fill)
    except UserError as err:
        raise UserError(str(err).replace("--columns", "--fill", 1).replace("COLUMN", "VALUE")) from None
    numbers, texts = dict(table.numbers), dict(table.texts)
    fillable = [n for n in dict.fromkeys((*OPTIONAL, *TEXTS)) if n != "loss"]
    for name, value in values.items():
        if name in table or name not in fillable:
            why = "the table has that column" if name in table else f"columns one may fill: {', '.join(fillable)}"
            raise UserError(f"--fill {name}={value}: {why}")
        if name in OPTIONAL:
            try:
                numbers[name] = np.full(len(table), float(value))
            except ValueError:
                raise UserError(f"--fill {name}={value!r} is not a number") from None
        else:
            texts[name] = np.full(len(table), value)
    return RunTable(table.source, numbers, texts, table.lines)


def _refuse(table: RunTable, bad: np.ndarray, name: str, what: str) -> None:
    """Refuse the first row where `bad` holds, naming it and its value."""
    rows = np.flatnonzero(bad)
    if len(rows):
        i = int(rows[0])
        raise UserError(f"{table.where(i)}: {name}={table.numbers[name][i]:g} {what}")


def _check_columns(table: RunTable) -> None:
    """Refuse a table without a loss column, or without both an lr column and a schedule description."""
    if "loss" not in table.numbers:
        raise UserError(f"{WHAT} {table.source} lacks column loss (map yours with --columns loss=NAME)")
    described = "schedule" in table.texts and all(n in table.numbers for n in DESCRIPTION)
    if "lr" not in table.numbers and not described:
        raise UserError(
            f"{WHAT} {table.source} lacks column lr; give each step's learning rate (--columns lr=NAME) or "
            f"describe the schedule (columns schedule, {', '.join(DESCRIPTION)}, warmup_steps, final_lr)"
        )


def _point_rows(table: RunTable, kind: str | None) -> np.ndarray:
    """The rows that are points: a loss logged, of the chosen kind (default: eval where any row is eval)."""
    logged = np.char.str_len(table.texts["loss"]) > 0
    kinds = np.char.lower(table.texts["kind"]) if "kind" in table.texts else np.full(len(table), "train")
    bad = np.flatnonzero(logged & ~np.isin(kinds, KINDS))
    if len(bad):
        raise UserError(f"{table.where(int(bad[0]))}: kind={kinds[bad[0]]!r}; a row's kind is train or eval")
    if kind is not None and kind not in KINDS:
        raise UserError(f"--curve-loss {kind!r}: choose train or eval")
    chosen = kind or ("eval" if np.any(logged & (kinds == "eval")) else "train")
    rows = np.flatnonzero(logged & (kinds == chosen))
    if not len(rows):
        raise UserError(f"{WHAT} {table.source} has no {chosen} rows with a loss")
    loss = table.numbers["loss"]
    bad = rows[~(np.isfinite(loss[rows]) & (loss[rows] > 0))]
    if len(bad):
        i = int(bad[0])
        raise UserError(f"{table.where(i)}: loss={loss[i]:g} is not a positive finite number (did the run diverge?)")
    return rows


def _kind_of(table: RunTable, rows: np.ndarray) -> str:
    return str(np.char.lower(table.texts["kind"][rows[0]])) if "kind" in table.texts else "train"


def _first(table: RunTable, name: str, rows: np.ndarray) -> float:
    """A run's value of a per-run column: its first filled cell (NaN when none)."""
    if name not in table.numbers:
        return float("nan")
    values = table.numbers[name][rows]
    filled = values[np.isfinite(values)]
    return float(filled[0]) if len(filled) else float("nan")


def _table_run(table: RunTable, name: str, rows: np.ndarray, all_rows: np.ndarray, kind: str) -> TableRun:
    """One run's curve from its point rows (and every row of the run for its rates)."""
    steps = table.numbers["step"][rows]
    if len(rows) < 2:
        raise UserError(
            f"{table.where(int(rows[0]))}: run {name} has one logged {kind} point; a curve needs two or more"
        )
    back = np.flatnonzero(np.diff(steps) <= 0)
    if len(back):
        i = int(rows[back[0] + 1])
        raise UserError(
            f"{table.where(i)}: run {name}'s step {steps[back[0] + 1]:g} does not follow step {steps[back[0]]:g}; "
            "steps must increase within a run (sort the table, or drop repeated rows)"
        )
    if np.any(steps != np.round(steps)):
        i = int(rows[np.flatnonzero(steps != np.round(steps))[0]])
        raise UserError(f"{table.where(i)}: step={table.numbers['step'][i]:g} is not a whole number of updates")
    T = int(steps[-1])
    planned = _described(table, name, all_rows)
    if planned is not None and len(planned) < T:
        raise UserError(f"{table.where(int(rows[-1]))}: run {name} logs step {T}, past its total_steps {len(planned)}")
    lr = _interpolated(table, name, all_rows, T) if planned is None else planned[:T]
    warmup = _whole(_first(table, "warmup_steps", all_rows))
    warmup = warmup if planned is not None or warmup > 0 else _warmup_end(lr)
    curve = Curve(
        name=name,
        N=_whole(_first(table, "N", all_rows)),
        tokens_per_step=_tokens_per_step(table, rows),
        lr=lr,
        loss=np.full(T, np.nan),  # no loss at every step: the fit reads the logged points
        first=min(warmup + 2, T),
        final_eval=float(table.numbers["loss"][rows[-1]]),  # the law's loss after the last logged step
        family=name,
        eval_steps=steps.astype(np.int64),
        eval_losses=table.numbers["loss"][rows].copy(),
        fit_evals=True,
        loss_kind=kind,
    )
    fitted = len(curve.fitted_evals()[0])
    if fitted < MIN_POINTS:
        raise UserError(
            f"{table.where(int(rows[-1]))}: run {name} has {fitted} logged points after its warmup (step {warmup}); "
            f"a curve law needs {MIN_POINTS} or more per run"
        )
    return TableRun(curve, planned, kind)


def _text(table: RunTable, name: str, rows: np.ndarray) -> str:
    """A run's value of a per-run text column: its first filled cell ('' when none)."""
    return next((str(s).lower() for s in table.texts[name][rows] if s), "") if name in table.texts else ""


def _whole(value: float) -> int:
    return int(round(value)) if np.isfinite(value) else 0


def _tokens_per_step(table: RunTable, rows: np.ndarray) -> int:
    """Median tokens per update over the run's rows past step 0 (0 when the table has no tokens)."""
    if "tokens" not in table.numbers:
        return 0
    steps, tokens = table.numbers["step"][rows], table.numbers["tokens"][rows]
    ok = (steps > 0) & np.isfinite(tokens)
    return int(round(float(np.median(tokens[ok] / steps[ok])))) if np.any(ok) else 0


def _warmup_end(lr: np.ndarray) -> int:
    """Updates before the first at (within 0.1% of) the peak rate: the warmup."""
    return int(np.argmax(lr >= 0.999 * lr.max()))


def _interpolated(table: RunTable, name: str, rows: np.ndarray, T: int) -> np.ndarray:
    """The rate of updates 1..T, linear in step between the run's logged rates."""
    if "lr" not in table.numbers:
        raise UserError(f"{table.where(int(rows[0]))}: run {name} has no lr and no schedule description")
    steps, lr = table.numbers["step"][rows], table.numbers["lr"][rows]
    ok = np.isfinite(lr)
    if not np.any(ok):
        raise UserError(f"{table.where(int(rows[0]))}: run {name} logs no learning rate (column lr is empty)")
    steps, first = np.unique(steps[ok], return_index=True)
    lr = lr[ok][first]
    peak, warmup = _first(table, "peak_lr", rows), _first(table, "warmup_steps", rows)
    peak = peak if peak > 0 else float(lr.max())
    if warmup > 0 and not np.any(steps == warmup):  # a given warmup: a ramp from 0 to the peak at its last step
        steps, lr = np.r_[steps, warmup], np.r_[lr, peak]
    elif not warmup > 0 and lr[np.argmin(steps)] < 0.999 * peak:  # first logged during warmup: a ramp from 0
        steps, lr = np.r_[steps, 0.0], np.r_[lr, 0.0]
    if not np.any(steps == 0) and warmup > 0:
        steps, lr = np.r_[steps, 0.0], np.r_[lr, 0.0]
    order = np.argsort(steps)
    steps, lr = steps[order], lr[order]
    return np.interp(np.arange(1, T + 1, dtype=float), steps, lr)


def _described(table: RunTable, name: str, rows: np.ndarray) -> np.ndarray | None:
    """The rates of every planned update from the run's schedule description, or None where it has none."""
    schedule = _text(table, "schedule", rows)
    logged = "lr" in table.numbers and bool(np.isfinite(table.numbers["lr"][rows]).any())
    if not schedule or (schedule not in ("cosine", "wsd", "constant") and logged):
        return None  # a schedule this tool cannot rebuild (two-stage, exponential decay): its logged rates say it
    where = table.where(int(rows[0]))
    values = {k: _first(table, k, rows) for k in ("peak_lr", "total_steps", "warmup_steps", "final_lr")}
    if not (values["peak_lr"] > 0 and values["total_steps"] >= 1):
        raise UserError(f"{where}: run {name}'s schedule {schedule!r} needs peak_lr > 0 and total_steps >= 1")
    total = int(round(values["total_steps"]))
    fields: dict[str, Any] = dict(
        lr=values["peak_lr"],
        steps=total,
        warmup_steps=_whole(values["warmup_steps"]),
        min_lr_ratio=values["final_lr"] / values["peak_lr"] if np.isfinite(values["final_lr"]) else FINAL_LR_RATIO,
    )
    if schedule == "wsd":
        fields.update(_cooldown(table, name, rows, total))
    if schedule not in ("cosine", "wsd", "constant"):
        raise UserError(
            f"{where}: run {name}'s schedule {schedule!r}: describe cosine, wsd or constant, or log its lr column"
        )
    try:
        cfg = dataclasses.replace(TrainConfig(), schedule=schedule, **fields)
    except UserError as err:
        raise UserError(f"{where}: run {name}: {err}") from None
    return schedule_values(cfg, total, np.arange(total))


def _cooldown(table: RunTable, name: str, rows: np.ndarray, total: int) -> dict[str, Any]:
    """A wsd run's cool-down share (from cooldown_fraction, or cooldown_start: the first step of the cool-down)
    and its shape."""
    fraction, start = _first(table, "cooldown_fraction", rows), _first(table, "cooldown_start", rows)
    if not np.isfinite(fraction) and np.isfinite(start):
        fraction = (total - start) / total
    if not 0 < fraction < 1:
        raise UserError(
            f"{table.where(int(rows[0]))}: run {name}'s wsd schedule needs cooldown_fraction in (0, 1) or "
            "cooldown_start (the cool-down's first step) below total_steps"
        )
    decay = _text(table, "decay", rows) or "linear"
    return dict(cooldown_fraction=fraction, decay=decay)


def read_curves(source: Any, columns: str | Mapping[str, str] | None = None, kind: str | None = None,
                fill: str | Mapping[str, Any] | None = None) -> list[Curve]:  # fmt: skip
    """The curves of a curve table (a CSV, a JSON-lines file or a pandas DataFrame), for `fit_curve_laws`:
    each run's logged points (`kind`: train or eval; default eval where the table has eval rows) and its rates at
    every update. `columns` maps the table's names (`step=_step,loss=eval/loss,lr=optim/lr`); `fill` gives
    columns it lacks one value for every row (`run=a,schedule=cosine,peak_lr=3e-4,total_steps=10000`)."""
    return [r.curve for r in read_table_runs(source, columns, kind, fill)]
