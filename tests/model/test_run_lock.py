"""One writer per run folder: a second writer is refused in one line naming the holder, a killed holder leaves no
stale lock, and a second sweep worker skips the runs another holds. Real processes, not threads: the lock is an
OS lock that belongs to a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.model.runs import LOCK_FILE, RunLocked, hold_run

TINY = [
    "model.d=32",
    "model.n=1",
    "model.h=2",
    "model.w=64",
    "model.s=16",
    "train.batch_size=4",
    "train.warmup_steps=1",
]
CLI = [sys.executable, "-c", "from smallest_loss.experiments.cli import entry; entry()"]

HOLD = """
import sys, time
from smallest_loss.model.runs import hold_run
with hold_run(sys.argv[1], create=True):
    print("held", flush=True)
    time.sleep(120)
"""


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", SMALLEST_LOSS_XLA_CACHE="off")
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _holder(folder: Path) -> subprocess.Popen:
    """A process that holds `folder`'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _set(*assignments: str) -> list[str]:
    return [x for a in assignments for x in ("--set", a)]


def test_second_writer_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        with pytest.raises(RunLocked, match=rf"being written by another process \(pid {holder.pid} on "):
            with hold_run(folder, create=True):
                pass
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with hold_run(folder, create=True):  # the lock died with its process
        assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert issubclass(RunLocked, UserError)


@pytest.mark.slow
def test_resume_while_another_process_writes_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    first = _cli("train", "--preset", "tiny", *_set(*TINY, "train.steps=6"), "--out", str(out), "--quiet")
    assert first.wait(timeout=300) == 0
    before = (out / "metrics.jsonl").read_text()
    holder = _holder(out)
    try:
        second = _cli("train", "--resume", str(out))
        _, err = second.communicate(timeout=300)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert second.returncode == 2
    assert err.count("\n") == 1 and f"pid {holder.pid}" in err and "Traceback" not in err
    assert (out / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_two_identical_sweep_workers_train_each_run_once(tmp_path):
    out, design = tmp_path / "sweep", tmp_path / "three.toml"
    design.write_text('base = "tiny-isoflop"\nbudgets = [2e9]\nshapes = [[16, 1, 2], [24, 1, 2], [32, 1, 2]]\n')
    workers = [_cli("sweep", "--design", str(design), "--out", str(out), "--quiet") for _ in range(2)]
    results = [w.communicate(timeout=900) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], results
    runs = sorted(p.parent for p in out.glob("*/config.json"))
    assert runs
    for run in runs:
        steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        config = json.loads((run / "config.json").read_text())["config"]
        summary = json.loads((run / "summary.json").read_text())
        assert steps == list(range(1, len(steps) + 1)) and summary["status"] == "completed"
        assert summary["steps"] == len(steps) == config["train"]["steps"]
