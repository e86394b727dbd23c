"""Plot what post-training quantisation cost each run: the measured rise against the tokens each parameter saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from smallest_loss.experiments.figures import new_figure, save_figure


def plot_ptq(tokens_per_param: list[float], rises: dict[int, list[float]], path: str | Path) -> Path:
    """The rise of each run's loss after quantising its weights to each width (`rises`: bits -> one rise per run,
    in the runs' order) against its tokens per parameter, log-log (rises at or below 0, within the evaluation's
    noise, drawn hollow at the axis' floor)."""
    fig = new_figure(8, 5)
    ax = fig.subplots()
    x = np.asarray(tokens_per_param, float)
    positive = [r for values in rises.values() for r in values if r > 0]
    floor = min(positive) / 2 if positive else 1e-4
    for k, (bits, values) in enumerate(sorted(rises.items())):
        y = np.asarray(values, float)
        up = y > 0
        colour = f"C{k % 10}"
        ax.scatter(x[up], y[up], color=colour, s=22, label=f"{bits} bits")
        ax.scatter(x[~up], np.full((~up).sum(), floor), color=colour, s=22, facecolors="none")
    ax.set(xscale="log", yscale="log", xlabel="tokens per parameter (D / N)", ylabel="loss after - loss as trained",
           title="post-training quantisation: the rise of each run's loss")  # fmt: skip
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save_figure(fig, path)
