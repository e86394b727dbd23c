"""`smallest-loss fit --curves RUNS...`: schedule-aware curve laws (the multi-power law of Luo et al. 2025, or
Tissue et al. 2024, `--curve-form`) from run folders' whole
curves, their error predicting each run's final loss from its first 25% and 50%, and the Chinchilla law fitted
to the final losses they predict for cosine runs of many lengths (laws from curves)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.collect import run_folders
from smallest_loss.scaling.curve_law import (
    CurveLaw,
    by_shape,
    chinchilla_points,
    curve_law_from_dict,
    fit_curve_laws,
    on_evals,
    prefix_errors,
    read_curve,
    same_peak,
    shape_peaks,
)
from smallest_loss.scaling.fit import fit_chinchilla
from smallest_loss.scaling.laws import ChinchillaLaw, save_law

PREFIXES = (0.25, 0.5)
MEAN_DRAWS = 10_000  # resamples of the runs for the interval of a mean prefix error
LENGTHS = 8  # cosine lengths per shape the Chinchilla law from curves is fitted to


def _lengths(curves: list, reach: float) -> dict[int, list[int]]:
    """Per shape, LENGTHS geometric run lengths from its shortest fitted run to `reach` times its longest."""
    return {
        N: sorted(
            {int(round(s)) for s in np.geomspace(min(c.steps for c in g), reach * max(c.steps for c in g), LENGTHS)}
        )
        for N, g in by_shape(curves).items()
    }


def laws_from_curves(curves: list, laws: list[CurveLaw], train: Any, reach: float = 1.0) -> dict[str, Any]:
    """The Chinchilla law fitted to the curve laws' predicted final eval losses of cosine runs (one law per
    shape first, then Chinchilla across shapes: no form is assumed for how L0, A, C change with N)."""
    if len(laws) < 2:
        return dict(error="laws from curves need runs of two or more model shapes")
    peaks = shape_peaks(curves)
    if isinstance(peaks, str):
        return dict(error=peaks)
    points = chinchilla_points(laws, _lengths(curves, reach), train, curves[0].tokens_per_step, peaks)
    law = fit_chinchilla(points).law
    return dict(law={k: getattr(law, k) for k in CHINCHILLA_KEYS}, points=len(points.N), lengths_reach=reach)


CHINCHILLA_KEYS = ("E", "A", "B", "alpha", "beta")
MAX_LAW_DRAWS = 100  # Chinchilla refits for the laws from curves' intervals (each a few tenths of a second)


def laws_from_curves_samples(
    curves: list, shapes: list[dict[str, Any]], train: Any, reach: float = 1.0
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
    samples, lengths = [], _lengths(curves, reach)
    for i in range(min(min(counts), MAX_LAW_DRAWS)):
        laws = [curve_law_from_dict(s["draws"][i] if s.get("draws") else s) for s in shapes]
        law = fit_chinchilla(chinchilla_points(laws, lengths, train, curves[0].tokens_per_step, peaks)).law
        samples.append([getattr(law, k) for k in CHINCHILLA_KEYS])
    return dict(zip(CHINCHILLA_KEYS, np.array(samples).T, strict=True))


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
    from smallest_loss.experiments.fit_cmd import check_fit_args

    check_fit_args(n_boot, out, plot)
    folders = [f for path in paths for f in run_folders(Path(path))]
    curves = [read_curve(f) for f in folders]
    if curve_loss == "eval":
        curves = on_evals(curves)
    held = _held_curves(holdout or [], folders)
    result = fit_curve_laws(curves, min(n_boot, 200), form=form)
    laws = [curve_law_from_dict(s) for s in result["shapes"]]
    report = dict(result, prefix={str(f): _summary(prefix_errors(curves, f, form=form)) for f in PREFIXES})
    train = RunDir.open(folders[0]).config.train
    report["min_lr_ratio"] = train.min_lr_ratio  # the runs' schedules end here: `predict` builds the same
    report["chinchilla_from_curves"] = laws_from_curves(curves, laws, train)
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


def holdout_errors(
    held: list, laws: list[CurveLaw], from_curves: dict[str, Any], peaks: dict[int, float]
) -> dict[str, Any]:
    """Each held-out run's final eval loss against two predictions: its shape's curve law on its own schedule
    (when that shape was fitted at the run's peak rate, `peaks`: a law holds for one), and the law from curves at
    its N and D (any shape; the law describes cosine runs at each shape's fitted rate)."""
    by_N, rows = {law.N: law for law in laws}, []
    law = ChinchillaLaw(**from_curves["law"]) if "law" in from_curves else None
    for c in held:
        row = dict(name=c.name, N=c.N, D=c.steps * c.tokens_per_step, actual=c.final_eval)
        shape = by_N.get(c.N)
        if shape is not None and c.N in peaks and same_peak(float(c.lr.max()), peaks[c.N]):
            row["curve_law"] = shape.final_eval(c.lr)
            row["curve_law_rel_error"] = row["curve_law"] / c.final_eval - 1
        if law is not None:
            row["law_from_curves"] = float(law.loss(c.N, row["D"]))
            row["law_from_curves_rel_error"] = row["law_from_curves"] / c.final_eval - 1
        rows.append(row)
    out: dict[str, Any] = dict(runs=rows)
    for key in ("curve_law", "law_from_curves"):
        errors = [abs(r[f"{key}_rel_error"]) for r in rows if f"{key}_rel_error" in r]
        if errors:
            out[key] = dict(
                runs=len(errors), mean_abs_rel_error=float(np.mean(errors)), max_abs_rel_error=float(np.max(errors))
            )
    return out


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


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return dict(runs=[], error="no shape has runs of two families (runs that share no steps)")
    out: dict[str, Any] = dict(runs=rows)
    errors = np.abs([r["rel_error"] for r in rows if "rel_error" in r])  # none for laws of eval losses
    if len(errors):
        out.update(mean_abs_rel_error=float(errors.mean()), max_abs_rel_error=float(errors.max()))
    evals = np.abs([r["eval_rel_error"] for r in rows if "eval_rel_error" in r])
    if len(evals):
        means = np.random.default_rng(0).choice(evals, (MEAN_DRAWS, len(evals))).mean(axis=1)
        out.update(
            eval_runs=int(len(evals)),
            eval_mean_abs_rel_error=float(evals.mean()),
            eval_max_abs_rel_error=float(evals.max()),
            eval_mean_interval=[float(v) for v in np.percentile(means, [2.5, 97.5])],
        )
    return out


def print_curve_report(report: dict[str, Any]) -> None:
    lam = f", lambda {report['lam']}" if "lam" in report else ""
    on_evals_ = report.get("curve_loss") == "eval"
    print(
        f"curve law {report['formula']}{lam}, one law per shape, fitted to "
        + ("the runs' periodic evaluation losses:" if on_evals_ else "every step's train loss:")
    )
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
            print(
                f"final eval loss from the first {float(f):.0%}: mean |error| "
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
