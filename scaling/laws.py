"""What every loss law shares: the law file (JSON, `LawFile`, save and load), published constants, wall-clock loss.

The laws themselves live with their fits: the Chinchilla form (Hoffmann et al. 2022, eq. 2) in
scaling/chinchilla.py, the Kaplan form (Kaplan et al. 2020, eq. 1.5) in scaling/kaplan.py, the aspect-ratio
factor in scaling/aspect.py and the recipe laws in scaling/recipe.py; a law file holds one law in N and D
(`Law`) and optionally the others. The wall-clock form ("Time Matters", Inbar and Sernau 2024) feeds the tokens
a time budget buys, D(T) = T / step_seconds * b * s, into the Chinchilla form.

All numerics here are numpy float64 and vectorised over N, D, C and T.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.aspect import AspectLaw
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.kaplan import KaplanLaw
from smallest_loss.scaling.moe_law import MoeLaw, moe_from_dict
from smallest_loss.scaling.points import ArrayLike
from smallest_loss.scaling.precision_law import PrecisionLaw, precision_from_dict, precision_to_dict
from smallest_loss.scaling.recipe import RecipeLaw, recipe_from_dict, recipe_to_dict
from smallest_loss.scaling.region import HULL_TOLERANCE, distance_outside
from smallest_loss.scaling.shape_terms import TERMS

LAW_FORMAT_VERSION = 1

Law = ChinchillaLaw | KaplanLaw


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
    shape: AspectLaw | None = None  # the aspect-ratio factor (scaling/aspect.py); None: a law in N and D only
    moe: MoeLaw | None = None  # the MoE law (scaling/moe_law.py); `law` is then its dense restriction (E = 1)
    precision: PrecisionLaw | None = None  # the training-precision factor (scaling/precision_law.py); None: none

    @property
    def fit_form(self) -> dict[str, Any]:
        """Which law the fit used and why: `form` ("full", "fixed_E", "tied", "tied_fixed_E", "kaplan"),
        `identified` (None when not recorded), `form_description`, `not_identified` (reasons per form
        tried) and `standard_errors` (per form tried: `log E`, and `alpha`, `beta` relative; empty when not
        recorded). Law files written before these fields existed read as the full form, identification unknown."""
        diagnostics = self.diagnostics or {}
        return {
            "form": diagnostics.get("form", "full" if isinstance(self.law, ChinchillaLaw) else "kaplan"),
            "identified": diagnostics.get("identified"),
            "form_description": diagnostics.get("form_description", ""),
            "not_identified": diagnostics.get("not_identified", {}),
            "standard_errors": diagnostics.get("standard_errors", {}),
        }

    @property
    def fitted_range(self) -> dict[str, list[float]] | None:
        """[smallest, largest] N, D and C of the points the law was fitted to, and `aspect`, the d/n of its runs where
        they gave widths and depths (None: not recorded)."""
        return (self.diagnostics or {}).get("fitted_range")

    def outside(self, **values: float) -> str | None:
        """One line saying which of the given quantities (N=, D=, C=) lie outside the fitted range and by how many
        decades, then, given N and D, how far (N, D) lies outside the hull of the runs' (log N, log D), which also
        sees a corner of the ranges that no run is near (scaling/region.py); None when all lie inside or no range
        was recorded."""
        fitted, beyond = self.fitted_range or {}, []
        for name, value in values.items():
            if name not in fitted or name == "hull":
                continue
            lo, hi = fitted[name]
            if value > hi:
                beyond.append(
                    f"{name} = {value:.3g} is {math.log10(value / hi):.1f} decades above the largest fitted ({hi:.3g})"
                )
            elif value < lo:
                beyond.append(
                    f"{name} = {value:.3g} is {math.log10(lo / value):.1f} decades below the smallest fitted ({lo:.3g})"
                )
        if fitted.get("hull") and "N" in values and "D" in values:  # also a corner of the ranges no run is near
            away = distance_outside(np.array(fitted["hull"]), np.log10([values["N"], values["D"]]))
            if away > HULL_TOLERANCE:
                beyond.append(f"(N, D) = ({values['N']:.3g}, {values['D']:.3g}) lies {away:.2f} decades outside the "
                              "region of N and D the runs span (their convex hull in log N, log D)")  # fmt: skip
        if not beyond:
            return None
        return "warning: the law is extrapolated: " + "; ".join(beyond) + " (the runs cannot vouch for it there)"

    def predict(self, N: ArrayLike, D: ArrayLike, d: ArrayLike | None = None, n: ArrayLike | None = None,
                experts: ArrayLike = 1, granularity: ArrayLike = 1, bits_w: ArrayLike | None = None,
                bits_a: ArrayLike | None = None, bits_kv: ArrayLike | None = None) -> ArrayLike:  # fmt: skip
        """The predicted loss of N parameters trained on D tokens; with a shape section, of width d and depth n
        (the aspect-ratio factor needs both); with a moe section, of N active parameters in `experts` experts (1:
        dense) of `granularity` (the granularity law's); with a precision section, trained at these bit widths
        (None, 0 or >= 16: unquantised), N counting as N_eff (Kumar et al. 2025) or, in the additive form, plus the
        loss quantised training adds. Bits given to a law without a precision section are refused: it cannot say
        what they cost."""
        if self.moe is not None:
            return self.moe.loss(N, D, experts, granularity)
        if self.precision is not None:
            loss = self.precision.loss(N, D, bits_w, bits_a, bits_kv)
        elif any(b is not None for b in (bits_w, bits_a, bits_kv)):
            raise UserError("this law has no precision section: fit one with fit --form precision to predict bits")
        else:
            loss = self.law.loss(N, D)
        if self.shape is None:
            return loss
        if d is None or n is None:
            raise UserError("this law has a shape term: give the width d and the depth n as well as N and D")
        return loss * self.shape.factor(d, n, N)

    def to_dict(self) -> dict[str, Any]:
        """The law JSON's content."""
        return law_to_dict(self.law, self.intervals, self.samples, self.diagnostics, self.recipe, self.shape,
                           moe=self.moe, precision=self.precision)  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the law JSON to `path` (parent folders created)."""
        return save_law(path, self.law, self.intervals, self.samples, self.diagnostics, self.recipe, self.shape,
                        moe=self.moe, precision=self.precision)  # fmt: skip


def law_to_dict(
    law: Law,
    intervals: dict[str, tuple[float, float]] | None = None,
    samples: dict[str, np.ndarray] | None = None,
    diagnostics: dict[str, Any] | None = None,
    recipe: RecipeLaw | None = None,
    shape: AspectLaw | None = None,
    moe: MoeLaw | None = None,
    precision: PrecisionLaw | None = None,
) -> dict[str, Any]:
    """The JSON-ready dict of a law plus optional intervals, bootstrap samples, diagnostics, recipe laws, the
    aspect-ratio factor, the MoE law and the precision factor."""
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
    if moe is not None:
        out["moe"] = moe.to_dict()
    if precision is not None:
        out["precision"] = precision_to_dict(precision)
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
    shape: AspectLaw | None = None,
    moe: MoeLaw | None = None,
    precision: PrecisionLaw | None = None,
) -> Path:
    """Write the law JSON to `path` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = law_to_dict(law, intervals, samples, diagnostics, recipe, shape, moe=moe, precision=precision)
    path.write_text(json.dumps(content, indent=2) + "\n")
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
        moe=moe_from_dict(data["moe"], source) if data.get("moe") is not None else None,
        precision=_precision(data.get("precision"), values if form == "chinchilla" else None, source),
    )


def _precision(raw: Any, values: dict[str, float] | None, source: str) -> PrecisionLaw | None:
    if raw is not None and values is None:
        raise UserError(f"{source}: a precision section goes with a chinchilla law")
    return precision_from_dict(raw, values or {}, source)


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


def _shape_to_dict(shape: AspectLaw) -> dict[str, Any]:
    out = {
        "gamma": shape.gamma,
        "aspect_opt": shape.aspect_opt,
        "aspect_range": shape.aspect_range,
        "term": shape.term,
        "params": shape.params,
        "intervals": shape.intervals,
        "samples": shape.samples,
    }
    return json.loads(json.dumps({k: v for k, v in out.items() if v is not None}, default=_json_default))


def _term(raw: Any, where: str) -> str:
    """The shape term's name; a law file written before terms had names holds the symmetric one."""
    if raw not in TERMS:
        raise UserError(f"{where}: term={raw!r} must be one of {', '.join(TERMS)}")
    return str(raw)


def _params(raw: Any, where: str) -> dict[str, float] | None:
    if raw is None:
        return None
    if not (isinstance(raw, dict) and all(isinstance(v, int | float) for v in raw.values())):
        raise UserError(f"{where}: params={raw!r} must be an object of numbers")
    return {str(k): float(v) for k, v in raw.items()}


def _shape(raw: Any, source: str) -> AspectLaw | None:
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
                  samples=_samples(raw.get("samples"), where), term=_term(raw.get("term", "symmetric"), where),
                  params=_params(raw.get("params"), where))  # fmt: skip
    try:
        return AspectLaw(**values)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
