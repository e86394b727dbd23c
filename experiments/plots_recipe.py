"""Plot the recipe laws against the sweep: best loss vs batch per group, and the best learning rate vs batch."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from smallest_loss.experiments.figures import new_figure, save_figure
from smallest_loss.scaling.recipe import Cell, RecipeLaw, batch_predict
from smallest_loss.scaling.recipe_forms import optimal_predict


def _batch_curve(law: RecipeLaw, grid: list[Cell], cells: list[Cell], mine: list[Cell]) -> np.ndarray:
    """The batch law's best losses along `grid` (one group's cells at many batches) under the law's batch form."""
    if law.batch_form == "optimal" and law.optimal_batch is not None:
        return optimal_predict(law.optimal_batch, grid, mine)
    b = law.batch
    return batch_predict(grid, cells, b.beta, math.log(b.b_crit), (b.loss_exponent, b.loss_ref))


def plot_recipe(cells: list[Cell], names: list[str], law: RecipeLaw, path: str | Path) -> Path:
    """Left: each group's best loss against batch tokens with the batch law's curve; right: the best learning rate
    of each cell (hollow: not bracketed by the sweep) with the learning-rate law's lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = new_figure(12, 5)
    left, right = fig.subplots(1, 2)
    batches = np.geomspace(min(c.batch_tokens for c in cells), max(c.batch_tokens for c in cells), 60)
    for g, name in enumerate(names):
        mine = [c for c in cells if c.group == g]
        if not mine:
            continue
        colour = f"C{g % 10}"
        left.scatter([c.batch_tokens for c in mine], [c.loss_star for c in mine], color=colour, s=20, label=name)
        level = float(np.mean([c.loss_star for c in mine]))  # B_crit at the group's loss, where it follows the loss
        grid = [Cell(g, mine[0].N, mine[0].D, float(b), 0.0, level, True) for b in batches]
        left.plot(batches, _batch_curve(law, grid, cells, mine), color=colour, lw=1)
        for c in mine:
            right.scatter(c.batch_tokens, c.lr_star, s=20, color=colour, facecolors=colour if c.bracketed else "none")
        right.plot(
            batches, np.broadcast_to(law.lr.lr(mine[0].N, batches, mine[0].D), batches.shape), color=colour, lw=1
        )
    left.axvline(law.batch.b_crit, color="grey", ls=":", lw=1, label=f"B_crit {law.batch.b_crit:,.0f}")
    left.set(
        xscale="log",
        xlabel="batch (tokens per step)",
        ylabel="best final loss",
        title="best loss vs batch: "
        + ("exp(gamma log(B/B_opt(D))^2)" if law.batch_form == "optimal" else "D_min (1 + B/B_crit)"),
    )
    left.legend(fontsize=7)
    right.set(
        xscale="log",
        yscale="log",
        xlabel="batch (tokens per step)",
        ylabel="best learning rate",
        title=f"lr* ~ N^{law.lr.n_exponent:.2f} B^{law.lr.batch_exponent:.2f} (hollow: not bracketed)",
    )
    save_figure(fig, path, dpi=110)
    return path
