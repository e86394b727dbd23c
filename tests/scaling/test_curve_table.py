"""Curve tables (scaling/curve_table.py): synthetic curves of a known multi-power law, logged every k steps, read
through the one table reader and fitted on their logged points; the schedule from the logged rates or from a
description; other tools' exports through the column map; bad tables refused in one line naming the row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.scaling.curve_law import curve_law_from_dict, fit_curve_laws, schedule_lrs
from smallest_loss.scaling.curve_predict import predict_table_run
from smallest_loss.scaling.curve_table import read_curves, read_table_runs
from smallest_loss.scaling.multipower import MultiPowerLaw

TRUE = MultiPowerLaw(1000, L0=2.0, A=1.0, alpha=0.4, B=300.0, C=2.0, beta=0.5, gamma=0.5, eval_gap=0.0)
RUNS = (("a", 3000, "cosine"), ("b", 1500, "cosine"), ("c", 3000, "wsd"), ("d", 2000, "constant"))


def lrs(steps: int, kind: str) -> np.ndarray:
    """The rate of updates 1..steps (warmup 5%, peak 3e-3; wsd: a 20% 1-sqrt cool-down)."""
    fields = dict(cooldown_fraction=0.2, decay="1-sqrt") if kind == "wsd" else {}
    return schedule_lrs(TrainConfig(lr=3e-3), steps, 0.05, kind, **fields)


def rows(every: int, runs=RUNS, warmup: bool = True) -> list[dict]:
    """One row per logged point: the law's loss after `step` updates, every `every` updates."""
    out = []
    for name, steps, kind in runs:
        lr = lrs(steps, kind)
        loss = TRUE.curve(np.r_[lr, lr[-1]])  # element t: the loss after t updates
        for t in range(every, steps + 1, every):
            row = dict(run=name, step=t, tokens=t * 1024, lr=lr[t - 1], loss=loss[t], N=1000, kind="eval")
            out.append(row | (dict(warmup_steps=round(0.05 * steps)) if warmup else {}))
    return out


def write(path: Path, table: list[dict], header: list[str] | None = None) -> Path:
    header = header or list(dict.fromkeys(k for r in table for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(table)
    return path


def final_errors(report: dict) -> list[float]:
    law = curve_law_from_dict(report["shapes"][0])
    cases = ((3000, "cosine"), (6000, "cosine"), (6000, "wsd"))  # 6000: twice the longest fitted run
    return [law.final_eval(lrs(s, k)) / TRUE.final_eval(lrs(s, k)) - 1 for s, k in cases]


@pytest.mark.slow
@pytest.mark.parametrize("every", [100, 200])
def test_recovers_the_law_from_points_logged_every_k_steps(tmp_path, every):
    curves = read_curves(write(tmp_path / "curves.csv", rows(every)))
    assert [c.name for c in curves] == ["a", "b", "c", "d"] and all(c.fit_evals for c in curves)
    assert curves[0].lr.shape == (3000,) and curves[0].tokens_per_step == 1024
    report = fit_curve_laws(curves, 0, form="multipower")
    assert report["shapes"][0]["rms_log_error"] < 0.01
    assert max(abs(e) for e in final_errors(report)) < 0.02  # twice the longest run, from the logged points alone


def test_interpolated_rates_match_the_schedule_and_a_description_gives_it_exactly(tmp_path):
    (curve,) = read_curves(write(tmp_path / "c.csv", rows(100, RUNS[2:3])))
    exact = lrs(3000, "wsd")
    assert np.abs(np.cumsum(curve.lr) - np.cumsum(exact)).max() < 0.01 * exact.sum()
    described = [
        {k: v for k, v in r.items() if k != "lr"}
        | dict(schedule="wsd", peak_lr=3e-3, total_steps=3000, final_lr=3e-4, cooldown_start=2400, decay="1-sqrt")
        for r in rows(100, RUNS[2:3])
    ]
    (run,) = read_table_runs(write(tmp_path / "d.csv", described))
    np.testing.assert_allclose(run.planned, exact, rtol=1e-5, atol=1e-9)
    assert run.curve.first == 150 + 2  # fitted after the described warmup


def test_a_wandb_history_export_reads_through_the_column_map(tmp_path):
    """Eval losses on some rows, the rate on every train row, empty cells elsewhere."""
    lr = lrs(2000, "cosine")
    loss = TRUE.curve(np.r_[lr, lr[-1]])
    table = []
    for t in range(10, 2001, 10):
        table.append({"_step": t, "optim/lr": lr[t - 1], "train/loss": loss[t] * 1.01, "eval/loss": ""})
        if t % 250 == 0:
            table.append({"_step": t, "optim/lr": "", "train/loss": "", "eval/loss": loss[t]})
    path = write(tmp_path / "wandb.csv", table)
    (curve,) = read_curves(path, columns="step=_step,loss=eval/loss,lr=optim/lr", fill="warmup_steps=100")
    assert curve.name == "wandb" and len(curve.eval_steps) == 8
    np.testing.assert_allclose(curve.eval_losses, loss[np.arange(250, 2001, 250)])
    assert np.abs(curve.lr - lr).max() < 0.01 * lr.max()  # within a step of the warmup ramp


def test_predicts_the_end_of_a_run_from_its_first_half(tmp_path):
    path = write(tmp_path / "curves.csv", rows(100))
    out = predict_table_run(path, "a", fraction=0.5, steps=3000)
    assert out["steps_logged"] == 1500 and out["runs_of_shape"] == 3
    assert abs(out["rel_error"]) < 0.02
    law = tmp_path / "law.json"
    law.write_text(json.dumps(dict(shapes=[TRUE.to_dict()])))
    out = predict_table_run(path, "a", law_path=law, fraction=0.5, steps=3000)
    assert abs(out["rel_error"]) < 0.005 and abs(out["calibration"]) < 0.005


def bad(table: list[dict]) -> list[dict]:
    return [dict(r) for r in table]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: [{k: v for k, v in r.items() if k != "lr"} for r in t], "lacks column lr"),
        (lambda t: [r | (dict(lr=-1.0) if i == 3 else {}) for i, r in enumerate(t)], "line 5: lr=-1"),
        (lambda t: t[:-19], "run d has one logged eval point"),
        (lambda t: [r | (dict(step=100) if i == 2 else {}) for i, r in enumerate(t)], "line 4: run a's step 100"),
        (lambda t: [r | (dict(loss="nan") if i == 6 else {}) for i, r in enumerate(t)], "line 8: loss=nan"),
        (lambda t: [r | (dict(loss="inf") if i == 6 else {}) for i, r in enumerate(t)], "line 8: loss=inf"),
    ],
)
def test_bad_tables_are_refused_in_one_line_naming_the_row(tmp_path, change, message):
    path = write(tmp_path / "bad.csv", change(bad(rows(100, warmup=True))))
    with pytest.raises(UserError, match=message) as err:
        read_curves(path)
    assert "\n" not in str(err.value)


def test_a_schedule_this_tool_cannot_rebuild_is_read_from_the_logged_rates(tmp_path):
    """Luo et al.'s tables name schedules such as two_stage: the logged lr column carries them."""
    rows = ["run,step,lr,loss,N,schedule,peak_lr,total_steps"]
    for step in range(20, 420, 20):
        lr = 1e-3 if step <= 200 else 1e-4
        rows.append(f"a,{step},{lr},{3 + 10 / step},1000000,two_stage,0.001,400")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    (curve,) = read_curves(tmp_path / "t.csv")
    assert curve.lr[100] == pytest.approx(1e-3) and curve.lr[300] == pytest.approx(1e-4)
    no_lr = ["run,step,loss,N,schedule,peak_lr,total_steps"] + [
        f"a,{s},{3 + 10 / s},1000000,two_stage,0.001,400" for s in range(20, 420, 20)
    ]
    (tmp_path / "v.csv").write_text("\n".join(no_lr) + "\n")
    with pytest.raises(UserError, match="describe cosine, wsd or constant, or log its lr column"):
        read_curves(tmp_path / "v.csv")
