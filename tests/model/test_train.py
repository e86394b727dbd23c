"""Training: the loss falls, runs resume exactly, divergence is caught, the run folder is complete."""

from __future__ import annotations

import json

import numpy as np
import pytest
import smallest_loss.model.train as train_mod
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.train import RunDiverged, make_schedule, train

from tests.conftest import tiny_run


def _losses(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_learns_and_writes_its_folder(tmp_path):
    summary = train(tiny_run(steps=80, lr=1e-2, eval_every=40), tmp_path / "run", progress=False)
    lines = _losses(tmp_path / "run")
    assert [line["step"] for line in lines] == list(range(1, 81))
    assert np.mean([x["train_loss"] for x in lines[-10:]]) < np.mean([x["train_loss"] for x in lines[:5]]) - 0.8
    assert summary["status"] == "completed" and summary["final_eval_loss"] < summary["val_unigram_entropy"]
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["corpus"]["fingerprint"] and record["packages"]["jax"] and record["device_kind"]
    assert (tmp_path / "run" / "checkpoints").is_dir()


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    config = tiny_run(steps=20, checkpoint_every=5)
    train(config, tmp_path / "whole", progress=False)

    real_batch = train_mod.batch

    def crash_at_step_13(tokens, seed, k, *args):
        if k == 13:  # a crash (not Ctrl-C): metrics of steps 11-13 were written after the step-10 checkpoint
            raise RuntimeError("simulated crash")
        return real_batch(tokens, seed, k, *args)

    monkeypatch.setattr(train_mod, "batch", crash_at_step_13)
    with pytest.raises(RuntimeError):
        train(config, tmp_path / "split", progress=False)
    assert _losses(tmp_path / "split")[-1]["step"] == 13
    seen = []
    record = lambda tokens, seed, k, *a: seen.append((seed, k)) or real_batch(tokens, seed, k, *a)
    monkeypatch.setattr(train_mod, "batch", record)
    train(None, tmp_path / "split", resume=True, progress=False)
    assert min(k for seed, k in seen if seed == 0) == 10  # restored from the step-10 checkpoint

    whole, split = _losses(tmp_path / "whole"), _losses(tmp_path / "split")
    assert [x["step"] for x in split] == list(range(1, 21))  # nothing lost, nothing duplicated
    np.testing.assert_allclose([x["train_loss"] for x in split], [x["train_loss"] for x in whole], atol=1e-5)
    assert split[-1]["eval_loss"] == pytest.approx(whole[-1]["eval_loss"], abs=1e-5)


def test_ctrl_c_saves_the_last_step(tmp_path, monkeypatch):
    real_batch = train_mod.batch

    def interrupt_at_step_7(tokens, seed, k, *args):
        if k == 7:
            raise KeyboardInterrupt
        return real_batch(tokens, seed, k, *args)

    monkeypatch.setattr(train_mod, "batch", interrupt_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_run(steps=12, checkpoint_every=100), tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["steps"] == 7
    monkeypatch.setattr(train_mod, "batch", real_batch)
    assert train(None, tmp_path / "run", resume=True, progress=False)["steps"] == 12


def test_divergence_stops_the_run_and_keeps_metrics(tmp_path):
    with pytest.raises(RunDiverged, match="diverged"):
        train(tiny_run(steps=30, lr=1e6, warmup_steps=0, grad_clip=0.0), tmp_path / "run", progress=False)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["steps"] >= 1


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
