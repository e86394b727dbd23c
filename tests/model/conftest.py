"""One trained run shared by the training tests: each resumes, crashes or damages a copy and must end
with exactly its metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import smallest_loss.model.train as train_mod
from smallest_loss.configs.schema import RunConfig
from smallest_loss.model.train import train

from tests.conftest import tiny_run

# Long enough to learn more than byte frequencies; checkpoints at 20, 40, 60, 80 (the last two kept).
REFERENCE: RunConfig = tiny_run(steps=80, batch_size=8, lr=1e-2, checkpoint_every=20, eval_every=40)


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


_REAL_BATCH = train_mod.batch


def record_batches(
    monkeypatch: pytest.MonkeyPatch, stop_at: int | None = None, error: type[BaseException] = RuntimeError
) -> list[int]:
    """Record which training batches a run asks for (not the evaluation batches, drawn with another seed);
    raise `error` when it asks for batch `stop_at`, as a crash or Ctrl-C at that step would."""
    seen: list[int] = []

    def batch(tokens, seed, k, *args):
        if seed == REFERENCE.train.seed:
            if k == stop_at:
                raise error("simulated")
            seen.append(k)
        return _REAL_BATCH(tokens, seed, k, *args)

    monkeypatch.setattr(train_mod, "batch", batch)
    return seen


def assert_matches_reference(folder: Path, reference_run: Path) -> None:
    """Every step logged exactly once, with the losses of the uninterrupted run, and the run completed."""
    got, want = metrics(folder), metrics(reference_run)
    assert [x["step"] for x in got] == list(range(1, REFERENCE.total_steps + 1))
    np.testing.assert_allclose([x["train_loss"] for x in got], [x["train_loss"] for x in want], atol=1e-5)
    assert got[-1]["eval_loss"] == pytest.approx(want[-1]["eval_loss"], abs=1e-5)
    assert json.loads((folder / "summary.json").read_text())["status"] == "completed"


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """REFERENCE trained without interruption (read-only: tests copy it before changing anything)."""
    folder = tmp_path_factory.mktemp("reference") / "run"
    train(REFERENCE, folder, progress=False)
    return folder


@pytest.fixture
def killed_after_last_checkpoint(reference_run: Path, tmp_path: Path) -> Path:
    """A copy of the reference run as if killed after its last checkpoint, before it wrote summary.json."""
    folder = tmp_path / "run"
    shutil.copytree(reference_run, folder)
    (folder / "summary.json").unlink()
    return folder


_KILLED_CHILD = """
import dataclasses, os, signal, sys
from pathlib import Path
import smallest_loss.model.train as train_mod
from {module} import {config}
real = train_mod.batch
def batch(tokens, seed, k, *args):
    if seed == {config}.train.seed and k == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tokens, seed, k, *args)
train_mod.batch = batch
# Batches built when their step needs them (train.prefetch=0), so the kill lands at a known step; the batches, and
# so the losses, are those of the reference run, which prefetches.
config = dataclasses.replace({config}, train=dataclasses.replace({config}.train, prefetch=0))
train_mod.train(config, sys.argv[1], progress=False{extra})
"""


def run_killed_at(
    module: str, config: str, kill_at: int, out: Path, *args: str, extra: str = ""
) -> subprocess.CompletedProcess:
    """Train `module.config` into `out` in a child process that SIGKILLs itself when it asks for batch `kill_at`
    (mid-run, at a known step, with no chance to save or clean up). `extra` is more arguments of the train call
    (Python text, which may read `args` as sys.argv[2:])."""
    code = _KILLED_CHILD.format(module=module, config=config, kill_at=kill_at, extra=extra)
    return subprocess.run(
        [sys.executable, "-c", code, str(out), *args],
        cwd=Path(__file__).resolve().parents[2],
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )
