"""A run killed with SIGKILL (no chance to save or clean up) resumes to exactly the losses of an
uninterrupted run."""

from __future__ import annotations

import signal

from smallest_loss.model.runs import RunDir
from smallest_loss.model.train import train

from tests.model.conftest import assert_matches_reference, metrics, record_batches, run_killed_at

KILL_AT = 47  # batch index: steps 1-47 logged, checkpoints at 20 and 40


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, reference_run, monkeypatch):
    killed = tmp_path / "killed"
    done = run_killed_at("tests.model.conftest", "REFERENCE", KILL_AT, killed)  # mid-run, at a known step
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert not (killed / "summary.json").exists()
    assert [m["step"] for m in metrics(killed)] == list(range(1, KILL_AT + 1))
    assert RunDir.open(killed).status() == f"interrupted at step {KILL_AT}"  # no summary.json, yet not "not started"
    seen = record_batches(monkeypatch)
    train(None, killed, resume=True, progress=False)
    assert seen[0] == 40  # from the last checkpoint before the kill
    assert_matches_reference(killed, reference_run)  # steps 41-47, logged before the kill, are logged once
