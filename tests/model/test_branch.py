"""Cool-down branches (Hagele et al., 2024): a branch starts from its parent's checkpoint, decays with its own
shape, and a branch killed with SIGKILL resumes to the losses of an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import TrainConfig
from smallest_loss.model.train import make_schedule, train

from tests.conftest import tiny_run
from tests.model.conftest import metrics, run_killed_at

PARENT = tiny_run(
    steps=30, batch_size=4, lr=1e-2, warmup_steps=3, schedule="constant", eval_every=0, checkpoint_every=0
)
BRANCH_AT, COOL = 20, 10  # the branch trains steps 21-30, a 1-sqrt cool-down
BRANCH = dataclasses.replace(
    PARENT,
    train=dataclasses.replace(
        PARENT.train,
        schedule="wsd",
        steps=BRANCH_AT + COOL,
        cooldown_fraction=COOL / (BRANCH_AT + COOL),
        decay="1-sqrt",
        checkpoint_every=5,
    ),
)
KILL_AT = 27  # batch index: the branch's steps 21-27 logged, its checkpoint at 25


@pytest.mark.parametrize("decay", ["linear", "1-sqrt"])
def test_wsd_decay_shapes(decay):
    cfg = TrainConfig(
        steps=100, lr=2.0, min_lr_ratio=0.1, warmup_steps=10, schedule="wsd", cooldown_fraction=0.2, decay=decay
    )
    lr = np.asarray(make_schedule(cfg, 100)(np.arange(100)))
    assert lr[5] == pytest.approx(1.0) and np.allclose(lr[10:81], 2.0)
    t = np.arange(81, 100) - 80  # steps into the 20-step cool-down
    want = 0.2 + 1.8 * (1 - t / 20 if decay == "linear" else 1 - np.sqrt(t / 20))
    np.testing.assert_allclose(lr[81:], want, rtol=1e-6)


@pytest.fixture(scope="module")
def parent_and_branch(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("branch")
    train(PARENT, root / "parent", progress=False, keep_checkpoints=(BRANCH_AT,))
    train(BRANCH, root / "branch", progress=False, branch=(root / "parent", BRANCH_AT))
    return root / "parent", root / "branch"


@pytest.mark.slow
def test_branch_shares_parent_steps_then_decays(parent_and_branch):
    parent, branch = parent_and_branch
    p, b = metrics(parent), metrics(branch)
    assert [x["step"] for x in b] == list(range(1, 31))
    assert b[:BRANCH_AT] == p[:BRANCH_AT]  # the parent's lines, copied
    assert b[BRANCH_AT]["train_loss"] == pytest.approx(p[BRANCH_AT]["train_loss"], abs=1e-5)  # same state at 20
    assert b[-1]["lr"] < 0.5 * p[-1]["lr"]
    assert json.loads((branch / "config.json").read_text())["branch"] == dict(parent="../parent", step=BRANCH_AT)
    assert BRANCH_AT in [int(x.name) for x in (parent / "checkpoints").iterdir() if x.name.isdigit()]


@pytest.mark.slow
def test_branch_killed_resumes_to_uninterrupted_losses(parent_and_branch, tmp_path):
    parent, branch = parent_and_branch
    killed = tmp_path / "killed"
    done = run_killed_at(
        "tests.model.test_branch",
        "BRANCH",
        KILL_AT,
        killed,
        str(parent),
        extra=f", branch=(Path(sys.argv[2]), {BRANCH_AT})",
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert len(metrics(killed)) == KILL_AT
    train(None, killed, resume=True, progress=False)
    got, want = metrics(killed), metrics(branch)
    assert [x["step"] for x in got] == list(range(1, 31))
    np.testing.assert_allclose([x["train_loss"] for x in got], [x["train_loss"] for x in want], atol=1e-5)
    assert got[-1]["eval_loss"] == pytest.approx(want[-1]["eval_loss"], abs=1e-5)


@pytest.mark.slow
def test_branch_without_parent_is_one_line(tmp_path, parent_and_branch):
    with pytest.raises(UserError, match="parent run .* is missing"):
        train(BRANCH, tmp_path / "b", progress=False, branch=(tmp_path / "nowhere", BRANCH_AT))
    with pytest.raises(UserError, match=r"no checkpoint at step 10 \(completed\); its checkpoint there is gone"):
        train(
            dataclasses.replace(BRANCH, train=dataclasses.replace(BRANCH.train, steps=20, cooldown_fraction=0.5)),
            tmp_path / "c",
            progress=False,
            branch=(parent_and_branch[0], 10),
        )
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
