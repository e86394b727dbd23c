"""What logging a curve sparsely costs a curve law: run folders (every step logged) written as curve tables logged
every k steps, each fitted on its logged points alone (the schedule between them interpolated from the logged
rates), against the same runs fitted at every step. Run from the repository root:

    python experiments/scripts/curve_table_interpolation.py RUNS... --every 1 50 200 \\
        --tables results/cpu/curves/table > results/cpu/curves/table/interpolation.txt

For each shape with two or more runs (and each k), it prints every law's predicted final loss of each fitted run
(on its own schedule) and of a cosine run twice as long as the longest, and the relative difference from the law
fitted to the every-step table (k = 1) and from the run folders' own fit (every step's train loss averaged in
windows); "(exact rates)" fits the same logged points with the runs' true rate at every update instead of the
interpolated one: the difference between the two is what interpolating the schedule costs, the rest is what
fitting fewer (single-batch, noisy) losses costs. `--tables` writes each table (`curves_everyK.csv`), a curve
table in the documented format.
"""

import argparse
import csv
import dataclasses
from pathlib import Path

import numpy as np
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.collect import run_folders
from smallest_loss.scaling.curve_law import Curve, by_shape, fit_curve_law_of_shape, read_curve, schedule_lrs
from smallest_loss.scaling.curve_table import MIN_POINTS, read_curves

COLUMNS = ("run", "step", "tokens", "lr", "loss", "N", "kind")


def table_rows(curve: Curve, every: int, mean: bool = False) -> list[dict]:
    """A run folder's curve as curve-table rows every `every` updates: the train loss logged at step s (before its
    update) is the loss after t = s - 1 updates; `lr` is the rate of update t. `mean`: each row's loss is the mean
    over its interval's `every` steps (as stacks that log a running mean since the last log do)."""
    rows, fitted = [], [t for t in range(every, curve.steps, every) if t >= curve.first - 1]
    if len(fitted) < MIN_POINTS:  # too short to be logged this sparsely: left out of this table
        return []
    for t in range(every, curve.steps, every):
        rows.append(dict(run=curve.name, step=t, tokens=t * curve.tokens_per_step, lr=f"{curve.lr[t - 1]:.6g}",
                         loss=f"{np.mean(curve.loss[t - every + 1 : t + 1]) if mean else curve.loss[t]:.6f}",
                         N=curve.N, kind="train"))  # fmt: skip
    return rows


def write_table(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def predictions(law, curves: list[Curve], train) -> np.ndarray:
    """The law's final loss of each run's own schedule, then of a cosine run twice the longest."""
    longest = 2 * max(c.steps for c in curves)
    longer = schedule_lrs(train, longest, 0.05)
    return np.array([law.final_eval(c.lr) for c in curves] + [law.final_eval(longer)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--every", nargs="+", type=int, default=[1, 50, 200])
    p.add_argument("--tables", type=Path, help="write each curve table here")
    p.add_argument("--form", default="multipower")
    p.add_argument("--mean", action="store_true", help="log each interval's mean loss, not its last step's")
    args = p.parse_args()
    folders = [f for path in args.runs for f in run_folders(Path(path))]
    curves = [read_curve(f) for f in folders]
    train = RunDir.open(folders[0]).config.train
    out = Path(args.tables or "/tmp") / ("curves_every{k}_mean.csv" if args.mean else "curves_every{k}.csv")
    tables = {k: write_table(Path(str(out).format(k=k)), [r for c in curves for r in table_rows(c, k, args.mean)])
              for k in args.every}  # fmt: skip
    for N, group in by_shape(curves).items():
        if len(group) < 2:
            continue
        base = fit_curve_law_of_shape(group, form=args.form)[0]
        base = dataclasses.replace(base, eval_gap=0.0)  # compare train-loss laws
        names = {c.name for c in group}
        print(f"N={N}: runs {', '.join(sorted(names))} ({', '.join(str(c.steps) for c in group)} steps), "
              f"{args.form}; final train loss of each run, then of a cosine run of {2 * max(c.steps for c in group)}"
              " steps")  # fmt: skip
        reference = predictions(base, group, train)
        print(f"  run folders, every step in windows: {' '.join(f'{v:.4f}' for v in reference)}")
        every_step = None
        for k, path in tables.items():
            logged = [c for c in read_curves(path, kind="train") if c.name in names]
            if len(logged) < len(group):
                print(f"  table every {k}: {len(group) - len(logged)} run(s) too short at this interval: not fitted")
                continue
            by_name = {c.name: c for c in group}
            exact = [dataclasses.replace(c, lr=by_name[c.name].lr[: c.steps]) for c in logged]
            for label, fitted in (("", logged), (" (exact rates)", exact)):
                if k == 1 and label:
                    continue
                pred = predictions(fit_curve_law_of_shape(fitted, form=args.form)[0], group, train)
                every_step = pred if k == 1 else every_step
                vs_one = "" if every_step is None else f"; vs every step {_diff(pred, every_step)}"
                cells = " ".join(f"{v:.4f}" for v in pred)
                print(f"  table every {k}{label}: {cells}; vs folders {_diff(pred, reference)}{vs_one}")
    print("\n(differences: mean |relative difference| over the runs' own schedules, and at twice the longest run)")


def _diff(a: np.ndarray, b: np.ndarray) -> str:
    d = a / b - 1
    return f"{np.mean(np.abs(d[:-1])):.2%} own, {d[-1]:+.2%} at 2x"


if __name__ == "__main__":
    main()
