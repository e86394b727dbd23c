"""Training: the loss falls, runs resume exactly (after Ctrl-C, a damaged checkpoint or a metrics line cut
short; after SIGKILL in test_sigkill.py), and the run folder is complete. Divergence is tested from the
command line (tests/experiments/test_cli_train.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.runs import RunDir
from smallest_loss.model.train import make_schedule, train

from tests.conftest import tiny_run
from tests.model.conftest import REFERENCE, assert_matches_reference, metrics, record_batches


@pytest.mark.slow
def test_tiny_run_learns_and_writes_its_folder(reference_run):
    lines = metrics(reference_run)
    assert [line["step"] for line in lines] == list(range(1, 81))
    assert np.mean([x["train_loss"] for x in lines[-10:]]) < np.mean([x["train_loss"] for x in lines[:5]]) - 0.8
    summary = json.loads((reference_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_eval_loss"] < summary["val_unigram_entropy"]
    assert summary["steps"] == 80 and summary["diverged_step"] is None
    record = json.loads((reference_run / "config.json").read_text())
    assert record["corpus"]["fingerprint"] and record["packages"]["jax"] and record["device_kind"]
    assert sorted(p.name for p in (reference_run / "checkpoints").iterdir()) == ["60", "80"]


@pytest.mark.slow
def test_ctrl_c_saves_the_last_step_and_resume_matches_an_uninterrupted_run(tmp_path, monkeypatch, reference_run):
    folder = tmp_path / "run"
    record_batches(monkeypatch, stop_at=7, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        train(REFERENCE, folder, progress=False)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 7
    assert RunDir.open(folder).status() == "interrupted at step 7"
    seen = record_batches(monkeypatch)
    train(None, folder, resume=True, progress=False)
    assert seen[0] == 7  # from the checkpoint that Ctrl-C saved off schedule (checkpoints are every 20 steps)
    assert_matches_reference(folder, reference_run)


# Orbax's failed read leaves a callback for an event loop it has closed; Python reports it at exit (no effect).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_damaged_newest_checkpoint_falls_back_to_the_previous(
    killed_after_last_checkpoint, reference_run, monkeypatch, capsys
):
    folder = killed_after_last_checkpoint
    data = [p for p in (folder / "checkpoints" / "80").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data and (folder / "checkpoints" / "80" / "commit_success.txt").exists()
    for path in data:  # the data files go; the markers that say the checkpoint was committed stay
        path.unlink()
    seen = record_batches(monkeypatch)
    train(None, folder, resume=True, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step-80 checkpoint cannot be read" in err[0] and "resuming from step 60" in err[0]
    assert seen[0] == 60
    assert_matches_reference(folder, reference_run)


@pytest.mark.slow
def test_damaged_checkpoint_resume_from_the_cli_is_one_line(killed_after_last_checkpoint):
    """The same damage, resumed by the command as a user would: stderr holds the one line, no asyncio tracebacks."""
    folder = killed_after_last_checkpoint
    for path in (folder / "checkpoints" / "80").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.unlink()
    code = "from smallest_loss.experiments.cli import entry; entry()"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-c", code, "train", "--resume", str(folder), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "step-80 checkpoint cannot be read" in lines[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr


def test_metrics_line_cut_at_the_checkpoint_is_logged_again(
    killed_after_last_checkpoint, reference_run, monkeypatch, capsys
):
    folder = killed_after_last_checkpoint
    text = (folder / "metrics.jsonl").read_text()
    cut = text.rindex("{") + 20  # the step-80 line, cut in half (its checkpoint was saved)
    (folder / "metrics.jsonl").write_text(text[:cut])
    seen = record_batches(monkeypatch)
    train(None, folder, resume=True, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 80 of" in err[0] and "cut short" in err[0] and "resuming from step 60" in err[0]
    assert seen[0] == 60
    assert_matches_reference(folder, reference_run)


@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules(schedule):
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, schedule=schedule, min_lr_ratio=0.1, cooldown_fraction=0.2)
    lr = np.array([float(make_schedule(cfg, 100)(k)) for k in range(100)])
    assert lr[0] == 0.0 and lr[10] == pytest.approx(1.0, abs=1e-6)
    if schedule == "constant":
        assert np.all(lr[10:] == 1.0)
    elif schedule == "wsd":
        assert np.all(lr[10:80] == 1.0) and lr[99] == pytest.approx(0.1, abs=0.05) and np.all(np.diff(lr[80:]) < 0)
    else:
        assert np.all(np.diff(lr[10:]) <= 0) and lr[99] == pytest.approx(0.1, abs=0.01)


def test_a_version_1_run_folder_keeps_evaluating_at_its_own_batch(tmp_path):
    """Run folders written before train.eval_batch_size open with eval_batch_size 0: a resumed old run evaluates
    on the same batches as before, so its curve stays one measurement."""
    from smallest_loss.model.runs import RunDir

    run = RunDir.create(tmp_path / "old", REFERENCE, {}, {})
    record = json.loads((run.path / "config.json").read_text())
    assert record["schema_version"] == 2 and record["config"]["train"]["eval_batch_size"] == 16
    record["schema_version"] = 1
    del record["config"]["train"]["eval_batch_size"]
    (run.path / "config.json").write_text(json.dumps(record))
    assert RunDir.open(run.path).config.train.eval_batch_size == 0


@pytest.mark.slow
def test_eval_points_spread_evaluations_over_a_run_of_any_length(tmp_path):
    cfg = tiny_run(steps=12, eval_every=5, eval_points=4, checkpoint_every=0)  # every 12 // 4 = 3 steps, and 5's
    train(cfg, tmp_path / "run", progress=False)
    lines = metrics(tmp_path / "run")
    assert [x["step"] for x in lines if x.get("eval_loss") is not None] == [3, 5, 6, 9, 10, 12]
    assert all(np.isfinite(x["eval_loss"]) for x in lines if "eval_loss" in x)
