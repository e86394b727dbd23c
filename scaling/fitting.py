"""From a table or runs to a fitted law file: the one entry the `fit` command and the Python API share.

`read_table` reads a fit CSV, `read_runs` run or sweep folders; `fit_law` fits the Chinchilla law (Approach 3, with
its identification checks and fallbacks, scaling/chinchilla.py), the Kaplan law (scaling/kaplan.py) or the
shape-aware law (scaling/aspect.py) and returns a `LawFile` with the bootstrap's intervals and samples.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.aspect import AspectPoints, bootstrap_aspect, fit_aspect, read_aspect_csv, with_intervals
from smallest_loss.scaling.bootstrap import fit_points
from smallest_loss.scaling.chinchilla import LAW_KEYS
from smallest_loss.scaling.holdout import choose_shape_term
from smallest_loss.scaling.intervals import calibrate
from smallest_loss.scaling.laws import LawFile
from smallest_loss.scaling.optimize import DEFAULT_DELTA
from smallest_loss.scaling.points import (
    FitPoints,
    aspect_range,
    best_of_rows,
    check_budgets,
    read_fit_table,
    sweep_table,
    table_aspect_range,
)
from smallest_loss.scaling.shape_terms import AUTO, DEFAULT_TERM

FORMS = ("chinchilla", "kaplan", "shape")


def read_table(path: Any, shapes: bool = False, best_of: str | None = None,
               columns: str | Mapping[str, str] | None = None) -> FitPoints | AspectPoints:  # fmt: skip
    """A fit table (columns N, D, loss; optional C, run, group: a CSV, a JSON-lines file or a pandas DataFrame) as
    points; `columns` names the table's own columns (`N=params,D=tokens,loss=eval/loss`); `shapes`: with each row's
    width d and depth n (columns d and n, a CSV), for the shape-aware law; `best_of` ("lr,batch"): of the rows of
    one (N, D) that differ in these columns, the lowest-loss one only (`points.best_of_rows`)."""
    if shapes:
        if columns:
            raise UserError("--columns: not with the shape-aware law (--form shape reads columns N, D, loss, d, n)")
        points = read_aspect_csv(path)
        check_budgets(points.points, str(path))
        return points
    points = read_fit_table(path, columns)
    if best_of is not None:
        points = points.take(best_of_rows(sweep_table(path, columns), best_of))
    check_budgets(points, "DataFrame" if not isinstance(path, (str, Path)) else str(path))
    return points


def read_runs(paths: Sequence[str | Path], shapes: bool = False) -> FitPoints | AspectPoints:
    """One point per finished run under run or sweep folders (exact N, tokens seen, final eval loss); `shapes`: with
    each run's width d and depth n, for the shape-aware law. (Run folders are read with the trainer's code, loaded
    here only: a fit of a table never loads JAX.)"""
    from smallest_loss.scaling.collect import collect_runs, to_points

    records, left_out = collect_runs(list(paths))
    for line in left_out:
        print(f"warning: left out {line}", file=sys.stderr)
    points = to_points(records)
    if shapes:
        return AspectPoints(points, np.array([r.d for r in records]), np.array([r.n for r in records]))
    return points


def fit_law(
    points: FitPoints | AspectPoints,
    form: str = "chinchilla",
    bootstrap: int = 1000,
    delta: float = DEFAULT_DELTA,
    allocation_exponent: float | None = None,
    shape_term: str = AUTO,
) -> LawFile:
    """Fit `form` ("chinchilla", "kaplan" or "shape") to the points, with `bootstrap` resamples for the intervals
    (0: none). `allocation_exponent` (Approach 2's N_opt ~ C^a) ties the Chinchilla exponents if the full law is
    not identified by the points. `shape_term`: the shape-aware law's term (scaling/shape_terms.py; "auto": the one
    of `AUTO_TERMS` that predicts left-out shapes best, `choose_shape_term`)."""
    if form not in FORMS:
        raise UserError(f"form {form!r}: use one of {', '.join(FORMS)}")
    if bootstrap < 0 or bootstrap == 1:
        raise UserError(f"--bootstrap {bootstrap}: give 0 (no intervals) or at least 2 resamples (default 1000)")
    shaped = points if isinstance(points, AspectPoints) else None
    if form == "shape":
        if not isinstance(points, AspectPoints):
            raise UserError("the shape-aware law needs each run's width d and depth n: read them with shapes=True")
        law_file = fit_aspect_law(points, bootstrap, delta, shape_term)
        points = points.points
    else:
        points = points.points if isinstance(points, AspectPoints) else points
        result = fit_points(points, form, bootstrap, delta, allocation_exponent)
        diagnostics = dict(result["diagnostics"])
        if form == "chinchilla":  # the calibrated intervals' scatter (scaling/intervals.py)
            diagnostics["calibration"] = calibrate(result["law"], points, result["fit"].form).to_dict()
        law_file = LawFile(result["law"], result["intervals"], result["samples"], diagnostics)
    diagnostics = dict(law_file.diagnostics, fitted_range=points.fitted_range)
    law_file = dataclasses.replace(law_file, diagnostics=diagnostics)
    return with_aspect_range(law_file, aspect_range(shaped.d, shaped.n) if shaped is not None else None)


def with_aspect_range(law_file: LawFile, span: list[float] | None) -> LawFile:
    """The law file with the d/n its runs spanned in its fitted range (`fitted_range["aspect"]`): a plan under a law
    without a shape term keeps to it (scaling/plan.py `aspect_bounds`). Unchanged when `span` is None."""
    if span is None:
        return law_file
    fitted = dict((law_file.diagnostics or {}).get("fitted_range") or {}, aspect=list(span))
    return dataclasses.replace(law_file, diagnostics=dict(law_file.diagnostics or {}, fitted_range=fitted))


def source_aspect_range(records: Sequence[Any], csv: Any = None, columns: Any = None) -> list[float] | None:
    """The d/n a fit's runs spanned (`with_aspect_range`): its run records' widths and depths, else its table's `d`
    and `n` columns (`points.table_aspect_range`); None when neither gives them."""
    if records:
        return aspect_range([r.d for r in records], [r.n for r in records])
    return table_aspect_range(csv, columns) if csv is not None else None


def fit_aspect_law(points: AspectPoints, bootstrap: int, delta: float = DEFAULT_DELTA,
                   term: str = DEFAULT_TERM) -> LawFile:  # fmt: skip
    """The shape-aware law: the Chinchilla form times the aspect-ratio factor, with the bootstrap's intervals; the
    law file's `shape` section carries the factor (and its samples)."""
    choice = None
    if term == AUTO:
        term, choice = choose_shape_term(points, delta)
    fit = fit_aspect(points, delta, term)
    boot = bootstrap_aspect(points, fit, bootstrap) if bootstrap else None
    shape = with_intervals(fit, boot)
    diagnostics = dict(fit.diagnostics, **({"shape_term_choice": choice} if choice else {}))
    intervals = samples = None
    if boot is not None:
        intervals = {k: v for k, v in boot.intervals.items() if k in LAW_KEYS}
        samples = {k: v for k, v in boot.samples.items() if k in LAW_KEYS}
        diagnostics.update(
            bootstrap=dict(n_boot=boot.n_boot, n_converged=boot.n_converged, level=boot.level, seconds=boot.seconds),
            warnings=list(fit.warnings) + list(boot.warnings),
        )
    return LawFile(fit.law, intervals, samples, diagnostics, shape=shape)


def without_samples(law_file: LawFile) -> LawFile:
    """The law file without its bootstrap samples (what a report shows), its shape and precision sections' too."""
    shape = None if law_file.shape is None else dataclasses.replace(law_file.shape, samples=None)
    precision = None if law_file.precision is None else dataclasses.replace(law_file.precision, samples=None)
    return dataclasses.replace(law_file, samples=None, shape=shape, precision=precision)
