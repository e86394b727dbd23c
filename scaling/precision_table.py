"""A precision table (scaling/precision_fit.py fits it): points (N, D, loss) with each row's training bits per kind of
tensor (weights, activations, keys and values; +inf where unquantised) and, optionally, a post-training quantisation
width with the loss after it, read through the one table reader (scaling/tables.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.points import FitPoints, best_of_rows
from smallest_loss.scaling.precision_law import BITS_COLUMNS, KINDS, bits_array
from smallest_loss.scaling.tables import RunTable, read_run_table


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
    optional = ("D", "C", *BITS_COLUMNS.values(), "bits_post", "loss_post", "lr", "batch")
    table = read_run_table(source, ("N", "loss"), optional, ("run", "group"), columns, what="precision table")
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
