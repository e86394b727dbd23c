"""`smallest-loss predict`: what a run will reach.

- `--curve-law curve_law.json --steps T`: what a fitted curve law (`fit --curves --out`) says a run of any length
  and schedule will reach: the final eval loss of each fitted shape at its fitted peak rate (or `--lr`), with the
  95% interval of the law's bootstrap draws, and with `--out` the predicted loss at every step as a CSV and a plot.
- `--run RUN --curves RUNS...`: where a run still training (or stopped) will end: its shape's curve law fitted to
  the steps it has logged together with the whole curves of RUNS of its shape (they show what the rest of its
  schedule does), predicting its final eval loss on the schedule its config plans. On finished runs this is the
  "from the first 50%" check of `fit --curves`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.experiments.args import check_outputs
from smallest_loss.model.runs import RunDir
from smallest_loss.model.train import make_schedule
from smallest_loss.scaling.collect import run_folders
from smallest_loss.scaling.curve_law import (
    MIN_PREFIX,
    curve_law_from_dict,
    final_train_loss,
    fit_from_prefix,
    on_evals,
    read_curve,
    schedule_lrs,
    shape_peaks,
)

SCHEDULES = ("cosine", "wsd", "constant")
MAX_STEPS = 10**7  # the schedule and its areas are arrays of this many steps
MAX_ROWS = 2000  # steps written to the CSV (every step of shorter runs, evenly spread over longer ones)


def load_curve_laws(path: str | Path) -> dict[str, Any]:
    """A `fit --curves --out` report, refused in one line when it is not one."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--curve-law {path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"--curve-law {path}: not JSON ({err})") from None
    if not isinstance(report, dict) or not isinstance(report.get("shapes"), list) or not report["shapes"]:
        raise UserError(
            f"--curve-law {path}: not a curve law file (write one with smallest-loss fit --curves RUNS "
            "--out FILE.json; FILE.law.json beside it is the Chinchilla law for plan --law)"
        )
    return report


def _check_prediction(
    steps: int, schedule: str, lr: float | None, warmup: float, cooldown: float, out: str | Path | None
) -> None:
    """Refuse, in one line, a run length, schedule, rate, fraction or output `predict` cannot use."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 2 <= steps <= MAX_STEPS:
        raise UserError(f"--steps {steps}: a run of 2 to {MAX_STEPS:,} steps (its schedule is built step by step)")
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if not 0 <= warmup < 1 or not 0 < cooldown < 1:
        raise UserError("--warmup-fraction must lie in [0, 1) and --cooldown-fraction in (0, 1)")
    if lr is not None and not 0 < lr < float("inf"):
        raise UserError(f"--lr {lr}: a peak learning rate is a positive number")
    if out is not None and Path(out).is_dir():
        raise UserError(f"--out {out}: a folder; give a file name (curve.csv)")


def predict(
    law_path: str | Path,
    steps: int,
    schedule: str = "cosine",
    N: int | None = None,
    lr: float | None = None,
    warmup_fraction: float = 0.05,
    cooldown_fraction: float = 0.2,
    decay: str = "1-sqrt",
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Every input is checked before anything is computed or written."""
    _check_prediction(steps, schedule, lr, warmup_fraction, cooldown_fraction, out)
    report = load_curve_laws(law_path)
    rows = [r for r in report["shapes"] if N is None or r.get("N") == N]
    if not rows:
        fitted = ", ".join(str(r.get("N")) for r in report["shapes"])
        raise UserError(f"--N {N}: the curve law has shapes of N = {fitted}")
    if lr is None and any("peak_lr" not in r for r in rows):
        raise UserError(
            f"--curve-law {law_path}: the file records no peak learning rate (written by an older version); pass --lr"
        )
    train = TrainConfig(steps=steps, min_lr_ratio=report.get("min_lr_ratio", 0.1))
    fields = dict(cooldown_fraction=cooldown_fraction, decay=decay) if schedule == "wsd" else {}
    results = []
    for row in rows:
        law = curve_law_from_dict(row)
        peak = lr if lr is not None else row["peak_lr"]
        lrs = schedule_lrs(dataclasses.replace(train, lr=peak), steps, warmup_fraction, schedule, **fields)
        draws = np.array([curve_law_from_dict(d).final_eval(lrs) for d in row.get("draws") or ()])
        result = dict(
            N=law.N,
            peak_lr=peak,
            steps=steps,
            final_eval=law.final_eval(lrs),
            interval=[float(v) for v in np.percentile(draws, [2.5, 97.5])] if len(draws) >= 2 else None,
            draws=len(draws),
            draws_not_positive=int(np.sum(~(draws > 0))),
        )
        if "tokens_per_step" in row:
            result["tokens"] = steps * row["tokens_per_step"]
        if "steps_range" in row:
            result["steps_range"] = row["steps_range"]
        results.append((result, law, lrs, max(1, round(warmup_fraction * steps))))
    out_report: dict[str, Any] = dict(
        curve_law=str(law_path),
        form=report.get("form"),
        schedule=schedule,
        warmup_fraction=warmup_fraction,
        predictions=[r[0] for r in results],
    )
    if schedule == "wsd":
        out_report.update(cooldown_fraction=cooldown_fraction, decay=decay)
    if out is not None:
        out_report.update(_write_curves(Path(out), results))
    return out_report


def _write_curves(out: Path, results: list[tuple[dict[str, Any], Any, np.ndarray, int]]) -> dict[str, str]:
    """The predicted eval-equivalent loss (the law's train loss times exp(eval_gap)) at up to MAX_ROWS steps of
    each shape's schedule after its warmup (where the law was fitted), as a CSV (written whole, then renamed) and
    a plot."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    curves = []
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "step", "lr", "predicted_loss"])
        for result, law, lrs, warmup in results:
            first = min(warmup + 1, len(lrs) - 1)  # 0-based: the first step after warmup's last update
            at = np.unique(np.linspace(first, len(lrs) - 1, min(len(lrs) - first, MAX_ROWS)).round().astype(int))
            loss = law.curve(lrs)[at] * np.exp(law.eval_gap)
            curves.append((result["N"], at + 1, loss))
            w.writerows([result["N"], int(s) + 1, f"{lrs[s]:.6g}", f"{v:.6f}"] for s, v in zip(at, loss, strict=True))
    tmp.replace(out)
    from smallest_loss.experiments.plots_fit import plot_predicted_curves

    return dict(csv=str(out), plot=str(plot_predicted_curves(curves, out.with_suffix(".png"))))


def print_prediction(report: dict[str, Any]) -> None:
    how = report["schedule"] + (
        f" (cool-down {report['cooldown_fraction']:.0%}, {report['decay']})" if report["schedule"] == "wsd" else ""
    )
    print(f"curve law {report['curve_law']} ({report['form']}): a {how} run, warmup {report['warmup_fraction']:.0%}")
    for p in report["predictions"]:
        interval = f" [{p['interval'][0]:.4f}, {p['interval'][1]:.4f}]" if p["interval"] else ""
        tokens = f", {p['tokens']:,} tokens" if "tokens" in p else ""
        print(
            f"  N={p['N']}: {p['steps']:,} steps{tokens} at peak lr {p['peak_lr']:.3g}: final eval loss "
            f"{p['final_eval']:.4f}{interval}"
        )
        lo, hi = p.get("steps_range", (p["steps"], p["steps"]))
        if not lo <= p["steps"] <= hi:
            side = (
                f"{p['steps'] / hi:.3g}x the longest"
                if p["steps"] > hi
                else f"{lo / p['steps']:.3g}x shorter than the shortest"
            )
            print(
                f"    warning: {p['steps']:,} steps is {side} run this shape's law was fitted on "
                f"({lo:,}-{hi:,} steps): extrapolated"
            )
        if not p["final_eval"] > 0:
            print(
                f"    a loss <= 0 is impossible: {p['steps']:,} steps lie outside what the fitted runs support "
                "(the law is extrapolated past where it holds); predict lengths near the runs' own"
            )
        if p["draws_not_positive"]:
            print(
                f"    {p['draws_not_positive']} of {p['draws']} bootstrap draws predict a loss <= 0: the runs do not "
                "pin this length or schedule down"
            )
    if not any(p["interval"] for p in report["predictions"]):
        print("  (no interval: fit the curve law with --bootstrap K, K >= 2)")
    for key in ("csv", "plot"):
        if key in report:
            print(f"{key}: {report[key]}")


def predict_run(
    folder: str | Path,
    paths: list[str],
    form: str = "multipower",
    fraction: float | None = None,
    curve_loss: str = "train",
) -> dict[str, Any]:
    """The run's final eval (and train) loss from the steps it has logged (the first `fraction` of its planned
    steps, when given: a check on a finished run) and RUNS' curves of its shape; `curve_loss` "eval": from their
    periodic evaluation losses (a law of the eval loss: no train loss is predicted)."""
    folder = Path(folder)
    if fraction is not None and not 0 < fraction <= 1:
        raise UserError(f"--fraction {fraction}: a share of the run's steps, in (0, 1]")
    logged = read_curve(folder, partial=True)
    rundir = RunDir.open(folder)
    total = rundir.config.total_steps
    cut = len(logged.lr) if fraction is None else min(len(logged.lr), int(fraction * total))
    run = on_evals([logged.prefix(cut)])[0] if curve_loss == "eval" else logged.prefix(cut)
    if run.fitted() <= MIN_PREFIX:
        what = "evaluations" if run.fit_evals else "steps"
        raise UserError(
            f"{folder}: {run.fitted()} {what} logged after warmup (step {run.first}); the law needs more "
            f"than {MIN_PREFIX}"
        )
    others = [
        c
        for c in (read_curve(f) for path in paths for f in run_folders(Path(path)))
        if c.N == run.N and c.name != run.name and c.family != run.family
    ]
    others = on_evals(others) if run.fit_evals else others
    if not others:
        raise UserError(
            f"--curves: no finished run of {folder.name}'s shape (N={run.N:,}) outside its own family; "
            "the law needs whole curves of its shape to see what the rest of its schedule does"
        )
    peaks = shape_peaks([run, *others])
    if isinstance(peaks, str):
        raise UserError(f"--curves: with {folder.name}, {peaks}")
    planned = np.asarray(make_schedule(rundir.config.train, total)(np.arange(total)), dtype=np.float64)
    lrs = np.concatenate([run.lr, planned[len(run.lr) :]])  # the logged rates, then the rest the config plans
    law = fit_from_prefix(run, cut, others, form=form)
    whole = dataclasses.replace(run, lr=lrs, loss=np.full(total, np.nan))
    out = dict(
        run=str(folder),
        N=run.N,
        steps_logged=len(run.lr),
        steps=total,
        runs_of_shape=len(others),
        form=law.form,
        curve_loss=curve_loss,
        predicted_final_eval=law.final_eval(lrs),
        eval_from_runs=sum(bool(c.final_eval) for c in others),
    )
    if not run.fit_evals:
        out["predicted_final_train"] = final_train_loss(whole, law.curve(lrs))
    if logged.final_eval:  # a finished run: the check
        out.update(actual_final_eval=logged.final_eval, rel_error=out["predicted_final_eval"] / logged.final_eval - 1)
    return out


def print_run_prediction(p: dict[str, Any]) -> None:
    print(
        f"{p['run']}: {p['steps_logged']:,} of {p['steps']:,} steps logged ({p['steps_logged'] / p['steps']:.0%}); "
        f"{p['form']} law fitted to them and {p['runs_of_shape']} runs of its shape (N={p['N']:,})"
    )
    if "predicted_final_train" not in p:  # a law of the runs' evaluation losses
        print(f"  predicted final eval loss {p['predicted_final_eval']:.4f} (law fitted to evaluation losses)")
    else:
        note = "" if p["eval_from_runs"] else " (no run of its shape has an eval loss: taken equal to the train loss)"
        print(
            f"  predicted final eval loss {p['predicted_final_eval']:.4f}{note}; final train loss "
            f"{p['predicted_final_train']:.4f}"
        )
    if "actual_final_eval" in p:
        print(f"  the run is finished: final eval loss {p['actual_final_eval']:.4f} ({p['rel_error']:+.2%} predicted)")


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--curve-law", metavar="CURVE_LAW.json", help="a file from fit --curves --out")
    p.add_argument("--steps", type=int, help="with --curve-law: the run's length in steps")
    p.add_argument(
        "--run",
        metavar="RUN",
        help="a run folder, training or finished: predict its final loss from the steps it has logged",
    )
    p.add_argument(
        "--curves",
        nargs="+",
        metavar="RUNS",
        help="with --run: finished runs (or sweep folders); those of its shape are fitted with its logged steps",
    )
    p.add_argument("--curve-form", choices=("multipower", "tissue"), default="multipower", help="with --run")
    p.add_argument(
        "--curve-loss",
        choices=("train", "eval"),
        default="train",
        help="with --run: fit every step's train loss (default) or the runs' periodic evaluation losses",
    )
    p.add_argument(
        "--fraction",
        type=float,
        help="with --run: use only the first F of its planned steps (a check on a finished run)",
    )
    p.add_argument("--schedule", default="cosine", help="cosine (default), wsd or constant")
    p.add_argument("--N", type=int, help="one fitted shape's parameter count (default: every shape)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: each shape's fitted peak)")
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="warmup, a fraction of the steps (0.05)")
    p.add_argument("--cooldown-fraction", type=float, default=0.2, help="wsd: the cool-down's share of the steps")
    p.add_argument("--decay", choices=("1-sqrt", "linear"), default="1-sqrt", help="wsd: the cool-down's shape")
    p.add_argument("--out", metavar="CURVE.csv", help="write the predicted loss at every step here (and a plot)")


def run(args: argparse.Namespace) -> int:
    check_outputs(files={"--out": args.out})

    if args.run:
        if args.curve_law or not args.curves:
            raise UserError("--run takes --curves RUNS (finished runs of its shape), not --curve-law")
        print_run_prediction(predict_run(args.run, args.curves, args.curve_form, args.fraction, args.curve_loss))
        return 0
    if (
        not args.curve_law
        or args.steps is None
        or args.curves
        or args.fraction is not None
        or args.curve_loss != "train"
    ):
        raise UserError(
            "predict needs --curve-law FILE --steps T, or --run RUN --curves RUNS [--fraction F] [--curve-loss eval]"
        )
    print_prediction(
        predict(
            args.curve_law,
            args.steps,
            args.schedule,
            args.N,
            args.lr,
            args.warmup_fraction,
            args.cooldown_fraction,
            args.decay,
            args.out,
        )
    )
    return 0
