"""`smallest-loss fit`: fit a loss law to run folders or a CSV, with bootstrap intervals, and report it.

From run folders it also reports what the runs can say on their own: Chinchilla's Approach 2 (IsoFLOP
parabolas) when the runs come from an IsoFLOP sweep, the extrapolation from the smaller budgets to the
largest one (`--holdout-largest`), and learning-curve extrapolation error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.scaling.collect import RunRecord, collect_runs, to_points
from smallest_loss.scaling.curves import extrapolation_error
from smallest_loss.scaling.fit import DEFAULT_DELTA, bootstrap_chinchilla, fit_chinchilla, fit_kaplan
from smallest_loss.scaling.isoflop import approach2
from smallest_loss.scaling.laws import ChinchillaLaw, law_to_dict, save_law
from smallest_loss.scaling.points import FitPoints, read_fit_csv

LAW_KEYS = ("E", "A", "B", "alpha", "beta", "n_exponent")


def fit_points(points: FitPoints, form: str, n_boot: int, delta: float = DEFAULT_DELTA,
               allocation_exponent: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Fit `form` to the points; for Chinchilla with n_boot > 0, add bootstrap intervals and samples.

    `allocation_exponent` (Approach 2's N_opt ~ C^a) ties the exponents if the full law is not identified.
    """
    if form == "kaplan":
        fit = fit_kaplan(points, delta)
        return dict(law=fit.law, fit=fit, intervals=None, samples=None, diagnostics=fit.diagnostics)
    fit = fit_chinchilla(points, delta, allocation_exponent=allocation_exponent)
    if n_boot <= 0:
        return dict(law=fit.law, fit=fit, intervals=None, samples=None, diagnostics=fit.diagnostics)
    boot = bootstrap_chinchilla(points, n_boot=n_boot, delta=delta, fit=fit)
    diagnostics = dict(fit.diagnostics, bootstrap=dict(
        n_boot=boot.n_boot, n_converged=boot.n_converged, n_at_bound=boot.n_at_bound, level=boot.level,
        n_groups=boot.n_groups, n_groups_used=boot.n_groups_used, seconds=boot.seconds))  # fmt: skip
    diagnostics["warnings"] = list(fit.warnings) + list(boot.warnings)
    return dict(law=fit.law, fit=fit, intervals=boot.intervals, samples=boot.samples, diagnostics=diagnostics)


def holdout_largest(points: FitPoints, budgets: np.ndarray, names: list[str],
                    delta: float = DEFAULT_DELTA) -> dict[str, Any]:  # fmt: skip
    """Fit without the largest budget's points, then predict them: the extrapolation a planner relies on.

    `budgets` are the sweep's budgets for runs, 6ND for CSV points."""
    largest = float(np.max(budgets))
    test = budgets >= largest * (1 - 1e-6)
    if np.sum(~test) < 6:
        raise UserError(f"--holdout-largest needs at least 6 points below the largest budget, found {np.sum(~test)}")
    fit = fit_chinchilla(FitPoints(points.N[~test], points.D[~test], points.loss[~test], points.group[~test]), delta)
    law = fit.law
    rows = [dict(name=names[i], N=float(points.N[i]), D=float(points.D[i]), actual=float(points.loss[i]),
                 predicted=float(law.loss(points.N[i], points.D[i]))) for i in np.flatnonzero(test)]  # fmt: skip
    errors = [abs(row["predicted"] / row["actual"] - 1) for row in rows]
    return dict(budget=largest, law={k: getattr(law, k) for k in LAW_KEYS}, form=fit.form, identified=fit.identified,
                runs=rows, mean_abs_rel_error=float(np.mean(errors)), max_abs_rel_error=float(np.max(errors)))


def curve_extrapolation(records: list[RunRecord], fraction: float = 0.5) -> dict[str, Any]:
    """Predict each run's final train loss from the first `fraction` of its curve (scaling/curves.py)."""
    rows = []
    for r in records:
        tokens, losses = np.array([c[0] for c in r.curve], float), np.array([c[1] for c in r.curve], float)
        try:
            result = extrapolation_error(tokens, losses, fraction=fraction)
        except UserError:
            continue  # too few logged points in the window: not enough of a curve to fit
        # Train losses are noisy batch by batch: compare with the mean of the last 5% of logged points.
        actual = float(np.mean(losses[tokens >= 0.95 * tokens[-1]]))
        rows.append(dict(name=r.name, predicted=result.predicted, actual=actual,
                         rel_error=result.predicted / actual - 1))
    errors = np.abs([row["rel_error"] for row in rows]) if rows else np.array([np.nan])
    return dict(fraction=fraction, runs=rows, mean_abs_rel_error=float(np.mean(errors)),
                max_abs_rel_error=float(np.max(errors)))


def isoflop_allocation(records: list[RunRecord]) -> dict[str, Any] | None:
    """Approach 2 when at least two budgets have three or more runs; None otherwise."""
    budgets = np.array([r.budget for r in records])
    if len(np.unique(budgets)) < 2:
        return None
    try:
        result = approach2(budgets, np.array([r.N for r in records], float), np.array([r.loss for r in records]))
    except UserError as err:
        return dict(error=str(err))
    return dict(a=result.a, b=result.b, warnings=list(result.warnings),
                profiles=[dict(C=p.C, N_opt=p.N_opt, D_opt=p.D_opt, loss_min=p.loss_min, coeffs=list(p.coeffs),
                               extrapolated=p.extrapolated) for p in result.profiles])


def _format_law(result: dict[str, Any]) -> list[str]:
    law, intervals = result["law"], result["intervals"] or {}
    names = LAW_KEYS if isinstance(law, ChinchillaLaw) else ("Nc", "Dc", "aN", "aD")
    lines = ["| constant | value | 95% interval |", "|---|---|---|"]
    for key in names:
        lo_hi = intervals.get(key)
        span = f"[{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi else "-"
        lines.append(f"| {key} | {getattr(law, key):.4g} | {span} |")
    fit = result["fit"]
    lines += ["", f"law used: {fit.form_description} ({'identified' if fit.identified else 'NOT identified'})"]
    lines.append(f"objective {fit.objective:.6g} (Huber delta {fit.delta:g}), max |gradient| {fit.grad_norm:.2e}, "
                 f"converged: {fit.converged}, starts: {fit.n_starts}, {fit.seconds:.1f}s")
    lines += [f"warning: {w}" for w in result["diagnostics"].get("warnings", [])]
    return lines


def check_output_path(path: str, flag: str) -> None:
    """Refuse, before any fitting, an output path that cannot be written: its nearest existing folder
    must be a writable folder, and the path itself must not be a folder."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{flag} {path} is a directory; give a file name")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder, so {target.name} cannot be written there")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: folder {parent} is not writable")


def check_fit_args(n_boot: int, out: str | None, plot: str | None) -> None:
    """Flag values the fit cannot use, refused up front with one line."""
    if n_boot < 0 or n_boot == 1:
        raise UserError(f"--bootstrap {n_boot}: give 0 (no intervals) or at least 2 resamples (default 1000)")
    for flag, path in (("--out", out), ("--plot", plot)):
        if path:
            check_output_path(path, flag)


def run_fit(paths: list[str], csv: str | None, form: str, n_boot: int, out: str | None, plot: str | None,
            holdout: bool, as_json: bool, delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """The whole `fit` command; returns the report (printed as text or JSON by the caller)."""
    if bool(paths) == bool(csv):
        raise UserError("give either run folders or --csv FILE (columns N, D, loss), not both and not neither")
    check_fit_args(n_boot, out, plot)
    records: list[RunRecord] = []
    if csv:
        points = read_fit_csv(csv)
        budgets, names = 6.0 * points.N * points.D, [f"row {i + 2}" for i in range(len(points))]
    else:
        records, left_out = collect_runs(paths)
        for line in left_out:  # said before fitting, so it shows even when the fit then fails
            print(f"warning: left out {line}", file=sys.stderr)
        points = to_points(records)
        budgets, names = np.array([r.budget for r in records]), [r.name for r in records]
    iso = isoflop_allocation(records) if records else None
    result = fit_points(points, form, n_boot, delta, iso["a"] if iso and "error" not in iso else None)
    report: dict[str, Any] = dict(law=law_to_dict(result["law"], result["intervals"], None, result["diagnostics"]),
                                  points=len(points.N), text=_format_law(result))
    if records:
        report["left_out"] = left_out
        report["isoflop"] = iso
        report["curve_extrapolation"] = curve_extrapolation(records)
    if holdout:
        report["holdout_largest"] = holdout_largest(points, budgets, names, delta)
    if out:
        save_law(out, result["law"], result["intervals"], result["samples"], result["diagnostics"])
        report["law_file"] = out
    if plot or out:
        from smallest_loss.experiments.plots import plot_isoflop
        from smallest_loss.experiments.plots_fit import plot_fit

        plot_path = Path(plot or Path(out).with_suffix(".png"))
        report["plot"] = str(plot_fit(points, result["law"], plot_path))
        iso = report.get("isoflop")
        if iso and "error" not in iso:
            iso_path = plot_path.with_name(plot_path.stem + "_isoflop.png")
            report["isoflop_plot"] = str(plot_isoflop(records, iso_path, iso["profiles"]))
    return report


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:  # the JSON on stdout; the law used and any warnings on stderr
        print(json.dumps(report["law"], indent=2))
        print("\n".join(line for line in report["text"] if line.startswith(("law used", "warning"))), file=sys.stderr)
        return
    print(f"fitted {report['law']['form']} law to {report['points']} points")
    print("\n".join(report["text"]))
    iso = report.get("isoflop")
    if iso and "error" not in iso:
        print(f"Approach 2 (IsoFLOP parabolas): N_opt ~ C^{iso['a']:.3f}, D_opt ~ C^{iso['b']:.3f}")
        for p in iso["profiles"]:
            print(f"  C={p['C']:.3g}: N_opt={p['N_opt']:.3g}, D_opt={p['D_opt']:.3g}, loss_min={p['loss_min']:.4f}"
                  + ("  (outside the sampled sizes)" if p["extrapolated"] else ""))
    elif iso:
        print(f"Approach 2 not possible: {iso['error']}")
    if "curve_extrapolation" in report:
        ce = report["curve_extrapolation"]
        print(f"learning-curve extrapolation from the first {ce['fraction']:.0%} of each run: mean |error| "
              f"{ce['mean_abs_rel_error']:.2%}, max {ce['max_abs_rel_error']:.2%} over {len(ce['runs'])} runs")
    if "holdout_largest" in report:
        h = report["holdout_largest"]
        print(f"fit without budget {h['budget']:.3g}, predicting its {len(h['runs'])} runs: mean |error| "
              f"{h['mean_abs_rel_error']:.2%}, max {h['max_abs_rel_error']:.2%}")
    for key in ("law_file", "plot", "isoflop_plot"):
        if key in report:
            print(f"{key.replace('_', ' ')}: {report[key]}")
