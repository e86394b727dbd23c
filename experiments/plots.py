"""Plots of plans and IsoFLOP sweeps (matplotlib's Agg canvas: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from smallest_loss.experiments.figures import colors, new_figure, save_figure
from smallest_loss.scaling.collect import RunRecord
from smallest_loss.scaling.plan import Scores


def _lower_envelope(x: np.ndarray, y: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """The lowest y in each log-spaced bin of x."""
    edges = np.geomspace(x.min(), x.max() * 1.0001, bins + 1)
    which = np.digitize(x, edges) - 1
    xs, ys = [], []
    for k in range(bins):
        sel = which == k
        if sel.any():
            j = np.flatnonzero(sel)[np.argmin(y[sel])]
            xs.append(x[j])
            ys.append(y[j])
    return np.array(xs), np.array(ys)


def plot_plan(plan: Scores, folder: str | Path) -> list[Path]:
    """Predicted loss against parameters and against aspect ratio d/n, every candidate coloured by depth."""
    folder = Path(folder)
    c, loss = plan.candidates, plan.loss
    best = int(plan.order[0])
    fig = new_figure()
    left, right = fig.subplots(1, 2)
    norm = colors.LogNorm(vmin=c.n.min(), vmax=max(c.n.max(), c.n.min() + 1))
    for ax, x, label, bins in ((left, c.N, "parameters N", 40), (right, c.d / c.n, "aspect ratio d/n", 12)):
        sc = ax.scatter(x, loss, c=c.n, norm=norm, cmap="viridis", s=4, alpha=0.5, edgecolors="none")
        ex, ey = _lower_envelope(x, loss, bins)
        ax.plot(ex, ey, color="black", lw=1, label="best at each value")
        ax.scatter(
            [x[best]],
            [loss[best]],
            marker="*",
            s=220,
            color="red",
            zorder=3,
            label=f"best: d={c.d[best]}, n={c.n[best]}, loss {loss[best]:.3f}",
        )
        ax.set(xscale="log", xlabel=label, ylabel="predicted loss", title=f"predicted loss vs {label}")
        lo = loss.min()
        ax.set_ylim(lo - 0.02 * abs(lo), lo + 1.5 * (np.percentile(loss, 25) - lo))
        ax.legend(fontsize=8)
    fig.colorbar(sc, ax=right, label="depth n")
    fig.suptitle(f"budget {plan.budget.text}: {len(c):,} candidates", fontsize=10)
    path = folder / "plan.png"
    save_figure(fig, path, dpi=110)
    return [path]


def plot_isoflop(records: list[RunRecord], path: str | Path, profiles: list[dict] | None = None) -> Path:
    """IsoFLOP profiles: final loss against N for each budget, with the fitted parabolas and minima."""
    path = Path(path)
    fig = new_figure(7, 5)
    ax = fig.subplots()
    budgets = sorted({r.budget for r in records})
    cmap = colors.LinearSegmentedColormap.from_list("b", ["#1f77b4", "#d62728"])
    for k, C in enumerate(budgets):
        color = cmap(k / max(len(budgets) - 1, 1))
        runs = sorted((r for r in records if r.budget == C), key=lambda r: r.N)
        N, L = np.array([r.N for r in runs], float), np.array([r.loss for r in runs])
        ax.scatter(N, L, color=color, label=f"C = {C:.2g}")
        prof = next((p for p in profiles or [] if abs(p["C"] / C - 1) < 1e-6), None)
        if prof and "coeffs" in prof:
            x = np.linspace(np.log(N.min()), np.log(N.max()), 100)
            ax.plot(np.exp(x), np.polyval(prof["coeffs"], x), color=color, lw=1)
            ax.axvline(prof["N_opt"], color=color, ls=":", lw=0.8)
    ax.set(xscale="log", xlabel="parameters N", ylabel="final eval loss", title="IsoFLOP profiles")
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=110)
    return path
