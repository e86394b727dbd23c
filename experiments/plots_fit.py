"""Plot a fitted loss law against its points: loss vs D with iso-N curves, and predicted vs actual."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from smallest_loss.experiments.figures import cm, colors, new_figure, save_figure, ticker
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.kaplan import KaplanLaw
from smallest_loss.scaling.points import FitPoints

MAX_CURVES = 8  # iso-N curves drawn when the points have many distinct N


def _iso_n_values(N: np.ndarray) -> np.ndarray:
    distinct = np.unique(N)
    if len(distinct) <= MAX_CURVES:
        return distinct
    return np.geomspace(distinct[0], distinct[-1], MAX_CURVES)


def _title(law: ChinchillaLaw | KaplanLaw) -> str:
    if isinstance(law, ChinchillaLaw):
        return (f"L = {law.E:.3g} + {law.A:.3g}/N^{law.alpha:.3f} + {law.B:.3g}/D^{law.beta:.3f}"
                f"   (N_opt ~ C^{law.n_exponent:.3f})")  # fmt: skip
    return f"L = (({law.Nc:.3g}/N)^({law.aN:.3f}/{law.aD:.3f}) + {law.Dc:.3g}/D)^{law.aD:.3f}"


def plot_fit(points: FitPoints, law: ChinchillaLaw | KaplanLaw, path: str | Path) -> Path:
    """Save a PNG: left, loss vs D (log axes) coloured by N with the law's iso-N curves; right,
    predicted vs actual loss with the identity line. Uses the Agg canvas (no display needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fixed margins, not a constrained layout: a layout pass is a third of this plot's time (`fit --out` draws it)
    fig = new_figure(12, 5, layout=None)
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.1, top=0.87, wspace=0.22)
    left, right = fig.subplots(1, 2)
    norm = colors.LogNorm(vmin=points.N.min(), vmax=max(points.N.max(), points.N.min() * 1.0001))
    cmap = cm.viridis
    sc = left.scatter(points.D, points.loss, c=points.N, cmap=cmap, norm=norm, s=18, edgecolors="none")
    D_grid = np.geomspace(points.D.min() / 1.5, points.D.max() * 1.5, 200)
    for n in _iso_n_values(points.N):
        left.plot(D_grid, law.loss(n, D_grid), color=cmap(norm(n)), lw=1.2, label=f"N={n:.2g}")
    left.set(xscale="log", yscale="log", xlabel="D (tokens)", ylabel="loss", title="loss vs tokens, iso-N fits")
    left.legend(fontsize=7, loc="upper right")
    fig.colorbar(sc, ax=left, label="N (parameters)")
    predicted = law.loss(points.N, points.D)
    lo, hi = min(predicted.min(), points.loss.min()), max(predicted.max(), points.loss.max())
    right.scatter(points.loss, predicted, c=points.N, cmap=cmap, norm=norm, s=18, edgecolors="none")
    right.plot([lo, hi], [lo, hi], color="black", ls=":", lw=1)
    rel = np.abs(predicted / points.loss - 1)
    right.set(xscale="log", yscale="log", xlabel="actual loss", ylabel="predicted loss",
              title=f"predicted vs actual (median |rel. error| {np.median(rel):.2%})")  # fmt: skip
    plain = ticker.FuncFormatter(lambda value, _: f"{value:.3g}")
    for axis in (left.yaxis, right.xaxis, right.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(plain)
    fig.suptitle(_title(law), fontsize=10)
    save_figure(fig, path, dpi=120)
    return path


def plot_curves(curves: list, laws: list, path: str | Path, held: list | None = None) -> Path:
    """Save a PNG: each shape's measured train-loss curves (a moving average over 2% of a run's steps, at least 10
    and at most a quarter of them: one batch's loss is noisy), or their evaluations (dots) where the laws were
    fitted to them, and its curve law (dashed) over the fitted steps; `held` runs of a fitted shape (not fitted)
    in black, the law's prediction dotted over their whole run."""
    on_evals = any(c.fit_evals for c in curves)
    in_steps = any(not c.tokens_per_step for c in curves)  # a curve table without tokens: drawn against steps
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = new_figure(6 * len(laws), 4.8)
    axes = np.atleast_1d(fig.subplots(1, len(laws)))
    for ax, law in zip(axes, laws, strict=True):
        shown = []
        mine = [(x, cm.tab10(k % 10), "--", x.name) for k, x in enumerate(x for x in curves if x.N == law.N)]
        mine += [(x, "black", ":", f"{x.name} (held out)") for x in held or () if x.N == law.N]
        for c, color, ls, label in mine:
            per_step = 1 if in_steps else c.tokens_per_step
            tokens = np.arange(1, c.steps + 1) * per_step
            if on_evals:
                at, losses = c.fitted_evals()
                ax.plot(at * per_step, losses, "o", ms=2.5, color=color, alpha=0.7)
                shown.append(losses)
            else:
                width = max(1, min(c.steps // 4, max(10, c.steps // 50)))
                smooth = np.convolve(c.loss, np.ones(width) / width, mode="valid")
                ax.plot(tokens[width - 1 :], smooth, color=color, lw=0.8, alpha=0.6)
                shown.append(smooth[c.first - 1 :] if len(smooth) > c.first else smooth)
            fitted = slice(c.first - 1, c.steps)
            ax.plot(tokens[fitted], law.curve(c.lr)[fitted], color=color, lw=1.2, ls=ls, label=label)
        low, high = np.percentile(np.concatenate(shown), [0.5, 99.5])
        ax.set_ylim(low * 0.95, high * 1.05)
        params = ", ".join(f"{k}={getattr(law, k):.3g}" for k in law.params)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="steps" if in_steps else "tokens",
            ylabel="evaluation loss" if on_evals else "train loss (smoothed)",
        )
        ax.set_title(f"N={law.N}\n{params}", fontsize=8)
        ax.legend(fontsize=6)
    save_figure(fig, path, dpi=110)
    return path


def plot_predicted_curves(curves: list[tuple[int, np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Save a PNG: the predicted (eval-equivalent) loss at each step of each shape's schedule, `(N, steps, loss)`."""
    path = Path(path)
    fig = new_figure(6.4, 4.8)
    ax = fig.subplots()
    for N, steps, loss in curves:
        ax.plot(steps, loss, lw=1.2, label=f"N={N:,}")
    ax.set(xscale="log", yscale="log", xlabel="step", ylabel="predicted loss (eval-equivalent)")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(ticker.NullFormatter())
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)
    return path
