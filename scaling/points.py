"""Fit input: (N, D, loss) points, validated, and the fit CSV reader (README, "File formats").

The CSV has columns `N` (parameters), `D` (tokens) and `loss`; extra columns are ignored, except an
optional `run` column, whose values label groups so the bootstrap can resample whole runs.
"""

from __future__ import annotations

import csv
import math
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from smallest_loss.configs.errors import UserError

MIN_POINTS = 6  # more points than the five Chinchilla parameters
REQUIRED_COLUMNS = ("N", "D", "loss")
GROUP_COLUMN = "run"


@dataclass(frozen=True)
class FitPoints:
    """Points (N, D, loss) to fit a law to; `group` labels which run each point came from.

    The bootstrap resamples groups with replacement (Besiroglu et al. 2024 resample points; points of
    one run are correlated, so resampling runs is the safer default when labels exist). By default
    each point is its own group.
    """

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        arrays = {}
        for name in REQUIRED_COLUMNS:
            try:
                arr = np.asarray(getattr(self, name), dtype=np.float64).ravel()
            except (TypeError, ValueError):
                raise UserError(f"FitPoints.{name} must be numbers") from None
            arrays[name] = arr
        n = len(arrays["N"])
        if len(arrays["D"]) != n or len(arrays["loss"]) != n:
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
        group = np.arange(n) if self.group is None else np.asarray(self.group).ravel()
        if len(group) != n:
            raise UserError(f"FitPoints.group has {len(group)} labels for {n} points")
        object.__setattr__(self, "group", group)

    def __len__(self) -> int:
        return len(self.N)

    @property
    def group_index(self) -> tuple[np.ndarray, int]:
        """(index of each point's group in 0..G-1, number of groups G)."""
        _, inverse = np.unique(self.group, return_inverse=True)
        return inverse.ravel(), int(inverse.max()) + 1


def read_fit_csv(path: str | Path) -> FitPoints:
    """Read a fit CSV (columns N, D, loss; optional run; others ignored) into validated `FitPoints`.

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
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise UserError(f"fit CSV {path} lacks column(s) {', '.join(missing)}; found {header or 'no header'}")
        columns = [header.index(c) for c in REQUIRED_COLUMNS]
        run = header.index(GROUP_COLUMN) if GROUP_COLUMN in header else None
        values, groups = array("d"), []
        for row in reader:
            if not row:
                continue  # a blank line
            values.extend(_row_values(row, columns, reader.line_num, path))
            if run is not None:
                groups.append(row[run] if run < len(row) else "")
    table = np.frombuffer(values, dtype=np.float64).reshape(-1, len(REQUIRED_COLUMNS))
    if len(table) < MIN_POINTS:
        raise UserError(f"fit CSV {path} has {len(table)} rows; need at least {MIN_POINTS} to fit 5 parameters")
    return FitPoints(N=table[:, 0], D=table[:, 1], loss=table[:, 2], group=np.array(groups) if groups else None)


def _row_values(row: list[str], columns: list[int], row_number: int, path: Path) -> list[float]:
    """The row's N, D, loss; a precise error (via `_cell`) for the first bad cell."""
    cells = [row[i] if i < len(row) else None for i in columns]
    try:
        values = [float(text) for text in cells]  # type: ignore[arg-type]
        if all(math.isfinite(v) and v > 0 for v in values):
            return values
    except (TypeError, ValueError):
        pass
    return [_cell(text, c, row_number, path) for text, c in zip(cells, REQUIRED_COLUMNS, strict=True)]


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
