"""A run killed with SIGKILL (no chance to save) resumes to exactly the losses of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from smallest_loss.model.train import train

from tests.conftest import TINY_MODEL, tiny_run

ROOT = Path(__file__).resolve().parents[2]
STEPS = 1500


def _sets(config) -> list[str]:
    out = []
    for section in ("model", "train"):
        for key, value in getattr(config, section).__dict__.items():
            out += ["--set", f"{section}.{key}={value}"]
    return out


def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    config = tiny_run(steps=STEPS, checkpoint_every=100, eval_every=500)
    assert config.model == TINY_MODEL
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "smallest_loss.experiments.cli", "train", *_sets(config), "--out", str(killed),
           "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 450:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines_at_kill = len(metrics.read_text().splitlines())
    assert lines_at_kill < STEPS
    train(None, killed, resume=True, progress=False)
    train(config, tmp_path / "whole", progress=False)

    def losses(folder):
        return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]

    resumed, whole = losses(killed), losses(tmp_path / "whole")
    assert [m["step"] for m in resumed] == list(range(1, STEPS + 1))  # nothing lost, nothing duplicated
    np.testing.assert_allclose([m["train_loss"] for m in resumed], [m["train_loss"] for m in whole], atol=1e-5)
