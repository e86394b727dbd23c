"""Tables of runs from anyone's stack: one reader for every law fitted from a table (CSV, JSON lines, or a pandas
DataFrame through the Python API), with a column map for other tools' names.

A table is read into named columns: numbers as float64 arrays (an empty optional cell, or a JSON null, is NaN;
`nan` and `inf` are read as written, so that a diverged run's loss can say so) and text as str arrays. Every row
keeps the line it came from, so that a fit refusing a value names the line. Nothing is checked beyond
"present and a number": what a value must be (positive, finite, in order) is the law's to say (`RunTable.positive`,
`RunTable.finite`).

The column map (`--columns loss=eval/c4/CrossEntropyLoss,lr=optim/lr`) names, for a column the law reads, the
column of the file that holds it: a W&B history export or a TensorBoard scalar export then reads unedited.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError

JSON_LINES = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class RunTable:
    """Named columns of one table, row by row aligned, with each row's line in the source."""

    source: str  # the file's path, or "DataFrame"
    numbers: dict[str, np.ndarray]  # float64
    texts: dict[str, np.ndarray] = field(default_factory=dict)  # str
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # 1-based line (CSV: the header is line 1)

    def __len__(self) -> int:
        return len(self.lines)

    def __contains__(self, name: str) -> bool:
        return name in self.numbers or name in self.texts

    def where(self, i: int) -> str:
        """Where row i came from, for an error: 'runs.csv line 12'."""
        return f"{self.source} {'row' if self.source == 'DataFrame' else 'line'} {int(self.lines[i])}"

    def take(self, index: np.ndarray) -> RunTable:
        """The rows at `index` (a boolean mask or positions), in that order."""
        return RunTable(
            self.source,
            {k: v[index] for k, v in self.numbers.items()},
            {k: v[index] for k, v in self.texts.items()},
            self.lines[index],
        )

    def _refuse_first(self, bad: np.ndarray, name: str, what: str) -> None:
        rows = np.flatnonzero(bad)
        if len(rows):
            i = int(rows[0])
            more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
            raise UserError(f"{self.where(i)}: {name}={self.numbers[name][i]:g} {what}{more}")

    def positive(self, *names: str) -> None:
        """Refuse, naming the first row, a value of these columns (where present) that is not a positive number;
        an empty optional cell (NaN) passes."""
        for name in (n for n in names if n in self.numbers):
            values = self.numbers[name]
            self._refuse_first(~np.isnan(values) & ~(values > 0), name, "must be positive")

    def finite(self, *names: str) -> None:
        """Refuse, naming the first row, a value of these columns that is not finite (an empty cell included)."""
        for name in (n for n in names if n in self.numbers):
            self._refuse_first(~np.isfinite(self.numbers[name]), name, "is not a finite number")


def parse_columns(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """A column map from `law_name=file_name,...` (or a mapping): which column of the file holds each column the
    law reads. A file name may hold '/', ':' and spaces; it ends at the next ',' followed by `name=`."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in spec.items()}
    pairs: dict[str, str] = {}
    for part in _split_pairs(spec):
        name, sep, column = part.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise UserError(f"--columns {spec!r}: {part!r} is not NAME=COLUMN (for example loss=eval/loss)")
        if name.strip() in pairs:
            raise UserError(f"--columns {spec!r}: {name.strip()} is mapped twice")
        pairs[name.strip()] = column.strip()
    return pairs


def _split_pairs(spec: str) -> list[str]:
    """Split at the commas that start a new `name=` (a column of the file may itself hold commas)."""
    parts: list[str] = []
    for piece in spec.split(","):
        head = piece.split("=", 1)[0].strip()
        if parts and ("=" not in piece or not head.isidentifier()):
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    return parts


def read_run_table(source: Any, numbers: Sequence[str], optional_numbers: Sequence[str] = (),
                   texts: Sequence[str] = (), columns: str | Mapping[str, str] | None = None,
                   what: str = "table") -> RunTable:  # fmt: skip
    """Read the columns a law needs from a CSV, a JSON-lines file or a pandas DataFrame.

    `numbers` must be present in the file and filled in every row; `optional_numbers` and `texts` are read where
    present (an empty number is NaN, an empty text ''). `columns` maps these names to the file's (`parse_columns`);
    unmapped names are looked up as they are. Refused in one line: a file that is missing or empty, a column
    missing, a cell that is not a number (naming its line).
    """
    mapping = parse_columns(columns)
    known = [*numbers, *optional_numbers, *texts]
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise UserError(f"--columns maps {', '.join(unknown)}, which the {what} does not read; it reads {known}")
    header, rows, lines, source_name = _raw_rows(source, what)
    name_of = {name: mapping.get(name, name) for name in known}
    missing = [name for name in numbers if name_of[name] not in header]
    if missing:
        said = ", ".join(n if name_of[n] == n else f"{name_of[n]} (for {n})" for n in missing)
        raise UserError(f"{what} {source_name} lacks column(s) {said}; found {sorted(header)}")
    position = {h: i for i, h in enumerate(header)}
    table_numbers = {
        name: _number_column(rows, lines, position[name_of[name]], name_of[name], name in numbers, source_name)
        for name in [*numbers, *optional_numbers]
        if name_of[name] in position
    }
    table_texts = {
        name: np.array([_text(row, position[name_of[name]]) for row in rows], dtype=str)
        for name in texts
        if name_of[name] in position
    }
    return RunTable(source_name, table_numbers, table_texts, np.asarray(lines, dtype=int))


def header(source: Any) -> list[str] | None:
    """A table's column names without reading its rows: a CSV's first line, a DataFrame's columns; None for a
    JSON-lines file (its columns are the keys of all its rows) or a file that cannot be read."""
    if hasattr(source, "columns") and hasattr(source, "to_dict"):
        return [str(c) for c in source.columns]
    path = Path(source)
    if path.suffix.lower() in JSON_LINES or not path.is_file():
        return None
    with path.open(newline="") as fh:
        return [h.strip() for h in next(csv.reader(fh), [])]


def _text(row: list[Any], i: int) -> str:
    value = row[i] if i < len(row) else None
    missing = value is None or (isinstance(value, float) and math.isnan(value))  # a DataFrame's empty text cell
    return "" if missing else str(value).strip()


def _number_column(rows: list[list[Any]], lines: list[int], i: int, column: str, required: bool,
                   source: str) -> np.ndarray:  # fmt: skip
    out = np.empty(len(rows))
    where = "row" if source == "DataFrame" else "line"
    for k, row in enumerate(rows):
        value = row[i] if i < len(row) else None
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise UserError(f"{source} {where} {lines[k]}: column {column} is empty")
            out[k] = math.nan
            continue
        try:
            out[k] = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{source} {where} {lines[k]}: {column}={value!r} is not a number") from None
    return out


def _raw_rows(source: Any, what: str) -> tuple[list[str], list[list[Any]], list[int], str]:
    """Header, rows (cells in header order) and each row's line, from a file or a DataFrame."""
    if hasattr(source, "columns") and hasattr(source, "to_dict"):  # a pandas DataFrame, without importing pandas
        header = [str(c) for c in source.columns]
        data = source.to_dict("list")
        count = len(source)
        rows = [[_from_frame(data[c][k]) for c in source.columns] for k in range(count)]
        return header, rows, list(range(1, count + 1)), "DataFrame"
    path = Path(source)
    if not path.is_file():
        raise UserError(f"{what} {path} {'is a directory, not a file' if path.is_dir() else 'does not exist'}")
    reader = _json_rows if path.suffix.lower() in JSON_LINES else _csv_rows
    header, rows, lines = reader(path, what)
    if not rows:
        raise UserError(f"{what} {path} has no rows")
    return header, rows, lines, str(path)


def _from_frame(value: Any) -> Any:
    """A DataFrame cell: pandas' NA (and None) as an empty cell; a float NaN stays NaN, as `nan` in a CSV does (a
    diverged run's loss), and is an empty cell in a text column."""
    try:
        bool(value == value)
    except (TypeError, ValueError):  # pandas.NA has no truth value
        return None
    return value


def _csv_rows(path: Path, what: str) -> tuple[list[str], list[list[Any]], list[int]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise UserError(f"{what} {path} is empty (no header line)")
        rows, lines = [], []
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.append(row)
                lines.append(reader.line_num)
    return header, rows, lines


def _json_rows(path: Path, what: str) -> tuple[list[str], list[list[Any]], list[int]]:
    records, lines = [], []
    with path.open() as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise UserError(f"{what} {path} line {number}: not a JSON object ({err.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{what} {path} line {number}: a JSON line must be an object of column: value")
            records.append(record)
            lines.append(number)
    header = list(dict.fromkeys(key for record in records for key in record))
    rows = [[record.get(key) for key in header] for record in records]
    return header, rows, lines
