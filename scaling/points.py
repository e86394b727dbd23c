"""Fit input: (N, D, loss) points, validated, and the fit CSV reader (README, "File formats").

The CSV has columns `N` (parameters), `D` (tokens) and `loss`, and optionally `C` (the run's compute
budget in FLOPs; 6ND when absent), `run` (labels that group points of one run, so the bootstrap can
resample whole runs) and `group` (labels of the data set or evaluation set each point belongs to, for a
grouped fit, scaling/groups.py). Other columns are ignored. In code the `group` column's labels are
called `dataset`, so that they cannot be confused with the bootstrap's run groups (`FitPoints.group`).
"""

from __future__ import annotations

import csv
import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.region import convex_hull
from smallest_loss.scaling.tables import JSON_LINES, RunTable, header, parse_columns, read_run_table

MIN_POINTS = 6  # more points than the five Chinchilla parameters
REQUIRED_COLUMNS = ("N", "D", "loss")
BUDGET_COLUMN = "C"
GROUP_COLUMN = "run"  # bootstrap groups: points of one run
DATASET_COLUMN = "group"  # data or evaluation sets, for a grouped fit
BUDGET_RTOL = 0.03  # budgets within 3% of a budget's smallest one are that budget

ArrayLike = float | np.ndarray  # what the laws' formulas take and return: a number, or an array they broadcast over


@dataclass(frozen=True)
class FitPoints:
    """Points (N, D, loss) to fit a law to; `group` labels which run each point came from.

    The bootstrap resamples groups with replacement (Besiroglu et al. 2024 resample points; points of
    one run are correlated, so resampling runs is the safer default when labels exist). By default
    each point is its own group. `C` is each point's compute budget in FLOPs (6ND when not given);
    `dataset` labels the data or evaluation set of each point (None: one set).
    """

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    group: np.ndarray | None = None
    C: np.ndarray | None = None
    dataset: np.ndarray | None = None

    def __post_init__(self) -> None:
        names = REQUIRED_COLUMNS + (() if self.C is None else (BUDGET_COLUMN,))
        arrays = {}
        for name in names:
            try:
                arr = np.asarray(getattr(self, name), dtype=np.float64).ravel()
            except (TypeError, ValueError):
                raise UserError(f"FitPoints.{name} must be numbers") from None
            arrays[name] = arr
        n = len(arrays["N"])
        if any(len(arr) != n for arr in arrays.values()):
            lengths = {k: len(v) for k, v in arrays.items()}
            raise UserError(f"FitPoints columns must have the same length, got {lengths}")
        if n < MIN_POINTS:
            raise UserError(f"need at least {MIN_POINTS} points to fit 5 parameters, got {n}; add more runs")
        for name, arr in arrays.items():
            bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
            if bad.size:
                i = int(bad[0])
                raise UserError(f"{name} must be positive and finite; point {i} has {name}={arr[i]!r}")
            object.__setattr__(self, name, arr)
        for name in ("group", "dataset"):
            labels = getattr(self, name)
            if labels is not None and len(np.asarray(labels).ravel()) != n:
                raise UserError(f"FitPoints.{name} has {len(np.asarray(labels).ravel())} labels for {n} points")
        object.__setattr__(self, "group", np.arange(n) if self.group is None else np.asarray(self.group).ravel())
        if self.dataset is not None:
            object.__setattr__(self, "dataset", np.asarray(self.dataset).ravel().astype(str))

    def __len__(self) -> int:
        return len(self.N)

    @property
    def group_index(self) -> tuple[np.ndarray, int]:
        """(index of each point's group in 0..G-1, number of groups G)."""
        _, inverse = np.unique(self.group, return_inverse=True)
        return inverse.ravel(), int(inverse.max()) + 1

    @property
    def fitted_range(self) -> dict[str, Any]:
        """[smallest, largest] of N, D and C over the points, and `hull`, the vertices of their convex hull in
        (log10 N, log10 D) (scaling/region.py; absent for points on one line): where a law fitted to them holds (a
        law file records it, and a plan outside it warns by how many decades)."""
        out: dict[str, Any] = {k: [float(v.min()), float(v.max())]
                               for k, v in (("N", self.N), ("D", self.D), ("C", self.budgets))}  # fmt: skip
        hull = convex_hull(np.column_stack([np.log10(self.N), np.log10(self.D)]))
        if hull is not None:
            out["hull"] = [[round(float(x), 6), round(float(y), 6)] for x, y in hull]
        return out

    @property
    def budgets(self) -> np.ndarray:
        """Each point's compute budget in FLOPs: the given C, else 6ND (Kaplan et al. 2020)."""
        return 6.0 * self.N * self.D if self.C is None else self.C

    def take(self, mask: np.ndarray) -> FitPoints:
        """The points where `mask` (booleans or indices) selects, with their labels and budgets."""
        C, dataset = (None if a is None else a[mask] for a in (self.C, self.dataset))
        return FitPoints(self.N[mask], self.D[mask], self.loss[mask], self.group[mask], C, dataset)


def budget_labels(C: np.ndarray, rtol: float = BUDGET_RTOL) -> np.ndarray:
    """Label points by budget: in increasing order, a budget starts at the smallest C not yet labelled
    and takes every C within `rtol` of it. Unlike chaining neighbours, no budget spans more than `rtol`,
    so a design whose points all have different C (random N and D) never collapses into one budget."""
    C = np.asarray(C, dtype=np.float64)
    order = np.argsort(C)
    ordered = C[order]
    starts = [0]
    while True:  # one pass per budget, not per point
        nxt = int(np.searchsorted(ordered, ordered[starts[-1]] * (1 + rtol), side="right"))
        if nxt >= len(C):
            break
        starts.append(nxt)
    labels = np.empty(len(C), dtype=np.int64)
    labels[order] = np.cumsum(np.isin(np.arange(len(C)), starts)) - 1
    return labels


def centring(points: FitPoints) -> tuple[float, float]:
    """Mean log N and mean log D of the points: the centre the fits' coordinates are taken from."""
    return float(np.log(points.N).mean()), float(np.log(points.D).mean())


def check_spread(points: FitPoints) -> None:
    """A law in N and D needs several model sizes and several token counts."""
    for name in ("N", "D"):
        distinct = len(np.unique(getattr(points, name)))
        if distinct < 2:
            raise UserError(
                f"all {len(points.N)} points share one {name}; a law in N and D needs runs with "
                f"several values of {name}"
            )


def check_budgets(points: FitPoints, path: str | Path) -> None:
    """Refuse points that all share one compute budget: on one IsoFLOP profile N and D move together, so
    the fit cannot tell the model-size term from the data term."""
    if budget_labels(points.budgets).max() == 0:
        source = "its C column" if points.C is not None else "6ND, as it has no C column"
        raise UserError(
            f"fit CSV {path}: all {len(points)} points share one compute budget (from {source}); a law "
            "in N and D needs points at two or more budgets"
        )


# A table's C may count FLOPs more exactly than 6ND (attention, the output layer): within this factor of 6ND it is
# taken as given; beyond it, most likely in other units or for other rows, and a fit says how many rows disagree.
C_TOLERANCE = 3.0


def budget_mismatch(points: FitPoints) -> str | None:
    """Where a table's C column disagrees with 6ND by more than C_TOLERANCE ("C differs from 6ND ... in k of n
    rows (row r: ...)"), or None when it agrees everywhere (or there is no C column)."""
    if points.C is None:
        return None
    ratio = points.C / (6.0 * points.N * points.D)
    off = np.flatnonzero((ratio > C_TOLERANCE) | (ratio < 1 / C_TOLERANCE))
    if not len(off):
        return None
    i = int(off[0])
    return (
        f"C differs from 6ND by more than {C_TOLERANCE:g}x in {len(off)} of {len(points)} rows (row {i + 2}: "
        f"C = {points.C[i]:.3g}, 6ND = {6 * points.N[i] * points.D[i]:.3g})"
    )


def read_fit_csv(path: str | Path) -> FitPoints:
    """Read a fit CSV (columns N, D, loss; optional C, run, group; others ignored) into validated `FitPoints`.

    Rows are parsed one at a time into a flat array (8 bytes a value), so a million rows take tens of
    megabytes, not a list of dicts.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"fit CSV {path} is a directory, not a file; pass a CSV with columns N, D, loss")
    if not path.is_file():
        raise UserError(f"fit CSV {path} does not exist; pass a CSV with columns N, D, loss")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        tokens_from_budget = "D" not in header and BUDGET_COLUMN in header  # D = C / (6N)
        missing = [c for c in REQUIRED_COLUMNS if c not in header and not (c == "D" and tokens_from_budget)]
        if missing:
            raise UserError(f"fit CSV {path} lacks column(s) {', '.join(missing)}; found {header or 'no header'}")
        numeric = ("N", BUDGET_COLUMN, "loss", BUDGET_COLUMN) if tokens_from_budget else REQUIRED_COLUMNS
        numeric += (BUDGET_COLUMN,) if BUDGET_COLUMN in header and not tokens_from_budget else ()
        columns = [header.index(c) for c in numeric]
        labelled = {name: header.index(name) for name in (GROUP_COLUMN, DATASET_COLUMN) if name in header}
        values, labels = array("d"), {name: [] for name in labelled}
        for row in reader:
            if not row:
                continue  # a blank line
            values.extend(_row_values(row, columns, numeric, reader.line_num, path))
            for name, i in labelled.items():
                labels[name].append(_label(row, i, name, reader.line_num, path))
    table = np.frombuffer(values, dtype=np.float64).reshape(-1, len(numeric))
    if len(table) < MIN_POINTS:
        raise UserError(f"fit CSV {path} has {len(table)} rows; need at least {MIN_POINTS} to fit 5 parameters")
    run, dataset = (np.array(labels[name]) if name in labels else None for name in (GROUP_COLUMN, DATASET_COLUMN))
    D = table[:, 1] / (6.0 * table[:, 0]) if tokens_from_budget else table[:, 1]
    return FitPoints(N=table[:, 0], D=D, loss=table[:, 2], group=run,
                     C=table[:, 3] if len(numeric) > 3 else None, dataset=dataset)  # fmt: skip


def _label(row: list[str], i: int, column: str, row_number: int, path: Path) -> str:
    """A `run` cell as written (empty allowed: one unlabelled run); a `group` cell must name its set."""
    text = row[i].strip() if i < len(row) else ""
    if column == DATASET_COLUMN and not text:
        raise UserError(f"fit CSV {path} row {row_number}: column {column} is empty; name every point's set")
    return text


def _row_values(row: list[str], columns: list[int], names: tuple[str, ...], row_number: int,
                path: Path) -> list[float]:  # fmt: skip
    """The row's numeric cells; a precise error (via `_cell`) for the first bad cell."""
    cells = [row[i] if i < len(row) else None for i in columns]
    try:
        values = [float(text) for text in cells]  # type: ignore[arg-type]
        if all(math.isfinite(v) and v > 0 for v in values):
            return values
    except (TypeError, ValueError):
        pass
    return [_cell(text, c, row_number, path) for text, c in zip(cells, names, strict=True)]


def _cell(text: str | None, column: str, row_number: int, path: Path) -> float:
    if text is None or text.strip() == "":
        raise UserError(f"fit CSV {path} row {row_number}: column {column} is empty")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"fit CSV {path} row {row_number}: {column}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"fit CSV {path} row {row_number}: {column}={text!r} is not finite")
    if value <= 0:
        raise UserError(f"fit CSV {path} row {row_number}: {column}={text!r} must be positive")
    return value


SWEEP_COLUMNS = ("lr", "batch")  # columns in which a learning-rate or batch sweep's rows at one (N, D) differ


def sweep_table(path: Any, columns: str | Mapping[str, str] | None = None) -> RunTable:
    """A fit table's N, D, loss and sweep columns (lr, batch; where present) and its `group` labels, row by row as
    `read_fit_table` reads them."""
    return read_run_table(path, REQUIRED_COLUMNS, SWEEP_COLUMNS, (DATASET_COLUMN,), columns, what="fit CSV")


SHAPE_NAMES = ("d", "n")  # a table's optional width and depth columns


def aspect_range(d: Any, n: Any) -> list[float] | None:
    """[smallest, largest] aspect ratio d/n over the rows that give both (None when none does): the widths against
    depths a law's runs spanned, which a plan with a law in N and D alone keeps to (scaling/plan.py)."""
    ratio = np.asarray(d, np.float64) / np.asarray(n, np.float64)
    ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
    return [float(ratio.min()), float(ratio.max())] if ratio.size else None


def table_aspect_range(source: Any, columns: str | Mapping[str, str] | None = None) -> list[float] | None:
    """`aspect_range` of a table's `d` and `n` columns (named through `columns` like the others); None when it has
    neither (a CSV's header is read first, so a table without them costs nothing more)."""
    names = {k: v for k, v in parse_columns(columns).items() if k in SHAPE_NAMES}
    found = header(source)
    if found is not None and not all(names.get(k, k) in found for k in SHAPE_NAMES):
        return None
    table = read_run_table(source, (), SHAPE_NAMES, (), names, what="fit table")
    if not all(k in table.numbers for k in SHAPE_NAMES):
        return None
    return aspect_range(table.numbers["d"], table.numbers["n"])


def read_fit_table(source: Any, columns: str | Mapping[str, str] | None = None) -> FitPoints:
    """A fit table from any source: a CSV without a column map (`read_fit_csv`, the lean reader for a million
    rows), else through the one run-table reader (`tables.read_run_table`): a JSON-lines file, a pandas
    DataFrame, or a file whose columns other tools named (`columns`: `N=params,D=tokens,loss=eval/loss`)."""
    if not columns and isinstance(source, (str, Path)) and Path(source).suffix.lower() not in JSON_LINES:
        return read_fit_csv(source)
    table = read_run_table(source, ("N", "loss"), ("D", BUDGET_COLUMN), (GROUP_COLUMN, DATASET_COLUMN), columns,
                           what="fit table")  # fmt: skip
    _tokens(table, columns)
    table.finite(*REQUIRED_COLUMNS)
    table.positive(*REQUIRED_COLUMNS, BUDGET_COLUMN)
    if len(table) < MIN_POINTS:
        raise UserError(
            f"fit table {table.source} has {len(table)} rows; need at least {MIN_POINTS} to fit 5 parameters"
        )
    if DATASET_COLUMN in table.texts and not all(table.texts[DATASET_COLUMN]):
        i = int(np.flatnonzero(table.texts[DATASET_COLUMN] == "")[0])
        raise UserError(f"{table.where(i)}: column {DATASET_COLUMN} is empty; name every point's set")
    C = table.numbers.get(BUDGET_COLUMN)
    if C is not None and np.isnan(C).any():
        raise UserError(f"{table.where(int(np.flatnonzero(np.isnan(C))[0]))}: column C is empty")
    n = table.numbers
    return FitPoints(N=n["N"], D=n["D"], loss=n["loss"], group=table.texts.get(GROUP_COLUMN), C=C,
                     dataset=table.texts.get(DATASET_COLUMN))  # fmt: skip


def _tokens(table: RunTable, columns: str | Mapping[str, str] | None) -> None:
    """D as the table gives it, else C / (6N) from its budget column C; refused in one line when neither is there."""
    if "D" in table.numbers:
        return
    if BUDGET_COLUMN not in table.numbers:
        name = parse_columns(columns).get("D", "D")
        raise UserError(f"fit table {table.source} lacks column(s) {name}; give tokens D, or budgets C (D = C / 6N)")
    table.finite(BUDGET_COLUMN)
    table.numbers["D"] = table.numbers[BUDGET_COLUMN] / (6.0 * table.numbers["N"])


def _point_keys(table: RunTable, within: tuple[str, ...]) -> np.ndarray:
    """Each row's (N, D, group, `within` columns) as one label: the rows of one point of the fit."""
    parts = [table.numbers["N"], table.numbers["D"], *(table.numbers[c] for c in within)]
    labels = table.texts.get(DATASET_COLUMN, np.full(len(table), ""))
    return np.array([repr((*(float(p[i]) for p in parts), str(labels[i]))) for i in range(len(table))])


def sweep_check(source: Any, columns: str | Mapping[str, str] | None = None) -> str | None:
    """`sweep_warning` of a fit table, which is read again only when its header names a sweep column (a plain table
    of a million rows is not read twice)."""
    names = {parse_columns(columns).get(c, c) for c in SWEEP_COLUMNS}
    known = header(source)
    if known is not None and not names & set(known):
        return None
    return sweep_warning(sweep_table(source, columns))


def sweep_warning(table: RunTable) -> str | None:
    """One line when rows share (N, D) but differ in lr or batch (a sweep fitted through its untuned runs);
    None when no sweep column is present or no (N, D) has several rows."""
    present = [c for c in SWEEP_COLUMNS if c in table.numbers]
    if not present:
        return None
    _, inverse, counts = np.unique(_point_keys(table, ()), return_inverse=True, return_counts=True)
    several = counts > 1
    if not several.any():
        return None
    rows = int(counts[several].sum())
    return (
        f"warning: {int(several.sum())} (N, D) points have several runs ({rows} rows, differing in "
        f"{' or '.join(present)}): the law is fitted through every one, untuned runs included; --best-of "
        f"{','.join(present)} keeps each point's best run"
    )


def best_of_rows(table: RunTable, columns: str) -> np.ndarray:
    """The rows kept by `--best-of COLUMNS` (lr,batch): of the rows sharing (N, D), its `group` and the sweep
    columns not named, the one with the lowest loss (the first of equals), in the table's order."""
    named = tuple(c.strip() for c in columns.split(",") if c.strip())
    unknown = [c for c in named if c not in SWEEP_COLUMNS]
    if not named or unknown:
        raise UserError(f"--best-of {columns!r}: name columns among {', '.join(SWEEP_COLUMNS)} (for example lr,batch)")
    absent = [c for c in named if c not in table.numbers]
    if absent:
        raise UserError(f"--best-of {columns}: fit CSV {table.source} has no column {', '.join(absent)}")
    within = tuple(c for c in SWEEP_COLUMNS if c in table.numbers and c not in named)
    keys, loss = _point_keys(table, within), table.numbers["loss"]
    order = np.lexsort((np.arange(len(table)), loss, keys))  # by key, then loss, then row
    first = np.r_[True, keys[order][1:] != keys[order][:-1]]
    return np.sort(order[first])
