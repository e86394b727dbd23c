"""A new Matplotlib figure on the Agg canvas, with Matplotlib loaded on first use: a command imports it only
when it draws (about a second; `plan` without `--out` never does)."""

from __future__ import annotations

from typing import Any

from smallest_loss.configs.lazy import LazyModule

cm = LazyModule("matplotlib.cm")
colors = LazyModule("matplotlib.colors")
ticker = LazyModule("matplotlib.ticker")
_backend = LazyModule("matplotlib.backends.backend_agg")
_figure = LazyModule("matplotlib.figure")


def new_figure(width: float = 12, height: float = 5, layout: str | None = "constrained") -> Any:
    """A `matplotlib.figure.Figure` of `width` x `height` inches drawn by the Agg canvas (no display needed)."""
    fig = _figure.Figure(figsize=(width, height), layout=layout)
    _backend.FigureCanvasAgg(fig)
    return fig
