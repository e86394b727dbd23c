"""`smallest-loss fit --curves` end to end on hand-written run folders: both curve forms, and refusals."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.experiments.cli import main

from tests.conftest import tiny_run


def _write_run(folder, d: int, steps: int, peak: float, anneal: bool, eval_every: int = 0) -> None:
    """A finished run whose train loss is 1.5 + 3 (area so far)^-0.5 (+ a bonus while the rate anneals); with
    `eval_every`, evaluations every that many steps and at the last, 1% above the law after the step's update."""
    cfg = tiny_run(steps=steps, lr=peak, warmup_steps=5)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d=d))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(dict(schema_version=2, config=cfg.to_dict(), corpus={}, eval_sets={}))
    )
    t = np.arange(steps)
    lr = np.where(t < 5, peak * (t + 1) / 5, peak)
    if anneal:
        lr = np.where(t >= steps // 2, peak * (1 - (t - steps // 2) / (steps - steps // 2)) + 1e-6, lr)
    area = np.concatenate([[1e-9], np.cumsum(lr)[:-1]])
    loss = 1.5 + 3.0 * np.maximum(area, 1e-3) ** -0.5 - 20.0 * np.maximum(peak - lr, 0) * (t > 5)
    lines = [
        dict(step=int(s + 1), tokens=int((s + 1) * 64), wall_seconds=0.1, train_loss=float(x), lr=float(r))
        for s, x, r in zip(t, loss, lr, strict=True)
    ]
    final = float(loss[-1]) * 1.01
    if eval_every:
        after = 1.5 + 3.0 * np.cumsum(lr) ** -0.5 - 20.0 * np.maximum(peak - lr, 0) * (t >= 5)
        for s in [*range(eval_every, steps, eval_every), steps]:
            lines[s - 1]["eval_loss"] = final = float(after[s - 1]) * 1.01
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (folder / "summary.json").write_text(json.dumps(dict(status="completed", steps=steps, final_eval_loss=final)))


@pytest.fixture(scope="module")
def shared_runs(tmp_path_factory):
    """Runs of two shapes, two schedules each, and the curve law `fit --curves --bootstrap 3` writes for them
    (with its stdout): read, never changed, by several tests."""
    root = tmp_path_factory.mktemp("curves")
    for d in (32, 64):
        for steps, anneal in ((200, True), (300, False)):
            _write_run(root / "runs" / f"d{d}-{steps}", d, steps, 1e-2, anneal)
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        assert main(["fit", "--curves", str(root / "runs"), "--bootstrap", "3", "--out", str(root / "law.json")]) == 0
    return root / "runs", root / "law.json", text.getvalue()


@pytest.fixture
def runs(shared_runs):
    return shared_runs[0]


@pytest.mark.slow
def test_fit_curves_writes_the_law_and_prefix_errors(shared_runs, capsys):
    """The default form (multi-power; Tissue's path through the same code is tested in tests/scaling)."""
    _, out, text = shared_runs
    report = json.loads(out.read_text())
    assert report["form"] == "multipower2025"
    assert len(report["shapes"]) == 2 and all(s["form"] == "multipower" for s in report["shapes"])
    assert "final eval loss from the first 50%" in text and out.with_suffix(".png").exists()
    assert report["prefix"]["0.5"]["eval_runs"] == 4
    lo, hi = report["prefix"]["0.5"]["eval_mean_interval"]
    assert (
        lo
        <= report["prefix"]["0.5"]["eval_mean_abs_rel_error"]
        <= hi
        <= report["prefix"]["0.5"]["eval_max_abs_rel_error"]
    )
    # Laws from curves: a law file the planner reads, with one sample per bootstrap draw of the curve laws.
    law = out.with_suffix(".law.json")
    saved = json.loads(law.read_text())
    assert saved["form"] == "chinchilla" and len(saved["samples"]["E"]) == 3
    assert set(saved["intervals"]) == {"E", "A", "B", "alpha", "beta"}
    assert all(lo <= hi for lo, hi in saved["intervals"].values())
    assert main(["plan", "--budget", "1e12", "--space", "cpu", "--law", str(law), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["best"][0]["loss"] > 0 and all(len(row["loss_interval"]) == 2 for row in plan["by_depth"])


@pytest.mark.slow
def test_a_damaged_curve_is_one_line_and_nothing_is_written(runs, tmp_path, capsys):
    runs = Path(shutil.copytree(runs, tmp_path / "runs"))  # damaged here, not in the shared folder
    folder = runs / "d32-200"
    lines = folder.joinpath("metrics.jsonl").read_text().splitlines()
    folder.joinpath("metrics.jsonl").write_text("\n".join(lines[:50] + lines[51:]) + "\n")
    out = tmp_path / "law.json"
    assert main(["fit", "--curves", str(runs), "--bootstrap", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gap" in err[0] and not out.exists()


@pytest.mark.slow
def test_held_out_runs_are_predicted_and_drawn(runs, tmp_path, capsys):
    """A longer annealed run of a fitted shape, not fitted: its shape's curve law and the law from curves predict
    its final eval loss; overlapping, eval-less or curve-less uses are one line, with nothing written."""
    held = tmp_path / "held"
    _write_run(held / "d32-400", 32, 400, 1e-2, True)
    out = tmp_path / "law.json"
    assert main(["fit", "--curves", str(runs), "--holdout-runs", str(held), "--bootstrap", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())["holdout"]
    (row,) = report["runs"]
    assert row["name"] == "d32-400" and row["D"] == 400 * 64
    assert abs(row["curve_law_rel_error"]) < 0.05  # the synthetic curves follow a law the form can express
    assert np.isfinite(row["law_from_curves_rel_error"])
    assert report["curve_law"]["runs"] == 1 and "held-out runs (1)" in text
    assert out.with_suffix(".png").exists()
    bad = tmp_path / "bad.json"
    for args, message in (
        (["--holdout-runs", str(runs / "d32-200")], "also among the fitted runs"),
        (["--holdout-runs", str(held), "--bootstrap", "0"], None),
    ):
        if message is None:  # a held-out run without an eval loss
            summary = held / "d32-400" / "summary.json"
            summary.write_text(json.dumps(dict(json.loads(summary.read_text()), final_eval_loss=None)))
            message = "no final eval loss"
        assert main(["fit", "--curves", str(runs), *args, "--out", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and not bad.exists()
    assert main(["fit", str(runs), "--holdout-runs", str(held)]) == 2
    assert "goes with --curves" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_reads_the_curve_law_for_any_length_and_schedule(shared_runs, tmp_path, capsys):
    _, law, _ = shared_runs
    from smallest_loss.experiments.predict_cmd import predict

    short, long = (predict(law, steps)["predictions"] for steps in (300, 900))
    for a, b in zip(short, long, strict=True):
        assert b["final_eval"] < a["final_eval"] and b["tokens"] == 900 * 64
        assert a["draws"] == 3 and a["interval"][0] <= a["interval"][1]
    wsd, constant = (
        predict(law, 600, schedule, N=short[0]["N"])["predictions"][0]["final_eval"] for schedule in ("wsd", "constant")
    )
    assert wsd < constant  # the synthetic runs gain while their rate anneals; the law learned it
    out = tmp_path / "pred" / "curve.csv"
    assert main(["predict", "--curve-law", str(law), "--steps", "400", "--out", str(out)]) == 0
    assert "final eval loss" in capsys.readouterr().out and out.with_suffix(".png").exists()
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == 2 * (400 - 21) and all(np.isfinite(float(r.split(",")[3])) for r in rows)
    legacy = tmp_path / "legacy.json"
    report = json.loads(law.read_text())
    legacy.write_text(
        json.dumps(dict(report, shapes=[{k: v for k, v in s.items() if k != "peak_lr"} for s in report["shapes"]]))
    )
    assert main(["predict", "--curve-law", str(legacy), "--steps", "400", "--lr", "1e-2"]) == 0
    capsys.readouterr()
    for args, message in (
        (["--curve-law", str(legacy)], "--lr"),
        (["--curve-law", str(tmp_path / "none.json")], "no such file"),
        (["--curve-law", str(law.with_suffix(".law.json"))], "not a curve law"),
        (["--curve-law", str(law), "--N", "5"], "shapes of N"),
        (["--curve-law", str(law), "--schedule", "step"], "choose one of"),
        (["--curve-law", str(law), "--out", str(tmp_path)], "a folder"),
    ):
        assert main(["predict", "--steps", "400", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    for steps in ("1", str(10**9)):
        assert main(["predict", "--curve-law", str(law), "--steps", steps]) == 2


def _write_planned_run(folder, steps: int, logged: int, **train) -> None:
    """A d32 run whose config plans its schedule (lr 1e-2, warmup 5) and whose loss follows the fixture's law;
    `logged` of its steps written (a run still training when fewer than `steps`)."""
    from smallest_loss.model.train import make_schedule

    cfg = tiny_run(steps=steps, lr=1e-2, warmup_steps=5, **train)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d=32))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(
        json.dumps(dict(schema_version=2, config=cfg.to_dict(), corpus={}, eval_sets={}))
    )
    t = np.arange(steps)
    lr = np.asarray(make_schedule(cfg.train, steps)(t), dtype=float)
    area = np.concatenate([[1e-9], np.cumsum(lr)[:-1]])
    loss = 1.5 + 3.0 * np.maximum(area, 1e-3) ** -0.5 - 20.0 * np.maximum(1e-2 - lr, 0) * (t > 5)
    lines = [
        dict(step=int(s + 1), tokens=int((s + 1) * 64), wall_seconds=0.1, train_loss=float(x), lr=float(r))
        for s, x, r in zip(t[:logged], loss, lr, strict=False)
    ]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if logged == steps:
        (folder / "summary.json").write_text(
            json.dumps(dict(status="completed", steps=steps, final_eval_loss=float(loss[-1]) * 1.01))
        )


@pytest.mark.slow
def test_predict_where_a_run_in_progress_ends(runs, tmp_path, capsys):
    """From the steps a run has logged and whole curves of its shape: a run still training, and a finished one
    checked from half of it, both predicted near where the law its curves follow puts their end."""
    from smallest_loss.scaling.curve_predict import predict_run

    wsd = dict(schedule="wsd", cooldown_fraction=0.5, decay="linear", min_lr_ratio=0.0)
    _write_planned_run(tmp_path / "done" / "long", 500, 500, **wsd)
    _write_planned_run(tmp_path / "going" / "long", 500, 250, **wsd)
    checked = predict_run(tmp_path / "done" / "long", [str(runs)], fraction=0.5)
    assert checked["steps_logged"] == 250 and checked["steps"] == 500 and checked["runs_of_shape"] == 2
    assert abs(checked["rel_error"]) < 0.05
    going = predict_run(tmp_path / "going" / "long", [str(runs)])
    assert "actual_final_eval" not in going and going["steps_logged"] == 250
    assert going["predicted_final_eval"] == pytest.approx(checked["predicted_final_eval"], rel=1e-6)
    assert main(["predict", "--run", str(tmp_path / "going" / "long"), "--curves", str(runs)]) == 0
    assert "250 of 500 steps logged (50%)" in capsys.readouterr().out
    _write_planned_run(tmp_path / "early" / "long", 500, 8, **wsd)
    for args, message in (
        (["--run", str(tmp_path / "going" / "long")], "--run takes --curves"),
        (["--run", str(tmp_path / "early" / "long"), "--curves", str(runs)], "steps logged"),
        (["--run", str(runs / "d64-200"), "--curves", str(runs / "d32-200")], "no finished run"),
        (["--run", str(tmp_path / "done" / "long"), "--curves", str(runs), "--fraction", "2"], "--fraction"),
        (["--steps", "100"], "predict needs"),
    ):
        assert main(["predict", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


@pytest.mark.slow
def test_fit_curves_on_evaluation_losses(runs, tmp_path, capsys):
    """`--curve-loss eval`: laws of the periodic evaluation losses (no eval gap), predicting a held-out run and a
    run from its first half; runs without periodic evaluations, or with a NaN one, are one line, nothing written."""
    fitted, held = tmp_path / "runs", tmp_path / "held"
    for d in (32, 64):
        for steps, anneal in ((200, True), (300, False)):
            _write_run(fitted / f"d{d}-{steps}", d, steps, 1e-2, anneal, eval_every=10)
    _write_run(held / "d32-400", 32, 400, 1e-2, True, eval_every=10)
    out = tmp_path / "law.json"
    assert (
        main(
            [
                "fit",
                "--curves",
                str(fitted),
                "--curve-loss",
                "eval",
                "--holdout-runs",
                str(held),
                "--bootstrap",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "fitted to the runs' periodic evaluation losses" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["curve_loss"] == "eval" and all(s["eval_gap"] == 0 for s in report["shapes"])
    assert abs(report["holdout"]["runs"][0]["curve_law_rel_error"]) < 0.05
    assert report["prefix"]["0.5"]["eval_runs"] == 4 and "mean_abs_rel_error" not in report["prefix"]["0.5"]
    assert (
        main(
            [
                "predict",
                "--run",
                str(held / "d32-400"),
                "--curves",
                str(fitted),
                "--fraction",
                "0.5",
                "--curve-loss",
                "eval",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "law fitted to evaluation losses" in text and "predicted" in text
    bad = tmp_path / "bad.json"
    assert main(["fit", "--curves", str(runs), "--curve-loss", "eval", "--out", str(bad)]) == 2  # no evaluations
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.eval_points" in err[0] and not bad.exists()
    assert main(["predict", "--run", str(runs / "d32-200"), "--curves", str(fitted), "--curve-loss", "eval"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "0 evaluation(s)" in err[0]
    metrics = fitted / "d32-200" / "metrics.jsonl"
    metrics.write_text(metrics.read_text().replace('"eval_loss": ', '"eval_loss": NaN, "x": ', 1))
    assert main(["fit", "--curves", str(fitted), "--curve-loss", "eval", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a positive finite number" in err[0] and not bad.exists()
    assert main(["fit", str(fitted), "--curve-loss", "eval"]) == 2
    assert "goes with --curves" in capsys.readouterr().err
