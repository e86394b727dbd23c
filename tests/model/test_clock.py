"""A run that ends on the clock (`train.end_within`): the end of its schedule (its horizon, in the training state)
moves to the steps the time left buys, the learning rate still decays to its end at the last step, and a resumed
run finishes at the horizon it had reached. No assertion here reads a clock: a deadline far off moves the horizon to
its cap, one already past to the next step, both at the same step on every machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.experiments.cli import main
from smallest_loss.model.evaluate import evaluate_run, post_training_losses
from smallest_loss.model.schedule import schedule_values
from smallest_loss.model.train import train

from tests.conftest import tiny_run
from tests.model.conftest import metrics, record_batches

FAR, PAST = 1e6, 1e-6  # seconds: a deadline the run never nears, and one gone before its first step
PLANNED, CAP = 12, 8  # planned steps, and the horizon's cap in planned steps (model/train.py `_retime`)
FIRST = 3  # the sync (log_every 1: the step) after which the horizon first moves: a pace needs three syncs


def clocked(end_within: float, **train):
    settings = dict(steps=PLANNED, log_every=1, eval_every=0, checkpoint_every=0, warmup_steps=2, end_within=end_within)
    return tiny_run(**{**settings, **train})


def test_a_far_deadline_stretches_the_run_and_its_schedule_decays_at_the_new_end(tmp_path):
    cfg = clocked(FAR)
    summary = train(cfg, tmp_path / "run", progress=False)
    end = CAP * PLANNED
    assert summary["steps"] == summary["total_steps"] == end and summary["planned_steps"] == PLANNED
    assert summary["end_within"] == FAR and summary["status"] == "completed"
    lrs = np.array([line["lr"] for line in metrics(tmp_path / "run")])
    steps = np.arange(end)  # step k + 1 ran at the rate of step count k
    np.testing.assert_allclose(lrs[:FIRST], schedule_values(cfg.train, PLANNED, steps[:FIRST]), rtol=1e-6)
    np.testing.assert_allclose(lrs[FIRST:], schedule_values(cfg.train, end, steps[FIRST:]), rtol=1e-5)
    assert lrs[-1] == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio, rel=1e-2)  # decayed at the new end


def test_a_deadline_already_past_ends_the_run_at_the_next_step_decayed(tmp_path):
    cfg = clocked(PAST, schedule="wsd", cooldown_fraction=0.5)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == summary["total_steps"] == FIRST + 1 and summary["final_eval_loss"] is not None
    lines = metrics(tmp_path / "run")
    assert lines[-1]["lr"] == pytest.approx(schedule_values(cfg.train, FIRST + 1, np.array([FIRST]))[0], rel=1e-5)
    assert (tmp_path / "run" / "checkpoints" / str(FIRST + 1)).is_dir()  # the last step saved, as any run's
    step, loss = evaluate_run(str(tmp_path / "run"), 2, 4, 7)  # its checkpoint (horizon and all) reads back
    assert step == FIRST + 1 and 0 < loss < 10
    assert post_training_losses(tmp_path / "run", [8], batches=1).rise(8) is not None


def test_an_interrupted_clocked_run_resumes_to_the_horizon_it_had_reached(tmp_path, monkeypatch):
    cfg, folder = clocked(FAR), tmp_path / "run"
    record_batches(monkeypatch, stop_at=5, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, folder, progress=False)
    assert json.loads((folder / "summary.json").read_text())["total_steps"] == CAP * PLANNED
    record_batches(monkeypatch)
    summary = train(None, folder, resume=True, progress=False)
    assert summary["steps"] == summary["total_steps"] == CAP * PLANNED  # no clock on resume: the horizon it held
    lines = metrics(folder)
    assert [line["step"] for line in lines] == list(range(1, CAP * PLANNED + 1))
    later = schedule_values(cfg.train, CAP * PLANNED, np.arange(5, CAP * PLANNED))
    np.testing.assert_allclose([x["lr"] for x in lines[5:]], later, rtol=1e-5)


def test_end_within_is_checked_and_refused_where_it_cannot_hold(tmp_path):
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="train.end_within"):
            TrainConfig(end_within=bad)
    parent = tiny_run(steps=8, schedule="constant", checkpoint_every=4)
    train(parent, tmp_path / "parent", progress=False, keep_checkpoints=(4,))
    branch = tiny_run(steps=5, schedule="wsd", cooldown_fraction=0.2, end_within=30.0)
    with pytest.raises(UserError, match="does not go with a cool-down branch"):
        train(branch, tmp_path / "branch", progress=False, branch=(tmp_path / "parent", 4))


def test_train_end_within_from_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    sets = ("model.d=32", "model.n=1", "model.h=2", "model.w=64", "model.s=16", "train.batch_size=4", "train.steps=50",
            "train.log_every=1")  # fmt: skip
    tiny = [arg for item in sets for arg in ("--set", item)]
    assert main(["train", *tiny, "--end-within", "0.000001s", "--out", str(out), "--quiet"]) == 0
    assert f"ended on the clock (1e-06 s): {FIRST + 1} steps of 50 planned" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["config"]["train"]["end_within"] == 1e-6
    assert main(["train", *tiny, "--end-within", "1e9", "--out", str(tmp_path / "r2")]) == 2
    assert "give a duration" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--end-within", "5s"]) == 2
    assert "drop --set, --out and --end-within" in capsys.readouterr().err
