"""`smallest-loss fit --curves RUNS...`: schedule-aware curve laws (the multi-power law of Luo et al. 2025, or
Tissue et al. 2024, `--curve-form`) from run folders' whole
curves, their error predicting each run's final loss from its first 25% and 50%, and the Chinchilla law fitted
to the final losses they predict for cosine runs of many lengths (laws from curves). The science is scaling/'s
(curve_law.py, from_curves.py, holdout.py); this module reads the runs, writes the files and prints the report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.experiments.args import check_fit_args
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.chinchilla import ChinchillaLaw
from smallest_loss.scaling.collect import run_folders
from smallest_loss.scaling.curve_law import (
    curve_law_from_dict,
    fit_curve_laws,
    on_evals,
    prefix_errors,
    prefix_summary,
    read_curve,
    shape_peaks,
)
from smallest_loss.scaling.curve_table import read_table_runs
from smallest_loss.scaling.from_curves import laws_from_curves, laws_from_curves_samples
from smallest_loss.scaling.holdout import holdout_errors
from smallest_loss.scaling.laws import save_law

PREFIXES = (0.25, 0.5)


def run_curve_fit(
    paths: list[str],
    n_boot: int,
    out: str | None,
    plot: str | None,
    form: str = "multipower",
    holdout: list[str] | None = None,
    curve_loss: str = "train",
) -> dict[str, Any]:
    """The whole `fit --curves` command: every input is read and checked before anything is written. `holdout`:
    run folders not fitted, whose final eval losses the curve laws (their own shape's) and the law from curves
    predict. `curve_loss` "eval": the laws are fitted to the runs' periodic evaluation losses, not to every step's
    train loss."""
    check_fit_args(n_boot, out, plot)
    folders = [f for path in paths for f in run_folders(Path(path))]
    curves = [read_curve(f) for f in folders]
    if curve_loss == "eval":
        curves = on_evals(curves)
    held = _held_curves(holdout or [], folders)
    return _fit_and_write(curves, RunDir.open(folders[0]).config.train, n_boot, out, plot, form, held)


def run_table_curve_fit(
    table: str,
    n_boot: int,
    out: str | None,
    plot: str | None,
    form: str = "multipower",
    columns: str | None = None,
    curve_loss: str | None = None,
    fill: str | None = None,
) -> dict[str, Any]:
    """`fit --curves --csv TABLE`: the curve laws fitted to a curve table's logged points (scaling/curve_table.py),
    with the same report and files as from run folders. The law from curves needs the table's N and tokens."""
    check_fit_args(n_boot, out, plot)
    runs = read_table_runs(table, columns, curve_loss, fill)
    curves = [r.curve for r in runs]
    report = _fit_and_write(curves, TrainConfig(), n_boot, out, plot, form, [], runs[0].kind, table)
    return report


def _fit_and_write(curves: list, train: TrainConfig, n_boot: int, out: str | None, plot: str | None, form: str,
                   held: list, curve_loss: str | None = None, table: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The laws, their prefix errors and the law from curves (with `held` runs' errors), written to `out` and a
    plot; `curve_loss`: the loss a table's points are (train or eval)."""
    result = fit_curve_laws(curves, min(n_boot, 200), form=form)
    laws = [curve_law_from_dict(s) for s in result["shapes"]]
    report = dict(result, prefix={str(f): prefix_summary(prefix_errors(curves, f, form=form)) for f in PREFIXES})
    if table is not None:
        report.update(curve_table=table, curve_loss=curve_loss)
    report["min_lr_ratio"] = train.min_lr_ratio  # the runs' schedules end here: `predict` builds the same
    unknown = [c.name for c in curves if not c.N or not c.tokens_per_step]
    report["chinchilla_from_curves"] = (
        dict(error=f"run {unknown[0]} has no N or tokens (columns N and tokens of the curve table)")
        if unknown and len({c.N for c in curves}) > 1
        else laws_from_curves(curves, laws, train)
    )
    if held:
        peaks = shape_peaks(curves)
        report["holdout"] = holdout_errors(
            held, laws, report["chinchilla_from_curves"], peaks if isinstance(peaks, dict) else {}
        )
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(out).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out)
        report["law_file"] = out
        if "law" in report["chinchilla_from_curves"]:  # a law file `plan --law` reads: laws from curves
            report["planner_law_file"] = str(
                _save_planner_law(Path(out).with_suffix(".law.json"), report, curves, train)
            )
    if plot or out:
        from smallest_loss.experiments.plots_fit import plot_curves

        report["plot"] = str(plot_curves(curves, laws, Path(plot or Path(out).with_suffix(".png")), held))
    return report


def _held_curves(paths: list[str], fitted: list[Path]) -> list:
    """The held-out runs' curves, refused in one line when one is also fitted or has no final eval loss."""
    folders = [f for path in paths for f in run_folders(Path(path))]
    both = {f.resolve() for f in folders} & {f.resolve() for f in fitted}
    if both:
        raise UserError(
            f"--holdout-runs: {sorted(both)[0]} is also among the fitted runs; hold out runs the law does not see"
        )
    held = [read_curve(f) for f in folders]
    for f, c in zip(folders, held, strict=True):
        if not c.final_eval:
            raise UserError(f"--holdout-runs: {f} has no final eval loss to predict")
    return held


def _save_planner_law(path: Path, report: dict[str, Any], curves: list, train: Any) -> Path:
    """The law from curves as a law file, with bootstrap samples and 95% intervals where the curve laws were
    resampled (the shapes' draws, paired across shapes)."""
    fc = report["chinchilla_from_curves"]
    samples = laws_from_curves_samples(curves, report["shapes"], train)
    intervals = None if samples is None else {k: tuple(np.percentile(v, [2.5, 97.5])) for k, v in samples.items()}
    note = (
        "samples: Chinchilla refitted to each bootstrap draw of the curve laws"
        if samples is not None
        else "no intervals: fit with --bootstrap K (K >= 2) to resample the runs"
    )
    return save_law(
        path,
        ChinchillaLaw(**fc["law"]),
        intervals,
        samples,
        diagnostics=dict(
            source="fit --curves", curve_form=report["form"], points=fc["points"], runs=len(curves), note=note
        ),
    )


def print_curve_report(report: dict[str, Any]) -> None:
    lam = f", lambda {report['lam']}" if "lam" in report else ""
    on_evals_ = report.get("curve_loss") == "eval" or "curve_table" in report
    if "curve_table" in report:
        fitted = f"the {report['curve_loss']} losses logged in {report['curve_table']}:"
    else:
        fitted = "the runs' periodic evaluation losses:" if on_evals_ else "every step's train loss:"
    print(f"curve law {report['formula']}{lam}, one law per shape, fitted to {fitted}")
    for s in report["shapes"]:
        iv = s["intervals"] or {}
        cells = [
            f"{k} {s[k]:.4g}" + (f" [{iv[k][0]:.3g}, {iv[k][1]:.3g}]" if k in iv else "")
            for k in curve_law_from_dict(s).params
        ]
        gap = "" if on_evals_ else f"; eval_gap {s['eval_gap']:+.4f}"
        print(f"  N={s['N']}: {', '.join(cells)}{gap}; {len(s['runs'])} runs, rms log error {s['rms_log_error']:.4f}")
        if s.get("at_bounds"):
            print(
                f"    at a bound of the fit, not pinned by these runs: {', '.join(s['at_bounds'])} (predictions far "
                "from the fitted runs' schedules and lengths are less sure)"
            )
    for f, p in report["prefix"].items():
        if "error" in p:
            print(f"from the first {float(f):.0%}: {p['error']}")
            continue
        if "mean_abs_rel_error" in p:
            print(
                f"final train loss from the first {float(f):.0%} of each run (law fitted with the other runs of "
                f"its shape): mean |error| {p['mean_abs_rel_error']:.2%}, max {p['max_abs_rel_error']:.2%} "
                f"over {len(p['runs'])} runs"
            )
        if "eval_runs" in p:
            lo, hi = p["eval_mean_interval"]
            loss = report["curve_loss"] if "curve_table" in report else "eval"  # a table's points: its kind
            print(
                f"final {loss} loss from the first {float(f):.0%}: mean |error| "
                f"{p['eval_mean_abs_rel_error']:.2%} (95% interval over resampled runs [{lo:.2%}, {hi:.2%}]), "
                f"max {p['eval_max_abs_rel_error']:.2%} over {p['eval_runs']} runs"
            )
    ch = report["chinchilla_from_curves"]
    _print_holdout(report.get("holdout"))
    print(
        "Chinchilla law from curves: "
        + (ch["error"] if "error" in ch else ", ".join(f"{k} {v:.4g}" for k, v in ch["law"].items()))
    )
    for key in ("law_file", "planner_law_file", "plot"):
        if key in report:
            print(f"{key.replace('_', ' ')}: {report[key]}")


def _print_holdout(h: dict[str, Any] | None) -> None:
    if not h:
        return
    print(
        f"held-out runs ({len(h['runs'])}), final eval loss predicted by their shape's curve law / the law from curves:"
    )
    for r in h["runs"]:
        cells = [
            f"{r[k]:.4f} ({r[k + '_rel_error']:+.2%})" if k in r else "-" for k in ("curve_law", "law_from_curves")
        ]
        print(f"  {r['name']}: N={r['N']}, D={r['D']:.3g}, actual {r['actual']:.4f}; {cells[0]} / {cells[1]}")
    for key, label in (("curve_law", "their shape's curve law"), ("law_from_curves", "the law from curves")):
        if key in h:
            print(
                f"  {label}: mean |error| {h[key]['mean_abs_rel_error']:.2%}, max {h[key]['max_abs_rel_error']:.2%} "
                f"over {h[key]['runs']} runs"
            )
