"""Order-by-scale hold-outs, the check `fit` reports by default: fit the Chinchilla law (Hoffmann et al. 2022,
Approach 3) on every budget but the largest and predict the largest budget's losses and its IsoFLOP
optimum; and fit on every model size but the largest and predict the largest size's losses. A planner extrapolates up
in scale, so the error one step up is the error a user meets; a random hold-out, which interpolates, understates it.

Budgets are the runs' sweep budgets, a table's C column, else 6ND, grouped as `budget_labels` groups them (within
3%). The largest budget is held out only when at least `MIN_BUDGETS` budgets exist (two or more remain to fit on);
the largest model size only when at least `MIN_SIZES` sizes exist. Otherwise the report says why not.

Each hold-out also says how many held-out points fall inside their calibrated 95% prediction interval for a new run
(scaling/intervals.py, from `HOLDOUT_BOOT` bootstrap resamples of the fit on the rest) and how wide it is: an
interval is useful when it covers about 95% at a width not many times the errors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.bootstrap import bootstrap_chinchilla
from smallest_loss.scaling.chinchilla import fit_chinchilla
from smallest_loss.scaling.holdout import MIN_BUDGETS, holdout_optimum
from smallest_loss.scaling.intervals import prediction_interval
from smallest_loss.scaling.optimize import DEFAULT_DELTA
from smallest_loss.scaling.points import BUDGET_RTOL, MIN_POINTS, FitPoints, budget_labels

MIN_SIZES = 3  # holding out the largest model size leaves at least two sizes
HOLDOUT_BOOT = 200  # bootstrap resamples of each hold-out fit, for the held-out points' prediction intervals


@dataclass(frozen=True)
class ScaleHoldout:
    """One hold-out: the law fitted without the `held` points ("budget": the largest budget's, "N": the largest
    model size's), predicting them. Errors are predicted / actual - 1 over the held-out points; `optimum` compares
    the held-out budget's IsoFLOP minimum with the law's compute-optimal point (`holdout_optimum`; None for "N")."""

    held: str
    value: float  # the held-out budget (FLOPs, geometric mean) or model size (parameters)
    fitted_points: int
    held_points: int
    form: str  # the form the fit on the rest used ("full", "fixed_E", ...)
    identified: bool
    mean_abs_rel_error: float
    max_abs_rel_error: float
    mean_rel_error: float  # signed: above zero, the law predicts the held-out losses too high
    runs: tuple[dict[str, Any], ...]
    optimum: dict[str, Any] | None = None
    inside_interval: float | None = None  # share of the held-out points inside their calibrated 95% interval
    median_half_width: float | None = None  # that interval's median half-width, relative to the predicted loss


@dataclass(frozen=True)
class HoldoutReport:
    """The order-by-scale hold-outs of a table or sweep (`holdout_by_scale`): `budget` and `size` (None when not
    possible, the reason in `skipped` under "budget" or "N"), with how many points, budgets and sizes there were."""

    points: int
    budgets: int
    sizes: int
    budget: ScaleHoldout | None = None
    size: ScaleHoldout | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a law file's diagnostics["holdout"])."""
        out = asdict(self)
        for key in ("budget", "size"):
            if out[key] is not None:
                out[key]["runs"] = list(out[key]["runs"])
        return out


def holdout_by_scale(
    points: FitPoints, budgets: np.ndarray | None = None, names: list[str] | None = None, delta: float = DEFAULT_DELTA
) -> HoldoutReport:
    """Hold out the largest budget, then the largest model size, each fitted on the rest; what
    cannot be held out is named with why in `skipped`. `budgets`: each point's budget (default `points.budgets`: C,
    else 6ND); `names`: each point's name in the report (default "point i")."""
    budgets = points.budgets if budgets is None else np.asarray(budgets, dtype=np.float64)
    names = names if names is not None else [f"point {i}" for i in range(len(points))]
    labels, sizes = budget_labels(budgets), budget_labels(points.N)
    n_budgets, n_sizes = int(labels.max()) + 1, int(sizes.max()) + 1
    skipped: dict[str, str] = {}
    by_budget = by_size = None
    if n_budgets == len(points):
        skipped["budget"] = (
            f"each of the {len(points)} points has its own budget (no IsoFLOP profiles); a C column naming each "
            f"point's budget, or points whose 6ND agree within {BUDGET_RTOL:.0%}, make budgets"
        )
    elif n_budgets < MIN_BUDGETS:
        skipped["budget"] = f"{n_budgets} budget(s): holding out the largest needs at least {MIN_BUDGETS}"
    else:
        test = labels == labels.max()
        value = float(np.exp(np.mean(np.log(budgets[test]))))
        by_budget = _held_out(points, test, names, "budget", value, delta, skipped)
    if n_sizes < MIN_SIZES:
        skipped["N"] = f"{n_sizes} model size(s): holding out the largest needs at least {MIN_SIZES}"
    else:
        test = sizes == sizes.max()
        value = float(np.exp(np.mean(np.log(points.N[test]))))
        by_size = _held_out(points, test, names, "N", value, delta, skipped)
    return HoldoutReport(len(points), n_budgets, n_sizes, by_budget, by_size, skipped)


def _held_out(points: FitPoints, test: np.ndarray, names: list[str], held: str, value: float, delta: float,
              skipped: dict[str, str]) -> ScaleHoldout | None:  # fmt: skip
    """Fit without the `test` points and predict them; None (the reason in `skipped[held]`) when the rest cannot
    be fitted."""
    if np.sum(~test) < MIN_POINTS:
        skipped[held] = f"only {int(np.sum(~test))} points below the largest {held}; a fit needs {MIN_POINTS}"
        return None
    try:
        fit = fit_chinchilla(points.take(~test), delta)
    except UserError as err:
        skipped[held] = f"the fit without the largest {held} failed: {err}"
        return None
    law, idx = fit.law, np.flatnonzero(test)
    predicted = np.asarray(law.loss(points.N[idx], points.D[idx]), dtype=np.float64).reshape(-1)
    actual = points.loss[idx]
    rest = points.take(~test)
    span = prediction_interval(bootstrap_chinchilla(rest, HOLDOUT_BOOT, fit=fit), points.N[idx], points.D[idx], rest)
    rel = predicted / actual - 1
    runs = tuple(
        dict(name=names[i], N=float(points.N[i]), D=float(points.D[i]), actual=float(a), predicted=float(p))
        for i, a, p in zip(idx, actual, predicted, strict=True)
    )
    optimum = holdout_optimum(law, points.N[idx], points.D[idx], actual) if held == "budget" else None
    return ScaleHoldout(
        held=held,
        value=value,
        fitted_points=int(np.sum(~test)),
        held_points=len(idx),
        form=str(fit.form),
        identified=bool(fit.identified),
        mean_abs_rel_error=float(np.mean(np.abs(rel))),
        max_abs_rel_error=float(np.max(np.abs(rel))),
        mean_rel_error=float(np.mean(rel)),
        runs=runs,
        optimum=optimum,
        inside_interval=float(np.mean((actual >= span.low) & (actual <= span.high))),
        median_half_width=float(np.median(span.half_width)),
    )
