"""A run killed with SIGKILL (no chance to save or clean up) resumes to exactly the losses of an
uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from smallest_loss.model.runs import RunDir
from smallest_loss.model.train import train

from tests.model.conftest import assert_matches_reference, metrics, record_batches

ROOT = Path(__file__).resolve().parents[2]
KILL_AT = 47  # batch index: steps 1-47 logged, checkpoints at 20 and 40

# The child kills itself with SIGKILL when it asks for batch KILL_AT: mid-run, at a known step.
_CHILD = f"""
import os, signal, sys
import smallest_loss.model.train as train_mod
from tests.model.conftest import REFERENCE
real = train_mod.batch
def batch(tokens, seed, k, *args):
    if seed == REFERENCE.train.seed and k == {KILL_AT}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tokens, seed, k, *args)
train_mod.batch = batch
train_mod.train(REFERENCE, sys.argv[1], progress=False)
"""


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference_run, monkeypatch):
    killed = tmp_path / "killed"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(killed)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert not (killed / "summary.json").exists()
    assert [m["step"] for m in metrics(killed)] == list(range(1, KILL_AT + 1))
    assert RunDir.open(killed).status() == f"interrupted at step {KILL_AT}"  # no summary.json, yet not "not started"
    seen = record_batches(monkeypatch)
    train(None, killed, resume=True, progress=False)
    assert seen[0] == 40  # from the last checkpoint before the kill
    assert_matches_reference(killed, reference_run)  # steps 41-47, logged before the kill, are logged once
