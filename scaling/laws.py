"""Loss laws: the Chinchilla and Kaplan forms, compute-optimal allocation, wall-clock loss, law JSON.

Chinchilla form (Hoffmann et al. 2022, eq. 2): L(N, D) = E + A/N^alpha + B/D^beta, N parameters,
D training tokens. Kaplan form (Kaplan et al. 2020, eq. 1.5): L(N, D) = ((Nc/N)^(aN/aD) + Dc/D)^aD.
The wall-clock form ("Time Matters", Inbar and Sernau 2024) feeds the tokens a time budget buys,
D(T) = T / step_seconds * b * s, into the Chinchilla form.

All numerics here are numpy float64 and vectorised over N, D, C and T.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.recipe import RecipeLaw, recipe_from_dict, recipe_to_dict

LAW_FORMAT_VERSION = 1

ArrayLike = float | np.ndarray


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 2)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float | np.floating | np.integer) or not math.isfinite(value):
                raise UserError(f"ChinchillaLaw.{f.name}={value!r} must be a finite number")
            object.__setattr__(self, f.name, float(value))
        for name in ("A", "B", "alpha", "beta"):
            if not getattr(self, name) > 0:
                raise UserError(f"ChinchillaLaw.{name}={getattr(self, name)!r} must be positive")
        if self.E < 0:
            raise UserError(f"ChinchillaLaw.E={self.E!r} must be >= 0 (the irreducible loss)")

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Predicted loss E + A/N^alpha + B/D^beta, broadcast over N and D."""
        N = np.asarray(N, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        out = self.E + self.A / N**self.alpha + self.B / D**self.beta
        return float(out) if np.ndim(out) == 0 else out

    @property
    def G(self) -> float:
        """G = (alpha*A / (beta*B))^(1/(alpha+beta)); Hoffmann et al. 2022, eq. 4."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    @property
    def n_exponent(self) -> float:
        """a = beta/(alpha+beta): N_opt grows as C^a (Hoffmann et al. 2022, eq. 4)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def d_exponent(self) -> float:
        """b = alpha/(alpha+beta): D_opt grows as C^b (Hoffmann et al. 2022, eq. 4)."""
        return self.alpha / (self.alpha + self.beta)

    def optimal_allocation(self, C: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
        """(N_opt, D_opt) minimising L under C = 6ND (Hoffmann et al. 2022, eq. 4).

        N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = G^-1 (C/6)^(alpha/(alpha+beta)).
        """
        C = np.asarray(C, dtype=np.float64)
        if np.any(~np.isfinite(C)) or np.any(C <= 0):
            raise UserError(f"compute budget C={C!r} must be positive and finite (FLOPs)")
        N = self.G * (C / 6.0) ** self.n_exponent
        D = (C / 6.0) ** self.d_exponent / self.G
        if N.ndim == 0:
            return float(N), float(D)
        return N, D


@dataclass(frozen=True)
class KaplanLaw:
    """L(N, D) = ((Nc/N)^(aN/aD) + Dc/D)^aD (Kaplan et al. 2020, eq. 1.5)."""

    Nc: float
    Dc: float
    aN: float
    aD: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float | np.floating | np.integer) or not math.isfinite(value):
                raise UserError(f"KaplanLaw.{f.name}={value!r} must be a finite number")
            if not value > 0:
                raise UserError(f"KaplanLaw.{f.name}={value!r} must be positive")
            object.__setattr__(self, f.name, float(value))

    def loss(self, N: ArrayLike, D: ArrayLike) -> ArrayLike:
        """Predicted loss ((Nc/N)^(aN/aD) + Dc/D)^aD, broadcast over N and D."""
        N = np.asarray(N, dtype=np.float64)
        D = np.asarray(D, dtype=np.float64)
        out = ((self.Nc / N) ** (self.aN / self.aD) + self.Dc / D) ** self.aD
        return float(out) if np.ndim(out) == 0 else out


Law = ChinchillaLaw | KaplanLaw


@dataclass(frozen=True)
class ShapeLaw:
    """The aspect-ratio factor exp(gamma ln(r / aspect_opt)^2), r = d/n, that multiplies a law's loss: the loss a
    shallow function of d/n around an optimum (Kaplan et al. 2020, section 3.1 and figure 5; fitted in
    scaling/shape.py). `aspect_range` is the d/n its points spanned: the region where it was fitted. Bootstrap
    `samples` (gamma, aspect_opt) pair one to one with the law file's samples of the other constants."""

    gamma: float
    aspect_opt: float
    aspect_range: tuple[float, float]
    intervals: dict[str, tuple[float, float]] | None = None
    samples: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        lo, hi = self.aspect_range
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise UserError(f"ShapeLaw.gamma={self.gamma!r} must be a finite number >= 0")
        if not (math.isfinite(self.aspect_opt) and self.aspect_opt > 0 and math.isfinite(hi) and 0 < lo <= hi):
            raise UserError(
                f"ShapeLaw: aspect_opt={self.aspect_opt!r} and aspect_range=({lo!r}, {hi!r}) must be "
                "positive, finite, low <= high"
            )

    def factor(self, d: ArrayLike, n: ArrayLike) -> ArrayLike:
        """exp(gamma ln(d/n / aspect_opt)^2): 1 at the optimal aspect ratio, above 1 elsewhere."""
        out = np.exp(self.gamma * np.log(np.asarray(d, np.float64) / np.asarray(n, np.float64) / self.aspect_opt) ** 2)
        return float(out) if np.ndim(out) == 0 else out


# Hoffmann et al. 2022, Approach 3 as published.
CHINCHILLA_PUBLISHED = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
# Besiroglu et al. 2024 (arXiv 2404.10102), refit of Chinchilla's own data.
EPOCH_REPLICATION = ChinchillaLaw(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366)


def tokens_for_time(T_seconds: ArrayLike, step_seconds: ArrayLike, batch: ArrayLike, seq_len: ArrayLike) -> ArrayLike:
    """Tokens a wall-clock budget buys, D(T) = T / TIME * b * s ("Time Matters", Inbar and Sernau 2024).

    Every argument broadcasts (the planner passes one row per candidate)."""
    T = np.asarray(T_seconds, dtype=np.float64)
    step = np.asarray(step_seconds, dtype=np.float64)
    if np.any(~np.isfinite(T)) or np.any(T <= 0):
        raise UserError(f"time budget T={T_seconds!r} must be positive seconds")
    if np.any(~np.isfinite(step)) or np.any(step <= 0):
        raise UserError(f"step_seconds={step_seconds!r} must be positive seconds")
    if np.any(np.asarray(batch) <= 0) or np.any(np.asarray(seq_len) <= 0):
        raise UserError(f"batch={batch} and seq_len={seq_len} must be positive")
    out = T / step * batch * seq_len
    return float(out) if np.ndim(out) == 0 else out


def loss_for_time(
    law: ChinchillaLaw, N: ArrayLike, T: ArrayLike, step_seconds: ArrayLike, batch: int, seq_len: int
) -> ArrayLike:
    """L = E + A/N^alpha + B/D(T)^beta with D(T) from `tokens_for_time` ("Time Matters", Inbar and Sernau 2024)."""
    return law.loss(N, tokens_for_time(T, step_seconds, batch, seq_len))


# ---------------------------------------------------------------------------------------------------
# Law JSON (README, "File formats"), version 1.

_FORM_KEYS: dict[str, tuple[str, ...]] = {
    "chinchilla": ("E", "A", "B", "alpha", "beta"),
    "kaplan": ("Nc", "Dc", "aN", "aD"),
}


@dataclass(frozen=True)
class LawFile:
    """A loaded law JSON: the law, optional intervals {name: (lo, hi)}, bootstrap samples, diagnostics."""

    law: Law
    intervals: dict[str, tuple[float, float]] | None = None
    samples: dict[str, np.ndarray] | None = None
    diagnostics: dict[str, Any] | None = None
    recipe: RecipeLaw | None = None  # learning-rate and batch laws (scaling/recipe.py); None in older files
    shape: ShapeLaw | None = None  # the aspect-ratio factor (scaling/shape.py); None: a law in N and D only

    @property
    def fit_form(self) -> dict[str, Any]:
        """Which law the fit used and why: `form` ("full", "fixed_E", "tied", "tied_fixed_E", "kaplan"),
        `identified` (None when not recorded), `form_description` and `not_identified` (reasons per form
        tried). Law files written before these fields existed read as the full form, identification unknown."""
        diagnostics = self.diagnostics or {}
        return {
            "form": diagnostics.get("form", "full" if isinstance(self.law, ChinchillaLaw) else "kaplan"),
            "identified": diagnostics.get("identified"),
            "form_description": diagnostics.get("form_description", ""),
            "not_identified": diagnostics.get("not_identified", {}),
        }


def law_to_dict(
    law: Law,
    intervals: dict[str, tuple[float, float]] | None = None,
    samples: dict[str, np.ndarray] | None = None,
    diagnostics: dict[str, Any] | None = None,
    recipe: RecipeLaw | None = None,
    shape: ShapeLaw | None = None,
) -> dict[str, Any]:
    """The JSON-ready dict of a law plus optional intervals, bootstrap samples, diagnostics and recipe laws."""
    form = "chinchilla" if isinstance(law, ChinchillaLaw) else "kaplan"
    out: dict[str, Any] = {"version": LAW_FORMAT_VERSION, "form": form}
    out.update({k: float(getattr(law, k)) for k in _FORM_KEYS[form]})
    if intervals is not None:
        out["intervals"] = {k: [float(lo), float(hi)] for k, (lo, hi) in intervals.items()}
    if samples is not None:
        out["samples"] = {k: [float(x) for x in np.asarray(v).ravel()] for k, v in samples.items()}
    if diagnostics is not None:
        out["diagnostics"] = json.loads(json.dumps(diagnostics, default=_json_default))
    if recipe is not None:
        out["recipe"] = json.loads(json.dumps(recipe_to_dict(recipe), default=_json_default))
    if shape is not None:
        out["shape"] = _shape_to_dict(shape)
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_law(
    path: str | Path,
    law: Law,
    intervals: dict[str, tuple[float, float]] | None = None,
    samples: dict[str, np.ndarray] | None = None,
    diagnostics: dict[str, Any] | None = None,
    recipe: RecipeLaw | None = None,
    shape: ShapeLaw | None = None,
) -> Path:
    """Write the law JSON to `path` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(law_to_dict(law, intervals, samples, diagnostics, recipe, shape), indent=2) + "\n")
    return path


def law_from_dict(data: Any, source: str = "law") -> LawFile:
    """Parse a law dict (as written by `law_to_dict`); `source` names it in error messages."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a JSON object with a 'form' key, got {type(data).__name__}")
    version = data.get("version", LAW_FORMAT_VERSION)
    if version != LAW_FORMAT_VERSION:
        raise UserError(f"{source}: law format version {version!r} is not supported (expected 1)")
    form = data.get("form")
    if form not in _FORM_KEYS:
        raise UserError(f"{source}: unknown law form {form!r}; use 'chinchilla' or 'kaplan'")
    values = {k: _number(data, k, source) for k in _FORM_KEYS[form]}
    try:
        law: Law = ChinchillaLaw(**values) if form == "chinchilla" else KaplanLaw(**values)
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    return LawFile(
        law=law,
        intervals=_intervals(data.get("intervals"), source),
        samples=_samples(data.get("samples"), source),
        diagnostics=_diagnostics(data.get("diagnostics"), source),
        recipe=recipe_from_dict(data["recipe"], source) if data.get("recipe") is not None else None,
        shape=_shape(data.get("shape"), source),
    )


def load_law(path: str | Path) -> LawFile:
    """Read a law JSON file; every problem with the file is a `UserError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"law file {path} does not exist; fit one first or pass the right path")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"law file {path} is not valid JSON: {err}") from None
    return law_from_dict(data, source=f"law file {path}")


def _number(data: dict[str, Any], key: str, source: str) -> float:
    if key not in data:
        raise UserError(f"{source}: missing key {key!r}")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{source}: {key}={value!r} must be a finite number")
    return float(value)


def _intervals(raw: Any, source: str) -> dict[str, tuple[float, float]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UserError(f"{source}: 'intervals' must be an object {{name: [lo, hi]}}")
    out = {}
    for name, pair in raw.items():
        ok = isinstance(pair, list) and len(pair) == 2
        ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)
        if not ok:
            raise UserError(f"{source}: intervals[{name!r}]={pair!r} must be [lo, hi] numbers")
        out[name] = (float(pair[0]), float(pair[1]))
    return out


def _samples(raw: Any, source: str) -> dict[str, np.ndarray] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UserError(f"{source}: 'samples' must be an object {{name: [values]}}")
    out = {}
    for name, values in raw.items():
        ok = isinstance(values, list)
        ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) for x in values)
        if not ok:
            raise UserError(f"{source}: samples[{name!r}] must be a list of numbers")
        out[name] = np.asarray(values, dtype=np.float64)
    return out


def _diagnostics(raw: Any, source: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise UserError(f"{source}: 'diagnostics' must be an object")
    return raw


def _shape_to_dict(shape: ShapeLaw) -> dict[str, Any]:
    out = {
        "gamma": shape.gamma,
        "aspect_opt": shape.aspect_opt,
        "aspect_range": shape.aspect_range,
        "intervals": shape.intervals,
        "samples": shape.samples,
    }
    return json.loads(json.dumps({k: v for k, v in out.items() if v is not None}, default=_json_default))


def _shape(raw: Any, source: str) -> ShapeLaw | None:
    """The optional `shape` section: gamma, aspect_opt, aspect_range [lo, hi], optional intervals and samples."""
    if raw is None:
        return None
    where = f"{source}: shape section"
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be an object with gamma, aspect_opt and aspect_range")
    span = raw.get("aspect_range")
    if not (isinstance(span, list) and len(span) == 2 and all(isinstance(x, int | float) for x in span)):
        raise UserError(f"{where}: aspect_range={span!r} must be [low, high] numbers")
    values = dict(gamma=_number(raw, "gamma", where), aspect_opt=_number(raw, "aspect_opt", where),
                  aspect_range=(float(span[0]), float(span[1])), intervals=_intervals(raw.get("intervals"), where),
                  samples=_samples(raw.get("samples"), where))  # fmt: skip
    try:
        return ShapeLaw(**values)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
