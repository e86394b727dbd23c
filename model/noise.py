"""The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al., 2018, arXiv 1812.06162).

G is the true gradient of the loss and Sigma the covariance of one example's gradient (an example is one
sequence: the gradient of its mean token loss). A batch of size b has E|G_b|^2 = |G|^2 + tr(Sigma)/b, so
squared gradient norms at two batch sizes b < B give unbiased estimates (appendix A, eqs. A.2 and A.3):

    |G|^2     = (B |G_B|^2 - b |G_b|^2) / (B - b)
    tr(Sigma) = (|G_b|^2 - |G_B|^2) / (1/b - 1/B)

A micro-batched training step (model/train.py) has both for free: |G_b|^2, the mean over its micro-batches
of each micro-batch's squared gradient norm, and |G_B|^2, the squared norm of their average (the step's
gradient, before clipping). One step's estimates are very noisy (|G|^2 often comes out negative), so
B_simple is the ratio of their means over many steps, never the mean of per-step ratios (biased).
B_simple predicts the critical batch size, in sequences; times the sequence length s, in tokens.

Fields a micro-batched run writes (README, "File formats"): `grad_sq` (|G_B|^2) and `micro_grad_sq`
(|G_b|^2) on every line of metrics.jsonl; `b_simple` and `b_simple_tokens`, the estimate over the steps
since the previous one, every `train.noise_every` steps; the `noise_scale` object of summary.json
(`summarise`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FULL, MICRO = "grad_sq", "micro_grad_sq"  # the metrics.jsonl fields of |G_B|^2 and |G_b|^2


def noise_terms(micro_sq: Any, full_sq: Any, b: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-step unbiased estimates (|G|^2, tr(Sigma)) from |G_b|^2 and |G_B|^2 (McCandlish et al., A.2-A.3)."""
    micro_sq, full_sq = np.asarray(micro_sq, np.float64), np.asarray(full_sq, np.float64)
    grad_sq = (B * full_sq - b * micro_sq) / (B - b)
    trace = (micro_sq - full_sq) / (1 / b - 1 / B)
    return grad_sq, trace


def estimate(micro_sq: Any, full_sq: Any, b: int, B: int) -> dict[str, float | None]:
    """B_simple (sequences) over a set of steps: the mean of tr(Sigma) over the mean of |G|^2.

    `b_simple` is None where the mean |G|^2 is not positive (noise hides the gradient: average over more
    steps). `rel_se` is its relative standard error by the delta method, treating steps as independent
    samples (each step draws fresh data; slow drift of |G|^2 over training is not accounted for); None with
    fewer than two steps.
    """
    grad_sq, trace = noise_terms(micro_sq, full_sq, b, B)
    g, t = float(np.mean(grad_sq)), float(np.mean(trace))
    ratio = t / g if g > 0 else None
    rel_se = None
    if ratio is not None and len(grad_sq) > 1:
        rel_se = float(np.std(trace - ratio * grad_sq, ddof=1) / math.sqrt(len(grad_sq)) / abs(t))
    return dict(b_simple=ratio, rel_se=rel_se, mean_grad_sq=g, trace_sigma=t)


def _in_units(ratio: float | None, s: int) -> dict[str, float | None]:
    """B_simple in sequences (`b_simple`) and in tokens (`b_simple_tokens`: sequences of s tokens)."""
    return dict(b_simple=ratio, b_simple_tokens=None if ratio is None else ratio * s)


def window_fields(window: list[tuple[float, float]], b: int, B: int, s: int) -> dict[str, float | None]:
    """The metrics.jsonl fields of one window's estimate: `b_simple` in sequences and in tokens."""
    return _in_units(estimate([m for m, _ in window], [f for _, f in window], b, B)["b_simple"], s)


def open_window(lines: list[dict[str, Any]], every: int) -> list[tuple[float, float]]:
    """(|G_b|^2, |G_B|^2) of the logged steps after the last multiple of `every`: the window a resumed run
    continues, so that its windowed estimates match an uninterrupted run's."""
    if not every or not lines:
        return []
    start = lines[-1]["step"] // every * every
    return [(line[MICRO], line[FULL]) for line in lines if line["step"] > start and MICRO in line]


def summarise(lines: list[dict[str, Any]], b: int, B: int, s: int) -> dict[str, Any] | None:
    """summary.json's `noise_scale`: B_simple over the last half of the logged steps (the stretch of
    training closest to the final loss), in sequences and tokens; None without micro-batch norms."""
    noisy = [line for line in lines if MICRO in line]
    if not noisy:
        return None
    last = noisy[-1]["step"]
    half = [line for line in noisy if line["step"] > last // 2]
    out = estimate([line[MICRO] for line in half], [line[FULL] for line in half], b, B)
    return dict(
        **_in_units(out.pop("b_simple"), s),
        **out,
        first_step=half[0]["step"],
        last_step=last,
        steps=len(half),
        micro_batch=b,
        batch=B,
    )


def loss_windows(lines: list[dict[str, Any]], b: int, B: int, s: int, windows: int = 8) -> list[tuple[float, float]]:
    """(mean train loss, B_simple in tokens) over `windows` stretches of equal numbers of logged steps, the first
    (warm-up) left out: how the noise scale moves with the loss along one run, for B_crit(L) (scaling/recipe.py).
    Stretches whose mean |G|^2 is not positive (noise hides the gradient) are left out."""
    noisy = [line for line in lines if MICRO in line and "train_loss" in line]
    out = []
    for k in range(1, windows):
        part = noisy[k * len(noisy) // windows : (k + 1) * len(noisy) // windows]
        if len(part) < 2:
            continue
        ratio = estimate([x[MICRO] for x in part], [x[FULL] for x in part], b, B)["b_simple"]
        if ratio is not None and ratio > 0:
            out.append((float(np.mean([x["train_loss"] for x in part])), ratio * s))
    return out
