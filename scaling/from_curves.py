"""Laws from curves: the Chinchilla law fitted to the final losses that per-shape curve laws predict.

One schedule-aware curve law is fitted per model shape (scaling/curve_law.py: Tissue et al. 2024 or the
multi-power law of Luo et al. 2025), and each predicts the final eval loss of cosine runs of many lengths at its
shape's own peak rate; the Chinchilla law (Hoffmann et al. 2022, Approach 3; scaling/chinchilla.py) is then fitted
across shapes to those points. Each per-shape law is checked on its own curves, and no assumed form of how L0, A
and C change with N enters the fit. Bootstrap samples pair draw i of every shape's curve law (runs resampled
within the shape) and refit Chinchilla to its predictions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.scaling.chinchilla import fit_chinchilla
from smallest_loss.scaling.curve_law import Curve, CurveLaw, by_shape, curve_law_from_dict, schedule_lrs, shape_peaks
from smallest_loss.scaling.points import FitPoints

LENGTHS = 8  # cosine lengths per shape the Chinchilla law from curves is fitted to
CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")
MAX_LAW_DRAWS = 100  # Chinchilla refits for the laws from curves' intervals (each a few tenths of a second)


def chinchilla_points(
    laws: Sequence[CurveLaw],
    lengths: dict[int, Sequence[int]],
    train: TrainConfig,
    tokens_per_step: int,
    peaks: dict[int, float],
) -> FitPoints:
    """Points (N, D, predicted final eval loss) of cosine runs of the given lengths (steps) per shape, each at its
    shape's own peak rate (`shape_peaks`: a tuned sweep trains every shape at its own): the input of the
    Chinchilla fit of laws from curves. The laws may be of either form."""
    N, D, loss = [], [], []
    for law in laws:
        shape_train = dataclasses.replace(train, lr=peaks[law.N])
        for steps in lengths[law.N]:
            N.append(law.N)
            D.append(steps * tokens_per_step)
            loss.append(law.final_eval(schedule_lrs(shape_train, steps)))
    return FitPoints(N=np.array(N, float), D=np.array(D, float), loss=np.array(loss), group=np.arange(len(N)))


def curve_lengths(curves: Sequence[Curve], reach: float) -> dict[int, list[int]]:
    """Per shape, LENGTHS geometric run lengths from its shortest fitted run to `reach` times its longest."""
    return {
        N: sorted(
            {int(round(s)) for s in np.geomspace(min(c.steps for c in g), reach * max(c.steps for c in g), LENGTHS)}
        )
        for N, g in by_shape(curves).items()
    }


def laws_from_curves(curves: Sequence[Curve], laws: list[CurveLaw], train: TrainConfig,
                     reach: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """The Chinchilla law fitted to the curve laws' predicted final eval losses of cosine runs (one law per
    shape first, then Chinchilla across shapes: no form is assumed for how L0, A, C change with N)."""
    if len(laws) < 2:
        return dict(error="laws from curves need runs of two or more model shapes")
    peaks = shape_peaks(curves)
    if isinstance(peaks, str):
        return dict(error=peaks)
    points = chinchilla_points(laws, curve_lengths(curves, reach), train, curves[0].tokens_per_step, peaks)
    law = fit_chinchilla(points).law
    return dict(law={k: getattr(law, k) for k in CHINCHILLA_KEYS}, points=len(points.N), lengths_reach=reach)


def laws_from_curves_samples(
    curves: Sequence[Curve], shapes: list[dict[str, Any]], train: TrainConfig, reach: float = 1.0
) -> dict[str, np.ndarray] | None:
    """Bootstrap samples of the law from curves: draw i of every shape's curve law (runs resampled within the
    shape, `fit_curve_laws`; a shape with one run keeps its fit), its predicted points refitted by Chinchilla.
    None when no shape was resampled."""
    counts = [len(s["draws"]) for s in shapes if s.get("draws")]
    if not counts or len(shapes) < 2:
        return None
    peaks = shape_peaks(curves)
    if isinstance(peaks, str):
        return None
    samples, lengths = [], curve_lengths(curves, reach)
    for i in range(min(min(counts), MAX_LAW_DRAWS)):
        laws = [curve_law_from_dict(s["draws"][i] if s.get("draws") else s) for s in shapes]
        law = fit_chinchilla(chinchilla_points(laws, lengths, train, curves[0].tokens_per_step, peaks)).law
        samples.append([getattr(law, k) for k in CHINCHILLA_KEYS])
    return dict(zip(CHINCHILLA_KEYS, np.array(samples).T, strict=True))
