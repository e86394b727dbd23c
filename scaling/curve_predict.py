"""What a run will reach, from curve laws (scaling/curve_law.py, scaling/multipower.py).

`predict_curves`: what a fitted curve-law file (`fit --curves --out`) says a run of any length and schedule will
reach, each fitted shape at its fitted peak rate (or a given one), with the 95% interval of the law's bootstrap
draws. `predict_run`: where a run still training (or stopped) will end: its shape's curve law fitted to the steps it
has logged together with whole curves of its shape, on the schedule its config plans.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.runs import RunDir
from smallest_loss.model.schedule import schedule_values
from smallest_loss.scaling.collect import run_folders
from smallest_loss.scaling.curve_law import (
    MIN_PREFIX,
    Curve,
    CurveLaw,
    curve_law_from_dict,
    final_train_loss,
    fit_from_prefix,
    on_evals,
    read_curve,
    schedule_lrs,
    shape_peaks,
)
from smallest_loss.scaling.curve_table import TableRun, read_table_runs

SCHEDULES = ("cosine", "wsd", "constant")
MAX_STEPS = 10**7  # the schedule and its areas are arrays of this many steps


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


def check_prediction(
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


def predict_curves(
    law_path: str | Path,
    steps: int,
    schedule: str = "cosine",
    N: int | None = None,
    lr: float | None = None,
    warmup_fraction: float = 0.05,
    cooldown_fraction: float = 0.2,
    decay: str = "1-sqrt",
    out: str | Path | None = None,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], CurveLaw, np.ndarray, int]]]:
    """Each fitted shape's final eval loss for a run of `steps` on `schedule` (at its fitted peak rate, or `lr`), with
    the 95% interval of the law's bootstrap draws: the report, and per shape (result, law, rates, warmup steps)
    for writing the curves. Every input is checked first; `out` only for its kind (a file, not a folder)."""
    check_prediction(steps, schedule, lr, warmup_fraction, cooldown_fraction, out)
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
    return out_report, results


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
    planned = schedule_values(rundir.config.train, total, np.arange(total))
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


def _table_schedule(run: TableRun, steps: int | None = None, schedule: str = "cosine", lr: float | None = None,
                    warmup_fraction: float = 0.05, cooldown_fraction: float = 0.2,
                    decay: str = "1-sqrt") -> np.ndarray:  # fmt: skip
    """The rates of every update of a table's run: its logged rates, then the rest of its planned schedule (the
    table's description, or else the flags': `steps` updates of `schedule` at peak `lr`, default its largest)."""
    logged = run.curve.lr
    if run.planned is not None:
        if steps is not None and steps != len(run.planned):
            raise UserError(f"--steps {steps}: the table describes run {run.curve.name} as {len(run.planned)} steps")
        return np.concatenate([logged, run.planned[len(logged) :]])
    if steps is None:
        raise UserError(
            f"run {run.curve.name}: the table does not describe its schedule (columns schedule, peak_lr, "
            "total_steps); give its length --steps T (and --schedule, --warmup-fraction, --lr where not cosine)"
        )
    check_prediction(steps, schedule, lr, warmup_fraction, cooldown_fraction, None)
    if steps < len(logged):
        raise UserError(f"--steps {steps}: run {run.curve.name} has already logged step {len(logged)}")
    fields = dict(cooldown_fraction=cooldown_fraction, decay=decay) if schedule == "wsd" else {}
    peak = lr if lr is not None else float(logged.max())
    planned = schedule_lrs(TrainConfig(lr=peak), steps, warmup_fraction, schedule, **fields)
    return np.concatenate([logged, planned[len(logged) :]])


def _law_of_file(law_path: str | Path, N: int) -> CurveLaw:
    """The shape's law from a curve-law file: the row of N, or the file's one shape (a table without N)."""
    rows = load_curve_laws(law_path)["shapes"]
    mine = [r for r in rows if r.get("N") == N] or (rows if len(rows) == 1 else [])
    if not mine:
        fitted = ", ".join(str(r.get("N")) for r in rows)
        raise UserError(f"--curve-law {law_path}: no law of N={N} (it has N = {fitted})")
    return curve_law_from_dict(mine[0])


def _calibration(law: CurveLaw, run: Curve, lrs: np.ndarray) -> float:
    """exp(mean log(logged loss / law)) over the run's fitted logged points: how far this run sits from the law."""
    t, losses = run.fitted_evals()
    after = law.curve(np.r_[lrs, lrs[-1]])  # element t: the loss after t updates (t up to the last)
    return float(np.exp(np.mean(np.log(losses / (after[t] * np.exp(law.eval_gap))))))


def predict_table_run(table: Any, name: str, columns: str | None = None, curve_loss: str | None = None,
                      form: str = "multipower", law_path: str | Path | None = None, fraction: float | None = None,
                      fill: str | None = None, **schedule: Any) -> dict[str, Any]:  # fmt: skip
    """A curve table's run still training elsewhere: its final loss (of the table's kind) from its logged points,
    on its planned schedule (`_table_schedule`: the table's description or `schedule`'s flags). Its shape's law is
    fitted to its logged points and the table's other runs of its N, or (`law_path`) read from a curve-law file
    and scaled to its logged points (`_calibration`). `fraction`: only its first F of the steps (a check); `fill`:
    columns the table lacks (`read_table_runs`)."""
    if fraction is not None and not 0 < fraction <= 1:
        raise UserError(f"--fraction {fraction}: a share of the run's steps, in (0, 1]")
    runs = read_table_runs(table, columns, curve_loss, fill)
    mine = [r for r in runs if r.curve.name == name]
    if not mine:
        raise UserError(f"--run {name}: no such run in {table} (runs: {', '.join(r.curve.name for r in runs[:10])})")
    logged = mine[0].curve
    lrs = _table_schedule(mine[0], **schedule)
    cut = len(logged.lr) if fraction is None else min(len(logged.lr), int(fraction * len(lrs)))
    run = logged.prefix(cut)
    if run.fitted() <= MIN_PREFIX:
        raise UserError(f"run {name}: {run.fitted()} logged points after warmup (step {run.first - 1}); the law "
                        f"needs more than {MIN_PREFIX}")  # fmt: skip
    out: dict[str, Any] = dict(run=name, N=run.N, steps_logged=cut, steps=len(lrs), curve_loss=mine[0].kind)
    if law_path is None:
        others = [r.curve for r in runs if r.curve.N == run.N and r.curve.name != name]
        if not others:
            raise UserError(f"--run {name}: the table has no other run of its N={run.N} to fit the law with; "
                            "add finished runs of its shape, or give --curve-law FILE")  # fmt: skip
        law = fit_from_prefix(run, cut, others, form=form)
        out.update(form=law.form, runs_of_shape=len(others), predicted_final=law.final_eval(lrs))
    else:
        law = _law_of_file(law_path, run.N)
        scale = _calibration(law, run, lrs)
        out.update(form=law.form, curve_law=str(law_path), law_alone=law.final_eval(lrs), calibration=scale - 1,
                   predicted_final=law.final_eval(lrs) * scale)  # fmt: skip
    if len(logged.lr) == len(lrs) and cut < len(lrs):  # a finished run cut short: the check
        actual = float(logged.eval_losses[-1])
        out.update(actual_final=actual, rel_error=out["predicted_final"] / actual - 1)
    return out
