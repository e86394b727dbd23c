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
import os
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import check_outputs
from smallest_loss.scaling.curve_predict import predict_curves, predict_run, predict_table_run

SCHEDULES = ("cosine", "wsd", "constant")
MAX_STEPS = 10**7  # the schedule and its areas are arrays of this many steps
MAX_ROWS = 2000  # steps written to the CSV (every step of shorter runs, evenly spread over longer ones)


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
    """`predict --curve-law`: the report of `predict_curves`, with the curves written to `out` (CSV and plot)."""
    fractions = dict(warmup_fraction=warmup_fraction, cooldown_fraction=cooldown_fraction, decay=decay)
    report, results = predict_curves(law_path, steps, schedule, N, lr, **fractions, out=out)
    if out is not None:
        report.update(_write_curves(Path(out), results))
    return report


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


def _table_prediction(args: argparse.Namespace) -> dict[str, Any]:
    """`predict --csv TABLE --run NAME`: the flags describe the run's schedule where the table does not."""
    schedule = dict(
        steps=args.steps,
        schedule=args.schedule,
        lr=args.lr,
        warmup_fraction=args.warmup_fraction,
        cooldown_fraction=args.cooldown_fraction,
        decay=args.decay,
    )
    return predict_table_run(
        args.csv,
        args.run,
        args.columns,
        args.curve_loss,
        args.curve_form,
        args.curve_law,
        args.fraction,
        args.fill,
        **schedule,
    )


def print_table_prediction(p: dict[str, Any]) -> None:
    print(
        f"run {p['run']}: {p['steps_logged']:,} of {p['steps']:,} steps logged ({p['steps_logged'] / p['steps']:.0%})"
    )
    if "curve_law" in p:
        print(
            f"  {p['form']} law of {p['curve_law']} alone: final {p['curve_loss']} loss {p['law_alone']:.4f}; scaled "
            f"by {p['calibration']:+.2%} to the run's logged points: {p['predicted_final']:.4f}"
        )
    else:
        print(
            f"  {p['form']} law fitted to them and {p['runs_of_shape']} other runs of its N={p['N']:,}: predicted "
            f"final {p['curve_loss']} loss {p['predicted_final']:.4f}"
        )
    if "actual_final" in p:
        print(f"  the run is finished: final loss {p['actual_final']:.4f} ({p['rel_error']:+.2%} predicted)")


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
    p.add_argument(
        "--csv",
        metavar="TABLE",
        help="with --run NAME: a curve table (one row per logged point) holding the run; its law is fitted with "
        "the table's other runs of its N, or read from --curve-law",
    )
    p.add_argument("--columns", metavar="MAP", help="with --csv: NAME=COLUMN,... (step=_step,loss=eval/loss)")
    p.add_argument("--fill", metavar="NAME=VALUE,...", help="with --csv: columns the table lacks, one value per row")
    p.add_argument("--curve-form", choices=("multipower", "tissue"), default="multipower", help="with --run")
    p.add_argument(
        "--curve-loss",
        choices=("train", "eval"),
        help="with --run: fit every step's train loss (default) or the runs' periodic evaluation losses; with "
        "--csv: the table's train or eval rows (default: eval where it has any)",
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

    if args.csv or args.columns or args.fill:
        if not args.csv or not args.run or args.curves:
            raise UserError("predict --csv TABLE --run NAME [--curve-law FILE] [--steps T]: a run of a curve table")
        print_table_prediction(_table_prediction(args))
        return 0
    if args.run:
        if args.curve_law or not args.curves:
            raise UserError("--run takes --curves RUNS (finished runs of its shape), not --curve-law")
        curve_loss = args.curve_loss or "train"
        print_run_prediction(predict_run(args.run, args.curves, args.curve_form, args.fraction, curve_loss))
        return 0
    if (
        not args.curve_law
        or args.steps is None
        or args.curves
        or args.fraction is not None
        or args.curve_loss is not None
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
