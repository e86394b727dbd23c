"""A precision table (scaling/precision_fit.py fits it): points (N, D, loss) with each row's training bits per kind of
tensor (weights, activations, keys and values; +inf where unquantised) and, optionally, a post-training quantisation
width with the loss after it, read through the one table reader (scaling/tables.py).

Post-training quantisation comes in either of two forms: long, a `bits_post` and a `loss_post` column (a run
quantised to several widths takes a row per width), or wide, one `loss_post_<P>` column per width P (one row per
run, as `smallest-loss table` writes it; CSV or DataFrame), read as the long form. Either way a run counts once in
the training law (`PrecisionPoints.training_rows`), however many widths it was quantised to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.points import FitPoints, best_of_rows
from smallest_loss.scaling.precision_law import BITS_COLUMNS, KINDS, bits_array
from smallest_loss.scaling.tables import RunTable, header, read_run_table

WIDE_POST = re.compile(r"loss_post_(\d+)$")  # a wide post-training column: loss_post_4


@dataclass(frozen=True)
class PrecisionPoints:
    """Points (N, D, loss) and each row's training bits per kind (+inf: unquantised); optionally each row's
    post-training quantisation width and the loss after it."""

    points: FitPoints
    bits: dict[str, np.ndarray]
    bits_post: np.ndarray | None = None
    loss_post: np.ndarray | None = None

    def take(self, index: np.ndarray) -> PrecisionPoints:
        post = None if self.bits_post is None else (self.bits_post[index], self.loss_post[index])
        return PrecisionPoints(self.points.take(index), {k: v[index] for k, v in self.bits.items()},
                               *(post or (None, None)))  # fmt: skip

    def configs(self) -> np.ndarray:
        """Each row's training precision as a label: 'w3 a3' ('fp' for unquantised training)."""
        parts = [[f"{k}{b:g}" for k, b in zip(KINDS, row, strict=True) if math.isfinite(b)]
                 for row in zip(*(self.bits[k] for k in KINDS), strict=True)]  # fmt: skip
        return np.array([" ".join(p) or "fp" for p in parts])

    def training_rows(self) -> np.ndarray:
        """The rows that are training points, one per run: a run quantised after training to several widths has a
        row per width (each with its loss as trained), and counts once. A run is its `run` name, else its (N, D,
        loss, training bits)."""
        if self.bits_post is None:
            return np.arange(len(self.points))
        p = self.points
        if p.group.dtype.kind in "US" and all(p.group):
            key = p.group
        else:
            key = np.array([repr(row) for row in zip(p.N, p.D, p.loss, *(self.bits[k] for k in KINDS), strict=True)])
        return np.sort(np.unique(key, return_index=True)[1])

    def levels(self, kind: str) -> int:
        """How many distinct widths (unquantised one of them) the kind's bits take."""
        return len(np.unique(self.bits[kind]))


# ---------------------------------------------------------------------------------------------------
# Reading a table.


def read_precision_table(source: Any, best_of: str | None = None,
                         columns: str | Mapping[str, str] | None = None) -> PrecisionPoints:  # fmt: skip
    """A precision table (columns N, D or C, loss; any of bits_w, bits_a, bits_kv; optional bits_post with
    loss_post, run, lr, batch) through the one table reader. `best_of` (lr,batch): of the rows of one (N, D,
    precision) differing in these columns, the lowest-loss one."""
    wide = [name for name in header(source) or () if WIDE_POST.match(name)]
    optional = ("D", "C", *BITS_COLUMNS.values(), "bits_post", "loss_post", "lr", "batch", *wide)
    table = read_run_table(source, ("N", "loss"), optional, ("run", "group"), columns, what="precision table")
    if wide:
        table = _long_form(table, wide)
    if "group" in table.texts:
        raise UserError(f"precision table {table.source}: a 'group' column is a grouped fit; fit the groups apart")
    if "D" not in table.numbers:
        if "C" not in table.numbers:
            raise UserError(f"precision table {table.source} lacks column D; give tokens D, or budgets C (D = C/6N)")
        table.finite("C")
        table.numbers["D"] = table.numbers["C"] / (6.0 * table.numbers["N"])
    table.finite("N", "D", "loss")
    table.positive("N", "D", "loss")
    bits = {k: _bits_column(table, BITS_COLUMNS[k]) for k in KINDS}
    post = _post_columns(table)
    if best_of is not None:
        keep = _best_of(table, bits, post[0], best_of)
        table, bits = table.take(keep), {k: v[keep] for k, v in bits.items()}
        post = (None, None) if post[0] is None else (post[0][keep], post[1][keep])
    points = FitPoints(table.numbers["N"], table.numbers["D"], table.numbers["loss"], table.texts.get("run"))
    return PrecisionPoints(points, bits, *post)


def _bits_column(table: RunTable, column: str) -> np.ndarray:
    if column not in table.numbers:
        return np.full(len(table), math.inf)
    values = table.numbers[column]
    for i, value in enumerate(values):
        try:
            bits_array(value, column)
        except UserError as err:
            raise UserError(f"{table.where(i)}: {err}") from None
    return bits_array(values, column)


def _long_form(table: RunTable, wide: list[str]) -> RunTable:
    """`loss_post_<P>` columns as the long form: every row as it is (nothing quantised after training), then a copy
    of it per width it has a loss for, with bits_post P and loss_post that loss."""
    if "bits_post" in table.numbers or "loss_post" in table.numbers:
        raise UserError(f"precision table {table.source}: give bits_post with loss_post, or loss_post_<bits> "
                        "columns, not both")  # fmt: skip
    index, bits, loss = [np.arange(len(table))], [np.full(len(table), np.nan)], [np.full(len(table), np.nan)]
    for name in wide:
        values = table.numbers.pop(name)
        rows = np.flatnonzero(~np.isnan(values))
        index.append(rows)
        bits.append(np.full(rows.size, float(WIDE_POST.match(name).group(1))))
        loss.append(values[rows])
    if "run" not in table.texts:  # a row's copies are one run: the bootstrap resamples them together
        table.texts["run"] = np.array([f"line {line}" for line in table.lines], dtype=str)
    out = table.take(np.concatenate(index))
    out.numbers.update(bits_post=np.concatenate(bits), loss_post=np.concatenate(loss))
    return out


def _post_columns(table: RunTable) -> tuple[np.ndarray | None, np.ndarray | None]:
    """bits_post and loss_post: both or neither; loss_post filled (finite, positive) wherever bits_post quantises."""
    has = ("bits_post" in table.numbers, "loss_post" in table.numbers)
    if has == (False, False):
        return None, None
    if has != (True, True):
        raise UserError(f"precision table {table.source}: columns bits_post and loss_post go together")
    bits = _bits_column(table, "bits_post")
    loss = table.numbers["loss_post"]
    bad = np.flatnonzero(np.isfinite(bits) & ~(np.isfinite(loss) & (loss > 0)))
    if bad.size:
        raise UserError(f"{table.where(int(bad[0]))}: loss_post must be a positive number where bits_post is given")
    return bits, loss


def _best_of(table: RunTable, bits: dict[str, np.ndarray], bits_post: np.ndarray | None, spec: str) -> np.ndarray:
    """`best_of_rows` within each precision configuration (rows of different bits are different points)."""
    key = np.stack([bits[k] for k in KINDS] + ([bits_post] if bits_post is not None else []), axis=1)
    _, config = np.unique(key, axis=0, return_inverse=True)
    keep = [np.flatnonzero(config.ravel() == c)[best_of_rows(table.take(config.ravel() == c), spec)]
            for c in np.unique(config)]  # fmt: skip
    return np.sort(np.concatenate(keep))
