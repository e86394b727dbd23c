"""`smallest-loss train` from the command line: the happy path and one clear line for each bad input."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import smallest_loss.model.train as train_mod
from smallest_loss.experiments.cli import main
from smallest_loss.model.runs import RunDir

TINY = [
    "--set",
    "model.d=32",
    "--set",
    "model.n=1",
    "--set",
    "model.h=2",
    "--set",
    "model.w=64",
    "--set",
    "model.s=16",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.steps=6",
    "--set",
    "train.eval_every=3",
    "--set",
    "train.warmup_steps=1",
]


@pytest.mark.slow
def test_train_and_resume_from_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", *TINY, "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"run folder: {out}" in printed and "final eval loss" in printed and "unigram entropy" in printed
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # a finished run: nothing to do


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--set", "model.zz=1"], "unknown key 'zz'"),
        (["train", "--set", "model.d=abc"], "expected an integer"),
        (["train", "--set", "model.d=102"], "model.d=102 is not divisible by model.h=4"),
        (["train", "--set", "model.d=-4"], "model.d=-4 must be positive"),
        (["train", "--set", "train.lr=0"], "train.lr=0.0 must be positive"),
        (["train", "--set", "data.corpus=/does/not/exist"], "does not exist"),
        (["train", "--resume", "."], "is not a run folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_empty_corpus_folder(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    assert main(["train", "--set", f"data.corpus={tmp_path / 'c'}", "--out", str(tmp_path / "r")]) == 2
    assert "holds no text files" in capsys.readouterr().err


def _one_error_line(capsys, message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def _unwritable(tmp_path: Path) -> Path:
    """A folder in which no run folder can be made: read-only for a normal user; /sys for root."""
    if os.geteuid() != 0:
        (tmp_path / "locked").mkdir(mode=0o500)
        return tmp_path / "locked" / "run"
    if not Path("/sys").is_dir():
        pytest.skip("running as root without /sys: no folder here is unwritable")
    return Path("/sys/smallest-loss-test/run")


@pytest.mark.parametrize(
    "where,message",
    [
        ("onto_file", "is a file, not a folder"),
        ("under_file", "is a file, not a folder"),
        ("unwritable", "cannot write run folder"),
    ],
)
def test_bad_out_is_one_line_before_any_slow_work(where, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    out = {
        "onto_file": tmp_path / "file",
        "under_file": tmp_path / "file" / "sub" / "run",
        "unwritable": _unwritable(tmp_path),
    }[where]
    monkeypatch.setattr(train_mod, "load_corpus", lambda cfg: pytest.fail("corpus loaded before --out was checked"))
    assert main(["train", *TINY, "--out", str(out), "--quiet"]) == 2
    _one_error_line(capsys, message)


@pytest.mark.slow
def test_diverged_run_is_strict_json_and_cannot_resume(tmp_path, capsys):
    out = tmp_path / "r"
    argv = [
        "train",
        *TINY,
        "--set",
        "train.lr=1e6",
        "--set",
        "train.grad_clip=0",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.log_every=6",
    ]  # one host sync, at step 6: the loss is NaN well before it
    assert main([*argv, "--out", str(out), "--quiet"]) == 1
    assert "diverged" in capsys.readouterr().err

    def reject(constant):
        raise ValueError(f"{constant} is not JSON")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=reject)
    lines = [json.loads(line, parse_constant=reject) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert summary["status"] == "diverged" and 1 <= summary["diverged_step"] <= 6
    assert summary["steps"] == len(lines) == summary["diverged_step"] - 1  # only the steps before the NaN
    assert all(math.isfinite(line["train_loss"]) for line in lines)
    assert RunDir.open(out).status() == f"diverged at step {summary['diverged_step']}"

    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    _one_error_line(capsys, "cannot be resumed (it would diverge again)")
