"""Which recipe-law forms to plan with, by held-out error, and what their choice costs on held-out points.

`compare_forms` refits each batch form (McCandlish's, the optimal batch) and each rate form (N,B; N,D) without
(a) the held-out batch sizes and (b) the held-out (N, D) points, and scores the predictions (scaling/
recipe_forms.py, module docstring). `choice_regret` then asks what the winners would have trained at each held-out
point: the run nearest the laws' (batch, rate) (nearest batch in log, then nearest rate in log, among every run of
the point, diverged ones included) against the point's best trained run. McCandlish's law at fixed tokens prefers
the smallest batch, so under it the choice is the point's smallest batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.recipe import Cell, LRLaw, OptimalBatchLaw, RecipeRun, cell_runs
from smallest_loss.scaling.recipe_forms import fit_lr_form, fit_optimal_batch, mccandlish_predict, optimal_predict

BATCH_FORMS = ("mccandlish", "optimal")
LR_FORMS = ("N,B", "N,D")


def default_held_batches(cells: Sequence[Cell]) -> tuple[float, ...]:
    """The batch sizes held out when none are given: the second smallest and second largest with six or more
    sizes, the middle one with four or five, none with fewer (interior sizes, so no form extrapolates)."""
    sizes = sorted({c.batch_tokens for c in cells})
    if len(sizes) >= 6:
        return (sizes[1], sizes[-2])
    return (sizes[len(sizes) // 2],) if len(sizes) >= 4 else ()


def default_held_groups(cells: Sequence[Cell]) -> tuple[int, ...]:
    """The (N, D) points held out when not told: the largest fifth by compute (at least one), with three or
    more points; none with fewer."""
    groups = sorted({c.group for c in cells})
    return tuple(groups[-max(1, round(len(groups) / 5)) :]) if len(groups) >= 3 else ()


def _splits(cells: Sequence[Cell], held_batches: Sequence[float], held_groups: Sequence[int]) -> dict[str, tuple]:
    out = {}
    if held_batches:
        test = [c for c in cells if c.batch_tokens in held_batches and c.group not in held_groups]
        out["batches"] = ([c for c in cells if c.batch_tokens not in held_batches], test)
    if held_groups:
        out["points"] = ([c for c in cells if c.group not in held_groups], [c for c in cells if c.group in held_groups])
    return {k: v for k, v in out.items() if v[1]}


def _batch_error(form: str, split: str, train: list[Cell], test: list[Cell]) -> float:
    """Mean relative error of the held-out cells' best losses (levels: see the module docstring)."""
    level = train if split == "batches" else test
    if form == "optimal":
        predicted = optimal_predict(fit_optimal_batch(train), test, level)
    else:
        predicted = mccandlish_predict(test, train, level)
    return float(np.mean(np.abs(predicted / np.array([c.loss_star for c in test]) - 1)))


def _lr_error(form: str, split: str, train: list[Cell], test: list[Cell]) -> float:
    """Rms error in log eta* over the held-out bracketed cells."""
    law = fit_lr_form(train, form)
    use = [c for c in test if c.bracketed]
    if not use:
        raise UserError("no bracketed held-out cell")
    predicted = law.lr(np.array([c.N for c in use]), np.array([c.batch_tokens for c in use]), [c.D for c in use])
    return float(np.sqrt(np.mean(np.log(predicted / np.array([c.lr_star for c in use])) ** 2)))


def _score(forms: Sequence[str], splits: dict[str, tuple], error: Callable[..., float]) -> dict[str, Any]:
    """Each form's error on each split (or why it could not be fitted) and the winner: the lower mean error;
    the first form when neither could be scored."""
    out: dict[str, Any] = {}
    for form in forms:
        row: dict[str, Any] = {}
        for split, (train, test) in splits.items():
            try:
                row[split] = error(form, split, train, test)
            except (UserError, np.linalg.LinAlgError, ValueError) as err:
                row[split] = None
                row.setdefault("failed", str(err))
        scores = [v for k, v in row.items() if k in splits]
        row["mean"] = float(np.mean(scores)) if scores and None not in scores else None
        out[form] = row
    scored = [f for f in forms if out[f]["mean"] is not None]
    out["winner"] = min(scored, key=lambda f: out[f]["mean"]) if scored else forms[0]
    return out


def compare_forms(cells: Sequence[Cell], held_batches: Sequence[float], held_groups: Sequence[int]) -> dict[str, Any]:
    """Both batch forms and both rate forms scored on the held-out batch sizes and (N, D) points."""
    splits = _splits(cells, held_batches, held_groups)
    return dict(
        held_batch_tokens=[float(b) for b in held_batches],
        held_points=[int(g) for g in held_groups],
        batch=_score(BATCH_FORMS, splits, _batch_error),
        lr=_score(LR_FORMS, splits, _lr_error),
    )


def choose(N: float, D: float, sizes: np.ndarray, batch: OptimalBatchLaw | None, lr: LRLaw) -> tuple[float, float]:
    """(batch tokens, rate) the laws choose at (N, D): B_opt under the optimal form, else the smallest size."""
    B = float(batch.b_opt(N, D)) if batch is not None else float(sizes.min())
    return B, float(lr.lr(N, B, D))


def nearest_run(runs: Sequence[RecipeRun], batch_tokens: float, lr: float) -> RecipeRun:
    """The run nearest (batch, rate): nearest batch in log, then nearest rate in log among that batch's runs."""
    sizes = np.array(sorted({r.batch_tokens for r in runs}), float)
    at = sizes[np.argmin(np.abs(np.log(sizes / batch_tokens)))]
    same = [r for r in runs if r.batch_tokens == at]
    return min(same, key=lambda r: abs(math.log(r.lr / lr)))


def choice_regret(
    runs: Sequence[RecipeRun], cells: Sequence[Cell], held_groups: Sequence[int], batch_form: str, lr_form: str
) -> dict[str, Any]:
    """For each held-out (N, D) point, the laws (of these forms, fitted without the held-out points) choose a
    batch and a rate; the loss of the run nearest them against the point's best trained run (relative). A nearest
    run that diverged costs infinity."""
    train = [c for c in cells if c.group not in held_groups]
    batch = fit_optimal_batch(train) if batch_form == "optimal" else None
    lr = fit_lr_form(train, lr_form)
    by_point = {}
    for g, key, _, members in cell_runs(list(runs)):
        by_point.setdefault(g, (key, []))[1].extend(members)
    rows = []
    for g in held_groups:
        (_, N), members = by_point[g]
        D = float(np.mean([c.D for c in cells if c.group == g]))
        sizes = np.array([r.batch_tokens for r in members], float)
        B, rate = choose(N, D, sizes, batch, lr)
        near = nearest_run(members, B, rate)
        best = min(r.loss for r in members if not r.diverged and math.isfinite(r.loss))
        bad = near.diverged or not math.isfinite(near.loss)
        rows.append(
            dict(N=float(N), D=D, batch_tokens=B, lr=rate, run=near.name, run_batch_tokens=float(near.batch_tokens),
                 run_lr=near.lr, loss=near.loss, best_loss=best, regret=math.inf if bad else near.loss / best - 1)
        )  # fmt: skip
    regrets = [r["regret"] for r in rows]
    return dict(batch_form=batch_form, lr_form=lr_form, rows=rows, mean=float(np.mean(regrets)), max=max(regrets))
