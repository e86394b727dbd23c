"""The recipe laws from anyone's sweep: a recipe table (scaling/recipe_table.py) or run folders' runs, every form
fitted, the planner's forms chosen by held-out error (scaling/recipe_compare.py), with what the choice costs on
the held-out (N, D) points. The Python API's `fit_recipe`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling import recipe
from smallest_loss.scaling.recipe import Cell, RecipeLaw, RecipeRun, make_cells
from smallest_loss.scaling.recipe_compare import (
    choice_regret,
    compare_forms,
    default_held_batches,
    default_held_groups,
)
from smallest_loss.scaling.recipe_forms import fit_lr_nd, fit_optimal_batch
from smallest_loss.scaling.recipe_table import read_recipe_table


def recipe_runs(source: Any, columns: str | Mapping[str, str] | None = None) -> list[RecipeRun]:
    """Runs from a list of RecipeRun (run folders, scaling/collect.py) or a recipe table (path or DataFrame)."""
    if isinstance(source, list | tuple) and source and all(isinstance(r, RecipeRun) for r in source):
        return list(source)
    return read_recipe_table(source, columns)


def fit_recipe(
    source: Any,
    reference_batch_tokens: float | None = None,
    columns: str | Mapping[str, str] | None = None,
    holdout_batches: Sequence[float] | None = None,
    holdout_points: Sequence[int] | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> tuple[RecipeLaw, list[Cell], list[str]]:
    """Recipe laws from a table path, a pandas DataFrame or a list of RecipeRun: (law, cells, point names).

    `reference_batch_tokens`: the batch the loss law was fitted at (default: the table's median batch, noted in
    the evidence). `holdout_batches` (tokens) and `holdout_points` (indices into the point names) choose the
    forms; by default `default_held_batches` and `default_held_groups`. The law plans with the winners; its
    evidence holds the comparison, the choice's cost on the held-out points, and the diverged runs left out.
    """
    runs = recipe_runs(source, columns)
    cells, names = make_cells(runs)
    if not cells:
        raise UserError("every run of the recipe table diverged: no cell to fit")
    held_b = tuple(holdout_batches) if holdout_batches is not None else default_held_batches(cells)
    held_g = tuple(holdout_points) if holdout_points is not None else default_held_groups(cells)
    unknown = sorted(set(held_g) - set(range(len(names))))
    if unknown:
        raise UserError(f"held-out points {unknown} do not exist: the table has points 0-{len(names) - 1}")
    reference = reference_batch_tokens or float(np.median([r.batch_tokens for r in runs]))
    law, cells, names = recipe.fit_recipe(runs, reference, held_b, n_boot, seed)
    comparison = compare_forms(cells, held_b, held_g)
    evidence = dict(law.evidence, comparison=comparison, diverged_runs=sum(c.diverged for c in cells))
    if reference_batch_tokens is None:
        evidence["reference_batch"] = "the table's median batch (none given)"
    batch_form, lr_form = comparison["batch"]["winner"], comparison["lr"]["winner"]
    if held_g:
        evidence["choice"] = choice_regret(runs, cells, held_g, batch_form, lr_form)
        if (batch_form, lr_form) != ("mccandlish", "N,B"):
            evidence["choice_mccandlish_nb"] = choice_regret(runs, cells, held_g, "mccandlish", "N,B")
    optimal = _try(lambda: fit_optimal_batch(cells))
    if optimal is None:
        batch_form = "mccandlish"
    lr = law.lr if lr_form == "N,B" else fit_lr_nd(cells)
    law = dataclasses.replace(law, lr=lr, batch_form=batch_form, optimal_batch=optimal, evidence=evidence)
    return law, cells, names


def _try(fit: Any) -> Any:
    try:
        return fit()
    except UserError:
        return None
