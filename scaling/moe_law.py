"""Mixture-of-experts loss laws: the joint law in active parameters, tokens and expert count, and its table.

The joint law (Ludziejewski et al. 2025, "Joint MoE Scaling Laws", arXiv 2502.05172, eq. 1):

    L(N_act, D, E) = a Ehat^delta N_act^-(alpha + gamma ln Ehat) + b Ehat^omega D^-(beta + zeta ln Ehat) + c.

We write the exponents with Chinchilla's sign (alpha, beta > 0: more parameters and tokens lower the loss); the
paper writes N_act^(alpha + gamma ln Ehat) with alpha < 0, so its alpha is our -alpha (beta and the interaction
terms likewise). Ehat is a saturating transform of the expert count E (dense runs: E = 1):

    1/Ehat = 1/(E - 1 + (1/(E_start - 1) - 1/E_max)^-1) + 1/E_max,

the transform of Clark et al. 2022 ("Unified scaling laws for routed language models", eq. 5) in the form that gives
Ehat(1) = E_start - 1. We could not check Ludziejewski et al.'s exact constants against their text, so E_start and
E_max are settings here, not fitted: E_START = 2 makes Ehat(1) = 1, so that a dense run's law is Chinchilla's
(E + A/N^alpha + B/D^beta with E = c, A = a, B = b); Ehat grows like E for E well below E_max and saturates at E_max.

The granularity law (Krajewski et al. 2024, "Scaling laws for fine-grained mixture of experts", arXiv 2402.07871,
eq. 5): L(N, D, G) = c + (g / G^gamma_g + a) / N^alpha + b / D^beta, with G the expert granularity (1: experts
the size of the dense feed-forward layer).

Both are fitted by scaling/moe_fit.py; this module holds the laws and reads their tables (through the one run-table
reader, scaling/tables.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.points import SWEEP_COLUMNS, ArrayLike
from smallest_loss.scaling.tables import RunTable, read_run_table

E_START = 2.0  # Ehat(1) = E_START - 1 = 1: the dense law is Chinchilla's
E_MAX = 256.0  # where Ehat saturates (a setting, not fitted; `fit --moe-emax`)
MOE_FORMS = ("joint", "granularity")
CONFIG_COLUMNS = ("N_active", "N_total", "experts", "top_k", "D", "granularity")  # one configuration's key
MIN_MOE_POINTS = 8  # more points than the joint law's nine constants leave no spare; fewer is refused


def effective_experts(E: ArrayLike, e_start: float = E_START, e_max: float = E_MAX) -> np.ndarray:
    """Ehat of expert counts E >= 1 (module docstring): Ehat(1) = e_start - 1, Ehat -> e_max as E grows."""
    E = np.asarray(E, dtype=np.float64)
    offset = 1.0 / (1.0 / (e_start - 1.0) - 1.0 / e_max)
    return 1.0 / (1.0 / (E - 1.0 + offset) + 1.0 / e_max)


@dataclass(frozen=True)
class MoeLaw:
    """A fitted MoE law: `form` "joint" (Ludziejewski et al. 2025) or "granularity" (Krajewski et al. 2024).

    Joint: a Ehat^delta N^-(alpha + gamma ln Ehat) + b Ehat^omega D^-(beta + zeta ln Ehat) + c. Granularity:
    c + (g / G^gamma_g + a) / N^alpha + b / D^beta. The constants a form does not use are 0. `intervals` and
    `samples` are the bootstrap's (pairing one to one across constants)."""

    form: str
    a: float
    b: float
    c: float
    alpha: float
    beta: float
    gamma: float = 0.0
    zeta: float = 0.0
    delta: float = 0.0
    omega: float = 0.0
    g: float = 0.0
    gamma_g: float = 0.0
    e_start: float = E_START
    e_max: float = E_MAX
    intervals: dict[str, tuple[float, float]] | None = field(default=None, compare=False)
    samples: dict[str, np.ndarray] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.form not in MOE_FORMS:
            raise UserError(f"MoeLaw.form={self.form!r}: use one of {', '.join(MOE_FORMS)}")
        for f in fields(self):
            if f.name in ("form", "intervals", "samples"):
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not math.isfinite(value):
                raise UserError(f"MoeLaw.{f.name}={value!r} must be a finite number")
            object.__setattr__(self, f.name, float(value))
        for name in ("a", "b", "c", "g"):
            if getattr(self, name) < 0:
                raise UserError(f"MoeLaw.{name}={getattr(self, name)!r} must be >= 0")
        if not (1.0 < self.e_start < self.e_max):
            raise UserError(f"MoeLaw: e_start={self.e_start!r} and e_max={self.e_max!r} need 1 < e_start < e_max")

    @property
    def constants(self) -> dict[str, float]:
        """The form's fitted constants by name."""
        names = JOINT_NAMES if self.form == "joint" else GRANULARITY_NAMES
        return {k: getattr(self, k) for k in names}

    def loss(self, N_act: ArrayLike, D: ArrayLike, E: ArrayLike = 1, G: ArrayLike = 1) -> ArrayLike:
        """The predicted loss of N_act active parameters trained on D tokens with E experts (1: dense) of
        granularity G (the granularity form's; the joint form ignores it), broadcast."""
        N = np.asarray(N_act, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        E = np.asarray(E, dtype=np.float64)
        if np.any(~(N > 0)) or np.any(~(D > 0)) or np.any(~(E >= 1)):
            raise UserError(f"MoE law: N_act={N_act!r} and D={D!r} must be positive and E={E!r} at least 1")
        if self.form == "granularity":
            G = np.asarray(G, dtype=np.float64)
            if np.any(~(G > 0)):
                raise UserError(f"MoE law: granularity G={G!r} must be positive")
            out = self.c + (self.g / G**self.gamma_g + self.a) / N**self.alpha + self.b / D**self.beta
        else:
            lE = np.log(effective_experts(E, self.e_start, self.e_max))
            out = (self.a * np.exp(self.delta * lE) * N ** -(self.alpha + self.gamma * lE)
                   + self.b * np.exp(self.omega * lE) * D ** -(self.beta + self.zeta * lE) + self.c)  # fmt: skip
        return float(out) if np.ndim(out) == 0 else out

    def predict(self, N_act: ArrayLike, D: ArrayLike, E: ArrayLike = 1, G: ArrayLike = 1) -> ArrayLike:
        """The same as `loss`."""
        return self.loss(N_act, D, E, G)

    def dense(self) -> tuple[float, float, float, float, float]:
        """(E, A, B, alpha, beta) of the dense restriction (E = 1, G = 1) as a Chinchilla law."""
        lE = float(np.log(effective_experts(1.0, self.e_start, self.e_max)))
        if self.form == "granularity":
            return self.c, self.g + self.a, self.b, self.alpha, self.beta
        return (self.c, self.a * math.exp(self.delta * lE), self.b * math.exp(self.omega * lE),
                self.alpha + self.gamma * lE, self.beta + self.zeta * lE)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The law file's `moe` section."""
        out: dict[str, Any] = {"form": self.form, **self.constants, "e_start": self.e_start, "e_max": self.e_max}
        if self.intervals is not None:
            out["intervals"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.intervals.items()}
        if self.samples is not None:
            out["samples"] = {k: [float(x) for x in np.asarray(v).ravel()] for k, v in self.samples.items()}
        return out


JOINT_NAMES = ("a", "b", "c", "alpha", "beta", "gamma", "zeta", "delta", "omega")
GRANULARITY_NAMES = ("a", "b", "c", "g", "alpha", "beta", "gamma_g")


def moe_from_dict(raw: Any, source: str) -> MoeLaw:
    """The law file's `moe` section (as `MoeLaw.to_dict` writes it); refused in one line naming `source`."""
    where = f"{source}: moe section"
    if not isinstance(raw, dict) or raw.get("form") not in MOE_FORMS:
        raise UserError(f"{where} must be an object with form one of {', '.join(MOE_FORMS)}")
    names = JOINT_NAMES if raw["form"] == "joint" else GRANULARITY_NAMES
    values: dict[str, Any] = {}
    for name in (*names, "e_start", "e_max"):
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{where}: {name}={value!r} must be a number")
        values[name] = float(value)
    intervals, samples = raw.get("intervals"), raw.get("samples")
    try:
        if intervals is not None:
            intervals = {str(k): (float(v[0]), float(v[1])) for k, v in intervals.items()}
        if samples is not None:
            samples = {str(k): np.asarray(v, dtype=np.float64) for k, v in samples.items()}
    except (AttributeError, TypeError, ValueError, IndexError):
        raise UserError(f"{where}: intervals must be {{name: [lo, hi]}} and samples {{name: [values]}}") from None
    try:
        return MoeLaw(form=raw["form"], intervals=intervals, samples=samples, **values)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


# ---------------------------------------------------------------------------------------------------
# The table: one row per run (or per configuration), read through scaling/tables.py.


@dataclass(frozen=True)
class MoePoints:
    """Runs of a MoE table: active parameters N, tokens D, expert count E (1: dense), loss; optionally total
    parameters, top-k and granularity G (NaN where a row leaves them empty)."""

    N: np.ndarray
    D: np.ndarray
    E: np.ndarray
    loss: np.ndarray
    N_total: np.ndarray
    top_k: np.ndarray
    G: np.ndarray
    source: str = "table"

    def __len__(self) -> int:
        return len(self.loss)

    def take(self, index: np.ndarray) -> MoePoints:
        return MoePoints(self.N[index], self.D[index], self.E[index], self.loss[index], self.N_total[index],
                         self.top_k[index], self.G[index], self.source)  # fmt: skip

    @property
    def budgets(self) -> np.ndarray:
        """C = 6 N_act D: the training compute of each run (Ludziejewski et al. 2025 count active parameters)."""
        return 6.0 * self.N * self.D

    def configurations(self) -> np.ndarray:
        """An integer per row naming its configuration (N_act, N_total, E, top-k, D, G): the bootstrap's unit."""
        keys = np.column_stack([np.nan_to_num(v, nan=-1.0) for v in
                                (self.N, self.N_total, self.E, self.top_k, self.D, self.G)])  # fmt: skip
        return np.unique(keys, axis=0, return_inverse=True)[1].ravel()


def _active_column(table: RunTable) -> None:
    """N_active from the table's N_active, else its N (a dense table's name for the same count)."""
    if "N_active" not in table.numbers:
        if "N" not in table.numbers:
            raise UserError(f"MoE table {table.source} lacks column N_active (or N): the active parameters per token")
        table.numbers["N_active"] = table.numbers["N"]


def read_moe_table(source: Any, columns: str | Mapping[str, str] | None = None,
                   best_of: str | None = None) -> MoePoints:  # fmt: skip
    """A MoE table (CSV, JSON lines or DataFrame): columns N_active (or N), experts, D, loss; optional N_total,
    top_k, granularity, and lr / batch for `best_of` ("lr,batch": each configuration's lowest-loss row only)."""
    table = read_run_table(source, ("experts", "D", "loss"), ("N_active", "N", "N_total", "top_k", "granularity",
                           *SWEEP_COLUMNS), columns=columns, what="MoE table")  # fmt: skip
    _active_column(table)
    table.finite("N_active", "experts", "D", "loss")
    table.positive("N_active", "D", "loss", "N_total", "top_k", "granularity")
    n = table.numbers
    _refuse(table, n["experts"] < 1, "experts", "must be at least 1 (1: a dense run)")
    if "N_total" in n:
        _refuse(table, n["N_total"] < n["N_active"] * (1 - 1e-9), "N_total", "is below N_active")
    if "top_k" in n:
        _refuse(table, n["top_k"] > n["experts"], "top_k", "is above the expert count")
    if best_of is not None:
        table = table.take(best_configuration_rows(table, best_of))
    if len(table) < MIN_MOE_POINTS:
        raise UserError(f"MoE table {table.source} has {len(table)} rows; need at least {MIN_MOE_POINTS} to fit")
    nan = np.full(len(table), np.nan)
    n = table.numbers
    return MoePoints(N=n["N_active"], D=n["D"], E=n["experts"], loss=n["loss"], N_total=n.get("N_total", nan),
                     top_k=n.get("top_k", nan), G=n.get("granularity", nan), source=table.source)  # fmt: skip


def _refuse(table: RunTable, bad: np.ndarray, name: str, what: str) -> None:
    """Refuse, naming the first row, where `bad` holds (NaN cells of optional columns never do)."""
    rows = np.flatnonzero(bad)
    if len(rows):
        more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
        raise UserError(f"{table.where(int(rows[0]))}: {name}={table.numbers[name][rows[0]]:g} {what}{more}")


def best_configuration_rows(table: RunTable, columns: str) -> np.ndarray:
    """`--best-of COLUMNS` for a MoE table: of the rows sharing a configuration (N_active, N_total, experts, top_k,
    D, granularity) and the sweep columns not named, the lowest-loss one (the first of equals), in table order."""
    named = tuple(c.strip() for c in columns.split(",") if c.strip())
    if not named or any(c not in SWEEP_COLUMNS for c in named):
        raise UserError(f"--best-of {columns!r}: name columns among {', '.join(SWEEP_COLUMNS)} (for example lr,batch)")
    absent = [c for c in named if c not in table.numbers]
    if absent:
        raise UserError(f"--best-of {columns}: MoE table {table.source} has no column {', '.join(absent)}")
    within = [c for c in (*CONFIG_COLUMNS, *SWEEP_COLUMNS) if c in table.numbers and c not in named]
    keys = np.column_stack([np.nan_to_num(table.numbers[c], nan=-1.0) for c in within])
    key = np.unique(keys, axis=0, return_inverse=True)[1].ravel()
    order = np.lexsort((np.arange(len(table)), table.numbers["loss"], key))
    first = np.r_[True, key[order][1:] != key[order][:-1]]
    return np.sort(order[first])
