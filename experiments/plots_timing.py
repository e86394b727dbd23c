"""Predicted-vs-measured step-time plots, one per model (held-out predictions)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.experiments.figures import new_figure, save_figure, ticker


def plot_name(model_id: str) -> str:
    """The file name of a model's predicted-vs-measured plot (`model_id`: its id in timing.models.MODELS)."""
    return f"pred_vs_measured_{_slug(model_id)}.png"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _prediction_axes(measured: np.ndarray) -> tuple[Any, Any, Any]:
    """A predicted-vs-measured figure without its points: log axes over the measured range, the identity line;
    returns the figure, its (empty) scatter and its title."""
    lo, hi = measured.min() / 1.5, measured.max() * 1.5
    subs = (1.0,) if np.log10(hi / lo) > 3 else (1.0, 2.0, 5.0)  # tick marks: decades, or 1-2-5 on a short range
    # Fixed margins: a constrained layout measured every log-scale tick label again, 0.7 s of a plot's 1.1 s.
    fig = new_figure(5, 5, layout=None)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.16, right=0.96, bottom=0.11, top=0.84)
    points = ax.scatter(measured, measured, s=14)
    ax.plot([lo, hi], [lo, hi], color="black", ls=":", lw=1)
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel="measured step seconds",
        ylabel="predicted (held-out architectures)",
    )
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers (0.01, 0.02): no math text to lay out, half a plot's time
        axis.set_major_locator(ticker.LogLocator(subs=subs))
        axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(ticker.NullLocator())  # no minor ticks: each tick is an object to build and draw
    title = ax.set_title("", fontsize=9, y=1.01)  # placed, not fitted above the tick labels: a quarter of the time
    return fig, points, title


def plot_predictions(results: list[dict[str, Any]], measured: np.ndarray, out: str | Path) -> list[Path]:
    """One PNG per model: held-out predicted step time against measured, log axes, with the identity line. One
    figure serves them all, each model's points and title replacing the last's (a figure per model cost half of
    a calibration's plotting time)."""
    out = Path(out)
    plotted = [r for r in results if "predicted" in r]
    if not plotted:
        return []
    fig, points, title = _prediction_axes(measured)
    paths = []
    for r in plotted:
        points.set_offsets(np.column_stack([measured, r["predicted"]]))
        h = r["held_out"]
        name = textwrap.fill(f"{r['id']}: {r['label']}", 48)
        title.set_text(f"{name}\nMAPE {h['mape']:.1%}, max {h['max_ape']:.1%}, Spearman {h['spearman']:.3f}")
        paths.append(save_figure(fig, out / plot_name(r["id"]), dpi=110))
    return paths
