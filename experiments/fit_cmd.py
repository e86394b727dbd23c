"""`smallest-loss fit`: fit a loss law to run folders or a CSV, with bootstrap intervals, and report it.

From run folders it also reports what the runs can say on their own: Chinchilla's Approach 2 (IsoFLOP
parabolas) when the runs come from an IsoFLOP sweep, and learning-curve extrapolation error. From run
folders and CSVs alike, `--holdout-largest` fits every budget but the largest and reports how well the
law predicts the largest one. A CSV with a `group` column is fitted as groups with shared exponents and
per-group constants (scaling/groups.py). `--form shape` fits the shape-aware law (scaling/aspect.py) to runs or to
a CSV with columns d and n, and `--holdout-shape` checks it on each shape left out in turn. The science is
scaling/'s (the fits, their bootstrap and the hold-out checks, scaling/holdout.py); this module reads the inputs,
writes the law file and formats the report.

A fit of a table is the command users type most, so its path loads neither JAX nor the trainer: what only run
folders, curves, groups or plots need is imported where it is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import check_fit_args
from smallest_loss.scaling.bootstrap import interval
from smallest_loss.scaling.chinchilla import LAW_KEYS, ChinchillaLaw, identification_margin
from smallest_loss.scaling.fitting import (
    fit_law,
    read_runs,
    read_table,
    source_aspect_range,
    with_aspect_range,
    without_samples,
)
from smallest_loss.scaling.groups import group_names, reference_index
from smallest_loss.scaling.holdout import holdout_split, leave_one_shape_out
from smallest_loss.scaling.holdout_scale import HoldoutReport, holdout_by_scale
from smallest_loss.scaling.intervals import largest_budget_interval
from smallest_loss.scaling.isoflop import isoflop_allocation
from smallest_loss.scaling.laws import LawFile, law_to_dict, save_law
from smallest_loss.scaling.moe_law import E_MAX, MOE_FORMS, read_moe_table
from smallest_loss.scaling.optimize import DEFAULT_DELTA
from smallest_loss.scaling.points import FitPoints, budget_mismatch, sweep_check, table_aspect_range
from smallest_loss.scaling.report import markdown_table
from smallest_loss.scaling.shape_terms import AUTO, DEFAULT_TERM, TERMS
from smallest_loss.scaling.tables import header

if TYPE_CHECKING:
    from smallest_loss.scaling.collect import RunRecord


def _constants_table(values: dict[str, float], intervals: dict[str, tuple[float, float]]) -> list[str]:
    def span(key: str) -> str:
        lo_hi = intervals.get(key)
        return f"[{lo_hi[0]:.4g}, {lo_hi[1]:.4g}]" if lo_hi else "-"

    rows = [(key, f"{value:.4g}", span(key)) for key, value in values.items()]
    return markdown_table(rows, ("constant", "value", "95% interval")).split("\n")


def _format_law(law_file: LawFile) -> list[str]:
    law, d = law_file.law, law_file.diagnostics
    names = LAW_KEYS if isinstance(law, ChinchillaLaw) else ("Nc", "Dc", "aN", "aD")
    lines = _constants_table({key: getattr(law, key) for key in names}, law_file.intervals or {})
    lines += _new_run_lines(law_file)
    margin = identification_margin(d.get("standard_errors") or {}, d.get("form", "full"))
    state = "identified" if d["identified"] else "NOT identified"
    lines += ["", f"law used: {d['form_description']} ({state}{'; ' + margin if margin else ''})"]
    lines.append(
        f"objective {d['objective']:.6g} (Huber delta {d['delta']:g}), max |gradient| {d['grad_norm']:.2e}, "
        f"converged: {d['converged']}, starts: {d['n_starts']}, {d['seconds']:.1f}s"
    )
    lines += [f"warning: {w}" for w in d.get("warnings", [])]
    return lines


def _new_run_lines(law_file: LawFile) -> list[str]:
    """The calibrated 95% interval of a new run at the largest fitted budget's compute-optimal point."""
    span = largest_budget_interval(law_file)
    if span is None:
        return []
    N, D, C = float(span.N[0]), float(span.D[0]), 6 * float(span.N[0] * span.D[0])
    return [
        f"a new run at the largest fitted budget's optimum (C = {C:.3g}, N = {N:.3g}, D = {D:.3g}): loss "
        f"{span.predicted[0]:.4f}, 95% prediction interval [{span.low[0]:.4f}, {span.high[0]:.4f}] "
        f"(+-{span.half_width[0]:.1%}; the runs' scatter {span.calibration.scatter:.2%}; calibrated, docs/methods.md)"
    ]


def _curve_extrapolation(records: list[RunRecord]) -> dict[str, Any]:
    from smallest_loss.scaling.learning_curve import curve_extrapolation

    return curve_extrapolation(records)


def run_fit(paths: list[str], csv: str | None, form: str, n_boot: int, out: str | None, plot: str | None,
            holdout: bool, as_json: bool, delta: float = DEFAULT_DELTA, reference: str | None = None,
            holdout_shape: bool = False, best_of: str | None = None, columns: str | None = None,
            by_scale: bool = True, moe_form: str = "joint", e_max: float = E_MAX,
            shape_term: str | None = None, precision_form: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The whole `fit` command; returns the report (printed as text or JSON by the caller). `best_of` (lr,batch):
    each (N, D) of the CSV fitted through its best row only; `columns`: the table's own names for its columns;
    `by_scale`: the hold-outs by scale (`holdout_by_scale`); `holdout` (--holdout-largest): the budget's required;
    `moe_form`, `e_max`: with form "moe", the MoE law fitted (scaling/moe_fit.py); `shape_term`: the shape-aware
    law's term (scaling/shape_terms.py; None: the default); `precision_form`: with form "precision", separate,
    tied, additive or auto (scaling/precision_fit.py; None: auto)."""
    if bool(paths) == bool(csv):
        raise UserError("give either run folders or --csv FILE (columns N, D, loss), not both and not neither")
    if form == "moe":
        _refuse_with_moe(paths, plot, reference, holdout_shape)
        return run_moe_fit(csv, n_boot, out, delta, best_of, columns, moe_form, e_max, by_scale or holdout)
    if form == "precision" or precision_form is not None:
        refused = (plot, holdout, reference, holdout_shape)  # flags that do not apply to it
        return run_precision_fit(paths, csv, n_boot, out, delta, best_of, columns, precision_form, by_scale, refused,
                                 form)  # fmt: skip
    if best_of is not None and (not csv or form == "shape"):
        raise UserError("--best-of keeps the best rows of a fit CSV: fit --csv FILE --best-of lr,batch")
    check_fit_args(n_boot, out, plot)
    if holdout_shape and form != "shape":
        raise UserError("--holdout-shape checks the shape-aware law: add --form shape")
    if shape_term is not None and form != "shape":
        raise UserError("--shape-term names the shape-aware law's term: add --form shape")
    if form == "shape":
        _refuse_with_shape(plot, holdout, reference, columns)
        return run_shape_fit(paths, csv, n_boot, out, delta, holdout_shape, shape_term or AUTO)
    records: list[RunRecord] = []
    if csv:
        points = _read_csv_points(csv, best_of, columns, holdout)
        if len(group_names(points)) > 1:
            return run_grouped_fit(points, reference, form, n_boot, out, plot, holdout, delta, by_scale)
        reference_index(group_names(points), reference)  # one group is an ordinary fit; a wrong name is refused
        budgets, names = points.budgets, [f"row {i + 2}" for i in range(len(points))]
    else:
        records, left_out, points, budgets, names = _read_folders(paths, reference)
    if holdout:
        holdout_split(budgets)  # refused before the fit, not after it
    iso = isoflop_allocation(records) if records else None
    law_file = fit_law(points, form, n_boot, delta, iso["a"] if iso and "error" not in iso else None)
    law_file = with_aspect_range(law_file, source_aspect_range(records, csv, columns))  # plans keep to the runs' d/n
    report: dict[str, Any] = dict(
        law=without_samples(law_file).to_dict(), points=len(points), text=_format_law(law_file)
    )
    if records:
        report["left_out"] = left_out
        report["isoflop"] = iso
        report["curve_extrapolation"] = _curve_extrapolation(records)
    if holdout or by_scale:  # the report's and the law file's
        law_file = _with_holdout(law_file, report, holdout_by_scale(points, budgets, names, delta))
    if out:
        law_file.save(out)
        report["law_file"] = out
    if plot or out:
        _plots(report, points, law_file.law, records, Path(plot or Path(out).with_suffix(".png")))
    return report


def _read_csv_points(csv: str, best_of: str | None, columns: str | None, holdout: bool) -> FitPoints:
    """A fit CSV's points, with a line on stderr for a rate sweep fitted whole or budgets far from 6ND."""
    points = read_table(csv, best_of=best_of, columns=columns)
    sweep = None if best_of else sweep_check(csv, columns)
    if sweep:
        print(sweep, file=sys.stderr)
    mismatch = budget_mismatch(points)
    if mismatch and holdout:
        raise UserError(f"--holdout-largest groups rows by budget, but {mismatch}: check that C is in FLOPs")
    if mismatch:
        print(f"warning: {mismatch}; budgets group rows by C: check that C is in FLOPs", file=sys.stderr)
    return points


def _refuse_with_shape(plot: str | None, holdout: bool, reference: str | None, columns: str | None) -> None:
    for flag, used in (("--plot", plot), ("--holdout-largest", holdout), ("--reference", reference),
                       ("--columns", columns)):  # fmt: skip
        if used:
            raise UserError(f"{flag}: not with the shape-aware law (--form shape, checked by --holdout-shape)")


def _refuse_with_moe(paths: list[str], plot: str | None, reference: str | None, holdout_shape: bool) -> None:
    for flag, used in (("--plot", plot), ("--reference", reference), ("--holdout-shape", holdout_shape),
                       ("run folders", paths)):  # fmt: skip
        if used:
            raise UserError(f"{flag}: not with the MoE law (fit --csv TABLE --form moe)")


def run_moe_fit(csv: str, n_boot: int, out: str | None, delta: float, best_of: str | None, columns: str | None,
                moe_form: str, e_max: float, holdouts: bool) -> dict[str, Any]:  # fmt: skip
    """`fit --csv TABLE --form moe`: the joint MoE law (or the granularity law); its law file's `moe` section."""
    from smallest_loss.scaling.moe_fit import fit_moe_law

    check_fit_args(n_boot, out, None)
    points = read_moe_table(csv, columns, best_of)
    law_file = with_aspect_range(fit_moe_law(points, moe_form, n_boot, delta, e_max, holdouts),
                                 table_aspect_range(csv, columns))  # fmt: skip
    report: dict[str, Any] = dict(law=without_samples(law_file).to_dict(), points=len(points),
                                  text=_format_moe(law_file))  # fmt: skip
    if holdouts:
        report["holdout_moe"] = law_file.diagnostics["holdout"]
    if out:
        law_file.save(out)
        report["law_file"] = out
    return report


def _format_moe(law_file: LawFile) -> list[str]:
    moe, d = law_file.moe, law_file.diagnostics
    lines = _constants_table(moe.constants, moe.intervals or {})
    lines += ["", f"law used: {d['form_description']} ({'identified' if d['identified'] else 'NOT identified'}); "
              f"Ehat with E_start = {moe.e_start:g}, E_max = {moe.e_max:g}",
              f"objective {d['objective']:.6g} (Huber delta {d['delta']:g}), converged: {d['converged']}, starts: "
              f"{d['n_starts']}, {d['seconds']:.1f}s" + (f"; bootstrap: {d['bootstrap']['n_boot']} resamples of the "
              f"configurations, {d['bootstrap']['seconds']:.1f}s" if d["bootstrap"] else "")]  # fmt: skip
    return lines + [f"warning: {w}" for w in d["warnings"]]


def moe_holdout_lines(h: dict[str, Any]) -> list[str]:
    """The MoE hold-outs as text: each expert count left out, the largest budget held out."""
    lines = ["MoE hold-outs (the law fitted on the rest):"]
    experts, budget = h["experts"], h["budget"]
    if "skipped" in experts:
        lines.append(f"  expert counts not left out: {experts['skipped']}")
    else:
        each = ", ".join(f"E={c['experts']:g} {c['mean_abs_rel_error']:.2%}" for c in experts["counts"])
        lines.append(f"  each expert count left out: mean |error| {experts['mean_abs_rel_error']:.2%} ({each})")
        lines += [f"  E={s['experts']:g} not left out: {s['reason']}" for s in experts.get("not_held_out", [])]
    if "skipped" in budget:
        lines.append(f"  largest budget not held out: {budget['skipped']}")
    else:
        lines.append(
            f"  fit without budget C = 6 N_act D = {budget['C']:.3g}, predicting its {budget['held_points']} runs: "
            f"mean |error| {budget['mean_abs_rel_error']:.2%}, max {budget['max_abs_rel_error']:.2%}, mean signed "
            f"{budget['mean_rel_error']:+.2%} ({budget['fitted_points']} runs fitted, form {budget['form']})"
        )
    return lines


def moe_hint(csv: str | None, form: str | None) -> str | None:
    """The line said when a table with an `experts` column is fitted without --form: `--form moe` fits it."""
    if form is not None or not csv:
        return None
    if "experts" in (header(csv) or []):
        return (f"note: {csv} has an experts column: fit --csv {csv} --form moe fits the joint MoE law; fitting the "
                "Chinchilla law to its N, D, loss")  # fmt: skip
    return None


def _read_folders(paths: list[str], reference: str | None) -> tuple[list[RunRecord], list[str], FitPoints, Any, Any]:
    """Run or sweep folders: their records, the runs left out (said at once), the points, budgets and run names."""
    if reference is not None:
        raise UserError("--reference names a group of a CSV's 'group' column; run folders have no groups")
    from smallest_loss.scaling.collect import collect_runs, to_points

    records, left_out = collect_runs(paths)
    for line in left_out:  # said before fitting, so it shows even when the fit then fails
        print(f"warning: left out {line}", file=sys.stderr)
    return records, left_out, to_points(records), np.array([r.budget for r in records]), [r.name for r in records]


def _with_holdout(law_file: LawFile, report: dict[str, Any], held: HoldoutReport) -> LawFile:
    """The hold-outs in the report (its text and "holdout") and in the law file's diagnostics["holdout"]."""
    report["holdout"] = held.to_dict()
    law_file = dataclasses.replace(law_file, diagnostics={**(law_file.diagnostics or {}), "holdout": held.to_dict()})
    report["law"] = without_samples(law_file).to_dict()
    return law_file


def run_shape_fit(paths: list[str], csv: str | None, n_boot: int, out: str | None, delta: float,
                  holdout_shape: bool, term: str = DEFAULT_TERM) -> dict[str, Any]:  # fmt: skip
    """`fit --form shape`: the shape-aware law (scaling/aspect.py) from run folders (their configs give d and n) or a
    CSV with columns d and n; its law file carries the aspect-ratio factor in its `shape` section."""
    points = read_table(csv, shapes=True) if csv else read_runs(paths, shapes=True)
    if csv and len(group_names(points.points)) > 1:
        raise UserError(f"fit CSV {csv}: --form shape fits one law; drop the 'group' column or fit groups apart")
    law_file = fit_law(points, "shape", n_boot, delta, shape_term=term)
    summary = without_samples(law_file).to_dict()
    report = dict(law=summary, points=len(points.points), text=_format_shape(law_file))
    if holdout_shape:
        report["holdout_shape"] = leave_one_shape_out(points, delta, law_file.shape.term)  # auto: the chosen term
    if out:
        law_file.save(out)
        report["law_file"] = out
    return report


def run_precision_fit(paths: list[str], csv: str | None, n_boot: int, out: str | None, delta: float,
                      best_of: str | None, columns: str | None, precision_form: str | None, holdout: bool,
                      refused: tuple[Any, ...] = (), form: str = "precision") -> dict[str, Any]:  # fmt: skip
    """`fit --csv T --form precision`: the precision law (scaling/precision_fit.py) and, unless --no-holdout, each
    training precision left out in turn and predicted by the law fitted on the rest."""
    if form != "precision":
        raise UserError("--precision-form goes with the precision law: add --form precision")
    for flag, used in zip(("--plot", "--holdout-largest", "--reference", "--holdout-shape"), refused, strict=False):
        if used:
            raise UserError(f"{flag}: not with the precision law (--form precision is checked by precision hold-outs)")
    if paths or not csv:
        raise UserError("--form precision reads a table: fit --csv TABLE --form precision (columns N, D, loss, bits_w, "
                        "bits_a, bits_kv)")  # fmt: skip
    from smallest_loss.scaling.precision_fit import fit_precision_law, leave_one_precision_out
    from smallest_loss.scaling.precision_table import read_precision_table

    check_fit_args(n_boot, out, None)  # refused before the table is read and the fit run
    data = read_precision_table(csv, best_of, columns)
    law_file = with_aspect_range(fit_precision_law(data, precision_form or "auto", n_boot, delta),
                                 table_aspect_range(csv, columns))  # fmt: skip
    report: dict[str, Any] = dict(points=len(data.points), text=_format_precision(law_file))
    if holdout:  # `auto` computed it to choose the form; otherwise the chosen form's
        held = law_file.diagnostics.get("holdout") or leave_one_precision_out(
            data, precision_form or law_file.precision.form, delta
        )
        report["holdout_precision"] = held
        law_file = dataclasses.replace(law_file, diagnostics={**(law_file.diagnostics or {}), "holdout": held})
    report["law"] = without_samples(law_file).to_dict()
    if out:
        law_file.save(out)
        report["law_file"] = out
    return report


def _format_precision(law_file: LawFile) -> list[str]:
    p, d = law_file.precision, law_file.diagnostics
    values = {key: getattr(law_file.law, key) for key in LAW_KEYS}
    values |= {f"gamma_{k}": p.gamma(k) for k in ("w", "a", "kv") if p.gamma(k) is not None}
    intervals = (law_file.intervals or {}) | (p.intervals or {})
    if p.penalty is not None:
        values |= {f"penalty_{k}": getattr(p.penalty, k) for k in ("C", "gamma_D", "gamma_N")}
    if p.ptq is not None:
        values |= {f"ptq_{k}": getattr(p.ptq, k) for k in ("C_T", "gamma_D", "gamma_N", "gamma_post")}
        intervals |= {f"ptq_{k}": v for k, v in (p.ptq.intervals or {}).items()}
    levels = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in d["precision_levels"].items())
    choice = d.get("form_choice")
    lines = _constants_table(values, intervals) + [
        "",
        f"law used: {d['form_description']} ({'identified' if d['identified'] else 'NOT identified'})",
        *([f"form chosen (auto): {choice['chosen']}, {choice['reason']}"] if choice else []),
        f"bits trained: {levels}",
        f"objective {d['objective']:.6g} (Huber delta {d['delta']:g}), max |gradient| {d['grad_norm']:.2e}, "
        f"converged: {d['converged']}, starts: {d['n_starts']}, {d['seconds']:.1f}s",
    ]
    return lines + [f"warning: {w}" for w in d["warnings"]] + _ptq_holdout_lines(d.get("ptq_holdout"))


def _ptq_holdout_lines(held: dict[str, Any] | None) -> list[str]:
    """Each post-training width left out and predicted by the PTQ penalty fitted on the others."""
    if not held:
        return []
    lines = ["post-training quantisation, each width left out and predicted from the others:"]
    for r in held["widths"]:
        error, rise, off = r["mean_abs_rel_error"], r["rise_mean"], r["rise_mean_abs_error"]
        lines.append(f"  {r['bits_post']:g} bits ({r['points']} runs): loss after {error:.2%} mean error; rise "
                     f"{rise:.4f} mean, predicted within {off:.4f}")  # fmt: skip
    return lines


def _holdout_precision_lines(h: dict[str, Any]) -> list[str]:
    if h["mean_abs_rel_error"] is None:
        lines = ["leave one precision out: none could be held out"]
    else:
        quantised = h["quantised_mean_abs_rel_error"]
        lines = [
            f"leave one precision out (the law fitted on the other rows predicting it): mean |error| "
            f"{h['mean_abs_rel_error']:.2%} over all held-out rows"
            + (f", {quantised:.2%} over the quantised ones (the bit widths)" if quantised is not None else "")
        ]
    lines += [f"  {c['config']}: {c['points']} rows, mean |error| {c['mean_abs_rel_error']:.2%}, max "
              f"{c['max_abs_rel_error']:.2%}, mean signed {c['mean_rel_error']:+.2%} (form {c['form']})"
              for c in h["configs"]]  # fmt: skip
    return lines + [f"  {s['config']} not held out: {s['reason']}" for s in h["skipped"]]


def _format_shape(law_file: LawFile) -> list[str]:
    shape, d = law_file.shape, law_file.diagnostics
    values = {key: getattr(law_file.law, key) for key in LAW_KEYS}
    values |= dict(gamma=shape.gamma, aspect_opt=shape.aspect_opt) | {
        k: v for k, v in (shape.params or {}).items() if k != "n_ref"
    }
    low, high = shape.aspect_range
    lines = _constants_table(values, (law_file.intervals or {}) | (shape.intervals or {})) + [
        "",
        f"law used: {d['form_description']}",
        f"fitted on d/n from {low:.3g} to {high:.3g}; objective {d['objective']:.6g}, max |gradient| "
        f"{d['grad_norm']:.2e}, converged: {d['converged']}, {d['seconds']:.1f}s",
    ]
    choice = d.get("shape_term_choice")
    if choice:
        errors = ", ".join(f"{t} {e:.2%}" for t, e in choice["leave_one_shape_out"].items())
        lines.append(f"shape term: {choice['chosen']}, {choice['reason']}" + (f" ({errors})" if errors else ""))
    return lines + [f"warning: {w}" for w in d["warnings"]]


def _holdout_shape_lines(h: dict[str, Any]) -> list[str]:
    shape_law, nd_law = h["shape_law"], h["nd_law"]
    lines = [
        f"leave one shape out ({h['shapes']} shapes, {len(h['points'])} points predicted): shape-aware law mean "
        f"|error| {shape_law['mean_abs_rel_error']:.2%} (MAE {shape_law['mae']:.4f}), N-D law "
        f"{nd_law['mean_abs_rel_error']:.2%} (MAE {nd_law['mae']:.4f})"
    ]
    return lines + [f"  d/n {s['aspect_ratio']:.3g} not held out: {s['reason']}" for s in h["skipped"]]


def _plots(report: dict[str, Any], points: FitPoints, law: Any, records: list[RunRecord], plot_path: Path) -> None:
    """The fit plot, and the IsoFLOP plot when Approach 2 worked on the runs."""
    from smallest_loss.experiments.plots import plot_isoflop
    from smallest_loss.experiments.plots_fit import plot_fit

    report["plot"] = str(plot_fit(points, law, plot_path))
    iso = report.get("isoflop")
    if iso and "error" not in iso:
        iso_path = plot_path.with_name(plot_path.stem + "_isoflop.png")
        report["isoflop_plot"] = str(plot_isoflop(records, iso_path, iso["profiles"]))


GROUPED_HOLDOUT = "not done for a grouped fit: fit one group's rows alone (no 'group' column) to hold out its scales"


def run_grouped_fit(points: FitPoints, reference: str | None, form: str, n_boot: int, out: str | None,
                    plot: str | None, holdout: bool, delta: float,
                    by_scale: bool = True) -> dict[str, Any]:  # fmt: skip
    """Shared exponents, per-group constants and compute multipliers (scaling/groups.py); the law file
    holds the reference group's law, and every group under diagnostics["groups"]. The order-by-scale hold-outs
    are not done for groups (`by_scale` only says so)."""
    for flag, used, why in (("--form kaplan", form != "chinchilla", "it fits the Chinchilla form"),
                            ("--holdout-largest", holdout, "fit one group's rows alone to hold out its largest budget"),
                            ("--plot", plot, "its law file holds every group's constants")):  # fmt: skip
        if used:
            raise UserError(f"{flag} does not apply to a grouped fit (a 'group' column): {why}")
    from smallest_loss.scaling.groups import (
        bootstrap_groups,
        fit_groups,
        frontier_budgets,
        group_summary,
        reference_samples,
    )

    fit = fit_groups(points, reference, delta)
    boot = bootstrap_groups(points, fit, n_boot) if n_boot else None
    groups = group_summary(fit, boot, frontier_budgets(points))
    samples = reference_samples(fit, boot) if boot else None
    intervals = {k: interval(v, boot.level) for k, v in samples.items()} if boot else None
    diagnostics = dict(
        form="grouped", reference=fit.names[fit.reference], objective=fit.objective, delta=delta,
        grad_norm=fit.grad_norm, converged=fit.converged, seconds=fit.seconds, groups=groups,
        form_description="L_g = E_g + A/N^alpha + B_g/D^beta: A, alpha, beta shared; E_g and B_g per group",
        shared={k: getattr(fit, k) for k in ("A", "alpha", "beta")},
        warnings=list(fit.warnings) + (list(boot.warnings) if boot else []),
        holdout=dict(skipped={"budget": GROUPED_HOLDOUT, "N": GROUPED_HOLDOUT}) if by_scale else None,
        bootstrap=dict(n_boot=boot.n_boot, n_converged=boot.n_converged, level=boot.level,
                       seconds=boot.seconds, resampled="within groups") if boot else None,
    )  # fmt: skip
    law = fit.law(fit.reference)
    report = dict(
        law=law_to_dict(law, intervals, None, diagnostics),
        points=len(points),
        groups=groups,
        text=_format_groups(fit, diagnostics, intervals),
    )
    if by_scale:
        report["holdout"] = dict(budget=None, size=None, skipped=diagnostics["holdout"]["skipped"])
    if out:
        save_law(out, law, intervals, samples, diagnostics)
        report["law_file"] = out
    return report


def _value(value: float | None, span: list | tuple | None = None) -> str:
    """A value and its interval; None (JSON's infinity) is a multiplier the reference cannot reach."""

    def one(v: float | None) -> str:
        return "unreachable" if v is None else f"{v:.4g}"

    return one(value) + (f" [{one(span[0])}, {one(span[1])}]" if span else "")


def _interval(span: list | tuple | None) -> str:
    """An interval's cell: "-" without one (no bootstrap)."""
    return "-" if not span else f"[{_value(span[0])}, {_value(span[1])}]"


def _format_groups(fit: Any, diagnostics: dict[str, Any], intervals: dict | None) -> list[str]:
    """The grouped fit as text: shared constants, a row per group, how it converged."""
    groups, level = diagnostics["groups"], (diagnostics["bootstrap"] or {}).get("level", 0.95)
    lines = [f"law used: grouped Chinchilla law, {diagnostics['form_description']}; the reference group "
             f"{diagnostics['reference']!r} is the law file's main law", ""]  # fmt: skip
    shared = [(k, _value(getattr(fit, k)), _interval((intervals or {}).get(k))) for k in ("A", "alpha", "beta")]
    lines += markdown_table(shared, ("shared", "value", f"{level:.0%} interval")).split("\n")
    budgets = [m["C"] for m in groups[0]["multiplier"]]
    columns = ("group", "points", "E", "offset E - E_ref", "data multiplier k")
    columns += tuple(f"compute multiplier at C={C:.3g}" for C in budgets)
    rows = []
    for g in groups:
        cells = [g["name"] + (" (reference)" if g["reference"] else ""), str(g["points"])]
        cells += [_value(g[k], g[f"{k}_interval"]) for k in ("E", "offset", "k")]
        rows.append(cells + [_value(m["value"], m["interval"]) for m in g["multiplier"]])
    lines += ["", *markdown_table(rows, columns).split("\n")]
    boot = diagnostics["bootstrap"]
    lines += ["", "compute multiplier: the compute the reference group needs to reach the group's compute-optimal "
              "loss at C, divided by C (C = 6ND); data multiplier k: one of the group's tokens is worth k of the "
              "reference's",
              f"objective {fit.objective:.6g} (Huber delta {diagnostics['delta']:g}), max |gradient| "
              f"{fit.grad_norm:.2e}, converged: {fit.converged}, {fit.seconds:.1f}s"
              + (f"; bootstrap: {boot['n_boot']} resamples within groups, {boot['n_converged']} converged, "
                 f"{boot['seconds']:.1f}s" if boot else "; no bootstrap (--bootstrap 0): no intervals")]  # fmt: skip
    return lines + [f"warning: {w}" for w in diagnostics["warnings"]]


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:  # the JSON on stdout; the law used and any warnings on stderr
        print(json.dumps(report["law"], indent=2))
        print("\n".join(line for line in report["text"] if line.startswith(("law used", "warning"))), file=sys.stderr)
        return
    if "groups" in report:
        print(f"fitted {len(report['groups'])} groups ({report['points']} points) with shared exponents")
    else:
        form = "shape-aware" if "shape" in report["law"] else report["law"]["form"]
        form = f"MoE ({report['law']['moe']['form']})" if "moe" in report["law"] else form
        form = "precision" if "precision" in report["law"] else form
        print(f"fitted {form} law to {report['points']} points")
    print("\n".join(report["text"]))
    iso = report.get("isoflop")
    if iso and "error" not in iso:
        print(f"Approach 2 (IsoFLOP parabolas): N_opt ~ C^{iso['a']:.3f}, D_opt ~ C^{iso['b']:.3f}")
        for p in iso["profiles"]:
            print(
                f"  C={p['C']:.3g}: N_opt={p['N_opt']:.3g}, D_opt={p['D_opt']:.3g}, loss_min={p['loss_min']:.4f}"
                + ("  (outside the sampled sizes)" if p["extrapolated"] else "")
            )
    elif iso:
        print(f"Approach 2 not possible: {iso['error']}")
    if "curve_extrapolation" in report:
        ce = report["curve_extrapolation"]
        print(
            f"learning-curve extrapolation from the first {ce['fraction']:.0%} of each run: mean |error| "
            f"{ce['mean_abs_rel_error']:.2%}, max {ce['max_abs_rel_error']:.2%} over {len(ce['runs'])} runs"
        )
    if "holdout" in report:
        print("\n".join(holdout_lines(report["holdout"])))
    if "holdout_moe" in report:
        print("\n".join(moe_holdout_lines(report["holdout_moe"])))
    if "holdout_shape" in report:
        print("\n".join(_holdout_shape_lines(report["holdout_shape"])))
    if "holdout_precision" in report:
        print("\n".join(_holdout_precision_lines(report["holdout_precision"])))
    for key in ("law_file", "plot", "isoflop_plot"):
        if key in report:
            print(f"{key.replace('_', ' ')}: {report[key]}")


def holdout_lines(h: dict[str, Any]) -> list[str]:
    """The order-by-scale hold-outs as text: each one's errors, the held-out budget's optimum, or why none."""
    lines = ["order-by-scale hold-outs (the Chinchilla law fitted on the rest, predicting up):"]
    for key, what in (("budget", "budget"), ("size", "N")):
        one = h[key]
        if one is None:
            lines.append(f"  largest {what} not held out: {h['skipped'][what]}")
            continue
        held = f"{one['held_points']} point{'s' if one['held_points'] != 1 else ''}"
        lines.append(
            f"  fit without {'budget' if what == 'budget' else 'the largest model size N ='} {one['value']:.3g}, "
            f"predicting its {held}: mean |error| {one['mean_abs_rel_error']:.2%}, max "
            f"{one['max_abs_rel_error']:.2%}, mean signed {one['mean_rel_error']:+.2%} ({one['fitted_points']} "
            "points fitted" + (")" if one["identified"] else f"; form {one['form']}, the full law not identified)")
        )
        if one.get("inside_interval") is not None:
            inside, width = round(one["inside_interval"] * one["held_points"]), one["median_half_width"]
            lines.append(
                f"    {inside} of {held} inside their calibrated 95% prediction intervals for a new run (median "
                f"half-width {width:.2%}, {width / max(one['mean_abs_rel_error'], 1e-12):.1f}x the mean |error|)"
            )
        if one["optimum"] is not None:
            lines += _optimum_lines(one["optimum"])
    return lines


def _optimum_lines(opt: dict[str, Any]) -> list[str]:
    if "error" in opt:
        return [f"    its optimum not compared: {opt['error']}"]
    lines = [f"    its IsoFLOP optimum (parabola in log N over its points) against the law's compute-optimal point "
             f"at C = 6ND = {opt['C']:.3g}" + (" (the parabola's minimum lies outside its sizes)"
                                               if opt["extrapolated"] else "") + ":"]  # fmt: skip
    for key, fmt in (("N", ".3g"), ("D", ".3g"), ("loss", ".4f")):
        lines.append(
            f"      {key}_opt: law {opt['predicted'][key]:{fmt}}, points {opt['actual'][key]:{fmt}} "
            f"({opt['rel_error'][key]:+.1%})"
        )
    return lines


def add_parser(p: argparse.ArgumentParser) -> None:
    """The `fit` command's arguments: the inputs and the law's form, then the curve-law options."""
    p.add_argument("runs", nargs="*", help="run folders or sweep folders")
    _add_curve_args(p)
    p.add_argument(
        "--csv",
        help="a CSV with columns N, D, loss; optional C (FLOPs; 6ND when absent), run (points of "
        "one run, resampled together) and group (data or evaluation set: a grouped fit with "
        "shared exponents); other columns ignored",
    )
    p.add_argument(
        "--form",
        choices=("chinchilla", "kaplan", "shape", "moe", "precision"),
        default=None,
        help="chinchilla (default); shape: the Chinchilla form times a factor in the aspect ratio d/n (runs of "
        "several d/n at one N; a CSV needs columns d and n); moe: the joint MoE law in active parameters, tokens "
        "and expert count (a CSV with columns N_active, experts, D, loss); precision: N counted as the effective "
        "N_eff of training at bits_w, bits_a, bits_kv bits (Kumar et al. 2025; a CSV)",
    )
    _add_moe_args(p)
    _add_precision_args(p)
    p.add_argument("--bootstrap", type=int, default=1000, metavar="K", help="bootstrap resamples (0: none)")
    p.add_argument("--delta", type=float, default=1e-3, help="Huber delta (Chinchilla: 1e-3)")
    p.add_argument("--out", help="write the law JSON here (and its plot beside it)")
    p.add_argument("--plot", help="write the fit plot (PNG) here")
    p.add_argument(
        "--holdout-largest",
        action="store_true",
        help="the largest budget's hold-out, done by default, made required: refuse a table whose largest "
        "budget cannot be held out (no shared budgets, C not in FLOPs) instead of saying why it was not",
    )
    p.add_argument(
        "--no-holdout",
        action="store_true",
        help="skip the order-by-scale hold-outs (by default the law is also fitted without the largest budget "
        "and without the largest model size, and its errors predicting them are reported)",
    )
    _add_shape_args(p)
    p.add_argument(
        "--reference",
        metavar="GROUP",
        help="the group the compute multipliers are measured against (default: the CSV's first group)",
    )
    p.add_argument("--json", action="store_true", help="print the law JSON on stdout")
    p.add_argument(
        "--columns",
        metavar="MAP",
        help="with --csv: which column of the file holds each column read, NAME=COLUMN,... (for example "
        "step=_step,loss=eval/loss,lr=optim/lr)",
    )
    p.add_argument(
        "--best-of",
        metavar="COLS",
        help="with --csv: keep each (N, D)'s best (lowest-loss) row among rows differing in these columns "
        "(lr,batch): a learning-rate or batch sweep fitted through its tuned runs only",
    )


def _add_shape_args(p: argparse.ArgumentParser) -> None:
    """The shape-aware law's options (with --form shape)."""
    p.add_argument(
        "--holdout-shape",
        action="store_true",
        help="with --form shape: fit without each aspect ratio d/n in turn and report the error predicting "
        "it, the shape-aware law against the law in N and D",
    )
    p.add_argument(
        "--shape-term",
        choices=(AUTO, *TERMS),
        help="with --form shape: the factor in d/n: auto (default: symmetric or drift, whichever predicts left-out "
        "shapes better), symmetric (a bowl in ln d/n), flat (no penalty within a fitted band), asymmetric "
        "(separate curvatures too deep and too wide), drift (the optimal d/n moves as a fitted power of N); see "
        "docs/methods.md",
    )


def run(args: argparse.Namespace) -> int:
    if args.curves is not None:
        from smallest_loss.experiments.curves_cmd import print_curve_report

        print_curve_report(_curve_fit(args))
        return 0
    if args.holdout_runs or args.curve_loss is not None:
        flag = "--holdout-runs" if args.holdout_runs else "--curve-loss"
        raise UserError(f"{flag} goes with --curves (fit --curves RUNS {flag} ...)")
    if args.fill:
        raise UserError("--fill completes a curve table: fit --curves --csv TABLE --fill ...")
    if args.columns and not args.csv:
        raise UserError("--columns names a table's columns: fit --csv TABLE --columns N=params,...")
    if args.holdout_largest and args.no_holdout:
        raise UserError("--holdout-largest asks for the hold-out that --no-holdout skips: give one of them")
    if (args.moe_form != "joint" or args.moe_emax != E_MAX) and args.form != "moe":
        raise UserError("--moe-form and --moe-emax go with --form moe")
    hint = moe_hint(args.csv, args.form)
    if hint:
        print(hint, file=sys.stderr)
    report = run_fit(
        args.runs,
        args.csv,
        args.form or "chinchilla",
        args.bootstrap,
        args.out,
        args.plot,
        args.holdout_largest,
        args.json,
        args.delta,
        args.reference,
        args.holdout_shape,
        args.best_of,
        args.columns,
        not args.no_holdout,
        args.moe_form,
        args.moe_emax,
        args.shape_term,
        args.precision_form,
    )
    print_report(report, args.json)
    return 0


def _curve_fit(args: argparse.Namespace) -> dict[str, Any]:
    """`fit --curves RUNS` (run folders) or `fit --curves --csv TABLE` (a curve table)."""
    from smallest_loss.experiments.curves_cmd import run_curve_fit, run_table_curve_fit

    if args.csv:
        if args.curves or args.runs or args.holdout_runs:
            raise UserError("fit --curves --csv TABLE reads the table's runs: no run folders, no --holdout-runs")
        return run_table_curve_fit(
            args.csv, args.bootstrap, args.out, args.plot, args.curve_form, args.columns, args.curve_loss, args.fill
        )
    if not args.curves or args.runs:
        raise UserError("--curves takes the run folders itself (fit --curves RUNS), or a curve table (--csv TABLE)")
    if args.fill:
        raise UserError("--fill completes a curve table: fit --curves --csv TABLE --fill ...")
    if args.columns and not args.csv:
        raise UserError("--columns names a table's columns: fit --csv TABLE --columns N=params,...")
    return run_curve_fit(
        args.curves, args.bootstrap, args.out, args.plot, args.curve_form, args.holdout_runs, args.curve_loss or "train"
    )


def _add_moe_args(p: argparse.ArgumentParser) -> None:
    """`fit --form moe`'s options."""
    p.add_argument(
        "--moe-form",
        choices=MOE_FORMS,
        default="joint",
        help="with --form moe: joint (Ludziejewski et al. 2025) or granularity (Krajewski et al. 2024; a "
        "granularity column)",
    )
    p.add_argument(
        "--moe-emax",
        type=float,
        default=E_MAX,
        metavar="E",
        help=f"with --form moe: where the effective expert count saturates (default {E_MAX:g})",
    )


def _add_precision_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision-form",
        choices=("auto", "separate", "tied", "additive"),
        default=None,
        help="with --form precision: Kumar et al.'s effective parameters with a gamma per quantised kind (weights, "
        "activations, keys and values) or one gamma for all; `additive`: N_eff = N and quantised training adds a "
        "loss C D^gamma_D / N^gamma_N sum_k exp(-P_k/gamma) that grows with the tokens; `auto` (default): of "
        "separate and additive, the one that predicts a left-out training precision better",
    )


def _add_curve_args(p: argparse.ArgumentParser) -> None:
    """`fit --curves` and its options."""
    p.add_argument(
        "--curves",
        nargs="*",
        metavar="RUNS",
        help="fit a schedule-aware curve law to these run folders' whole curves, or (with --csv TABLE and no "
        "folders) to a curve table's logged points, and the Chinchilla law to the final losses it predicts",
    )
    p.add_argument(
        "--curve-form",
        choices=("multipower", "tissue"),
        default="multipower",
        help="with --curves: the multi-power law (Luo et al. 2025) or Tissue et al. (2024)",
    )
    p.add_argument(
        "--curve-loss",
        choices=("train", "eval"),
        help="with --curves: fit the laws to every step's train loss (default) or to the runs' periodic "
        "evaluation losses (runs trained with --set train.eval_points=32); a curve table's train or eval rows "
        "(default: eval where it has any)",
    )
    p.add_argument(
        "--fill",
        metavar="NAME=VALUE,...",
        help="with --curves --csv: columns the curve table lacks, one value for every row (a TensorBoard export: "
        "run=a,schedule=cosine,peak_lr=3e-4,warmup_steps=2000,total_steps=100000)",
    )
    p.add_argument(
        "--holdout-runs",
        nargs="+",
        metavar="HELD",
        help="with --curves: run folders not fitted, whose final eval losses the curve laws and the law "
        "from curves predict (reported, and drawn in the plot)",
    )
