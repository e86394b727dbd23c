"""Hold-out checks of the fitted laws: fit without some of the data, predict what was left out.

- The largest budget (`holdout_largest`): fit the Chinchilla law (Hoffmann et al. 2022, Approach 3) without the
  largest budget's points, then predict their losses and their IsoFLOP optimum (Approach 2's parabola): the
  extrapolation a planner relies on.
- One shape at a time (`leave_one_shape_out`): the aspect-ratio law (scaling/aspect.py) against the N-D law on
  each aspect ratio left out in turn.
- Batch sizes (`holdout_batches`): the batch law of the recipe (McCandlish et al. 2018; scaling/recipe.py) fitted
  without some batch sizes, predicting them.
- Held-out runs of curve laws (`holdout_errors`): each run's final eval loss from its shape's curve law and from
  the law from curves (scaling/curve_law.py, scaling/from_curves.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.aspect import AspectPoints, fit_aspect, shape_groups, varied_sizes
from smallest_loss.scaling.chinchilla import LAW_KEYS, ChinchillaLaw, fit_chinchilla
from smallest_loss.scaling.curve_law import Curve, CurveLaw, same_peak
from smallest_loss.scaling.isoflop import fit_profile
from smallest_loss.scaling.optimize import DEFAULT_DELTA
from smallest_loss.scaling.points import BUDGET_RTOL, FitPoints, budget_labels
from smallest_loss.scaling.recipe import Cell, batch_predict, fit_batch_law
from smallest_loss.scaling.shape_terms import AUTO_TERMS, DEFAULT_TERM

PROFILE_SPREAD = 1.25  # held-out points whose 6ND agree within this factor form one IsoFLOP profile
MIN_BUDGETS = 3  # holding out the largest budget leaves at least two to fit on


def holdout_split(budgets: np.ndarray) -> np.ndarray:
    """Which points are the largest budget's (budgets within `BUDGET_RTOL` are one budget); refused, before
    any fitting, when the points do not share budgets or too few lie below the largest."""
    labels = budget_labels(budgets)
    if labels.max() + 1 == len(budgets):
        raise UserError(
            f"--holdout-largest needs budgets shared by several points (IsoFLOP profiles), but each of "
            f"the {len(budgets)} points has its own; add a C column naming each point's budget, or give "
            f"points whose 6ND agree within {BUDGET_RTOL:.0%}"
        )
    if labels.max() + 1 < MIN_BUDGETS:
        raise UserError(f"--holdout-largest needs at least {MIN_BUDGETS} budgets, found {labels.max() + 1}")
    test = labels == labels.max()
    if np.sum(~test) < 6:
        raise UserError(f"--holdout-largest needs at least 6 points below the largest budget, found {np.sum(~test)}")
    return test


def holdout_largest(points: FitPoints, budgets: np.ndarray, names: list[str],
                    delta: float = DEFAULT_DELTA) -> dict[str, Any]:  # fmt: skip
    """Fit without the largest budget's points, then predict them and their IsoFLOP optimum: the
    extrapolation a planner relies on.

    `budgets` are the sweep's budgets for runs, the C column or 6ND for CSV points."""
    test = holdout_split(budgets)
    fit = fit_chinchilla(points.take(~test), delta)
    law = fit.law
    rows = [dict(name=names[i], N=float(points.N[i]), D=float(points.D[i]), actual=float(points.loss[i]),
                 predicted=float(law.loss(points.N[i], points.D[i]))) for i in np.flatnonzero(test)]  # fmt: skip
    errors = [abs(row["predicted"] / row["actual"] - 1) for row in rows]
    return dict(budget=float(np.exp(np.mean(np.log(budgets[test])))), law={k: getattr(law, k) for k in LAW_KEYS},
                form=fit.form, identified=fit.identified, runs=rows, mean_abs_rel_error=float(np.mean(errors)),
                max_abs_rel_error=float(np.max(errors)),
                optimum=holdout_optimum(law, points.N[test], points.D[test], points.loss[test]))  # fmt: skip


def holdout_optimum(law: ChinchillaLaw, N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> dict[str, Any]:
    """The held-out budget's IsoFLOP optimum (Approach 2's parabola in log N, Hoffmann et al. 2022) against
    the law's compute-optimal N, D and loss at the same C = 6ND (its geometric mean over the points), or
    why there is none to compare."""
    flops = 6.0 * N * D
    if flops.max() > PROFILE_SPREAD * flops.min():
        return dict(error=f"the held-out points' 6ND span a factor {flops.max() / flops.min():.2f}, more than "
                          f"{PROFILE_SPREAD}: not one IsoFLOP profile")  # fmt: skip
    C = float(np.exp(np.mean(np.log(flops))))
    try:
        profile = fit_profile(C, N, loss)
    except UserError as err:
        return dict(error=str(err))
    N_law, D_law = law.optimal_allocation(C)
    actual = dict(N=profile.N_opt, D=profile.D_opt, loss=profile.loss_min)
    predicted = dict(N=N_law, D=D_law, loss=float(law.loss(N_law, D_law)))
    return dict(
        C=C,
        actual=actual,
        predicted=predicted,
        extrapolated=profile.extrapolated,
        rel_error={k: predicted[k] / actual[k] - 1 for k in actual},
    )


def leave_one_shape_out(points: AspectPoints, delta: float = DEFAULT_DELTA, term: str = DEFAULT_TERM) -> dict[str, Any]:
    """For each shape (aspect ratio, `shape_groups`): fit the shape-aware law and the N-D law to the other points
    and predict the left-out shape's losses. Shapes whose removal leaves the shape term unidentified are skipped
    and named. Mean absolute errors (loss units and relative) of both laws over every point predicted."""
    labels = shape_groups(points)
    rows, skipped = [], []
    for label in np.unique(labels):
        test = labels == label
        aspect = float(np.median(points.aspect[test]))
        try:
            fit = fit_aspect(points.take(~test), delta, term)
        except UserError as err:
            skipped.append(dict(aspect_ratio=aspect, reason=str(err)))
            continue
        p = points.points  # the held-out points may be fewer than a fit needs: indexed, not `take`n
        N, D, d, n = p.N[test], p.D[test], points.d[test], points.n[test]
        nd_pred = np.asarray(fit.setup.nd.law.loss(N, D), float).reshape(-1)
        shape_pred = np.asarray(fit.law.loss(N, D), float).reshape(-1) * fit.shape.factor(d, n, N)
        for i, loss in enumerate(p.loss[test]):
            rows.append(
                dict(
                    aspect_ratio=aspect,
                    d=int(d[i]),
                    n=int(n[i]),
                    N=float(N[i]),
                    D=float(D[i]),
                    actual=float(loss),
                    shape_law=float(shape_pred[i]),
                    nd_law=float(nd_pred[i]),
                )
            )
    if not rows:
        raise UserError("leaving out any one shape leaves too few shapes to fit the shape law; add shapes")
    actual = np.array([r["actual"] for r in rows])
    summary = {}
    for key in ("shape_law", "nd_law"):
        pred = np.array([r[key] for r in rows])
        summary[key] = dict(
            mae=float(np.mean(np.abs(pred - actual))), mean_abs_rel_error=float(np.mean(np.abs(pred / actual - 1)))
        )
    return dict(points=rows, skipped=skipped, shapes=len(np.unique(labels)), **summary)


def choose_shape_term(
    points: AspectPoints, delta: float = DEFAULT_DELTA, candidates: Sequence[str] = AUTO_TERMS
) -> tuple[str, dict[str, Any]]:
    """The shape term whose law predicts left-out shapes best (`leave_one_shape_out`: mean relative error over every
    held-out point), and the record of the choice. `drift` (an optimum moving with N) is a candidate only where two
    or more model sizes each hold several shapes, the least that identifies its N-dependence; ties go to the term
    listed first (the simpler)."""
    usable = [t for t in candidates if t != "drift" or varied_sizes(points) >= 2]
    errors: dict[str, float] = {}
    for term in usable if len(usable) > 1 else ():
        try:
            errors[term] = leave_one_shape_out(points, delta, term)["shape_law"]["mean_abs_rel_error"]
        except UserError:
            continue
    chosen = min(errors, key=errors.__getitem__) if errors else (usable[0] if usable else DEFAULT_TERM)
    why = (
        "the lowest leave-one-shape-out error"
        if errors
        else "the only term these shapes identify (drift needs two sizes with several shapes each)"
    )
    return chosen, dict(chosen=chosen, leave_one_shape_out=errors, reason=why)


def holdout_batches(
    cells: list[Cell], held: tuple[float, ...], b_crit: float | None = None, loss_law: tuple[float, float] = (0.0, 1.0)
) -> dict[str, Any]:
    """Fit the batch law without the cells at the `held` batch sizes (tokens) and predict them; beside it, the
    error of a law with no batch cost (each group's mean best loss over the batches it was fitted on)."""
    train = [c for c in cells if c.batch_tokens not in held]
    test = [c for c in cells if c.batch_tokens in held]
    if not test:
        raise UserError(f"no cells at the held-out batch sizes {held}")
    law = fit_batch_law(train, n_boot=0, b_crit=b_crit, loss_law=loss_law)
    predicted = batch_predict(test, train, law.beta, math.log(law.b_crit), loss_law)
    actual = np.array([c.loss_star for c in test])
    flat = np.array([np.mean([t.loss_star for t in train if t.group == c.group]) for c in test])
    rows = [
        dict(group=c.group, batch_tokens=c.batch_tokens, actual=float(a), predicted=float(p), no_cost=float(f))
        for c, a, p, f in zip(test, actual, predicted, flat, strict=True)
    ]
    error = np.abs(predicted / actual - 1)
    return dict(
        held_batch_tokens=list(held),
        b_crit=law.b_crit,
        rows=rows,
        mape=float(np.mean(error)),
        max_ape=float(np.max(error)),
        no_cost_mape=float(np.mean(np.abs(flat / actual - 1))),
    )


def holdout_errors(
    held: Sequence[Curve], laws: Sequence[CurveLaw], from_curves: dict[str, Any], peaks: dict[int, float]
) -> dict[str, Any]:
    """Each held-out run's final eval loss against two predictions: its shape's curve law on its own schedule
    (when that shape was fitted at the run's peak rate, `peaks`: a law holds for one), and the law from curves at
    its N and D (any shape; the law describes cosine runs at each shape's fitted rate)."""
    by_N, rows = {law.N: law for law in laws}, []
    law = ChinchillaLaw(**from_curves["law"]) if "law" in from_curves else None
    for c in held:
        row = dict(name=c.name, N=c.N, D=c.steps * c.tokens_per_step, actual=c.final_eval)
        shape = by_N.get(c.N)
        if shape is not None and c.N in peaks and same_peak(float(c.lr.max()), peaks[c.N]):
            row["curve_law"] = shape.final_eval(c.lr)
            row["curve_law_rel_error"] = row["curve_law"] / c.final_eval - 1
        if law is not None:
            row["law_from_curves"] = float(law.loss(c.N, row["D"]))
            row["law_from_curves_rel_error"] = row["law_from_curves"] / c.final_eval - 1
        rows.append(row)
    out: dict[str, Any] = dict(runs=rows)
    for key in ("curve_law", "law_from_curves"):
        errors = [abs(r[f"{key}_rel_error"]) for r in rows if f"{key}_rel_error" in r]
        if errors:
            out[key] = dict(
                runs=len(errors), mean_abs_rel_error=float(np.mean(errors)), max_abs_rel_error=float(np.max(errors))
            )
    return out
