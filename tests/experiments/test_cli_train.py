"""`smallest-loss train` from the command line: the happy path and one clear line for each bad input."""

from __future__ import annotations

import json

import pytest
from smallest_loss.experiments.cli import main

TINY = ["--set", "model.d=32", "--set", "model.n=1", "--set", "model.h=2", "--set", "model.w=64",
        "--set", "model.s=16", "--set", "train.batch_size=4", "--set", "train.steps=6",
        "--set", "train.eval_every=3", "--set", "train.warmup_steps=1"]


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


def test_diverged_run_exits_1(tmp_path, capsys):
    argv = ["train", *TINY, "--set", "train.lr=1e6", "--set", "train.grad_clip=0", "--set", "train.warmup_steps=0"]
    assert main([*argv, "--out", str(tmp_path / "r"), "--quiet"]) == 1
    assert "diverged" in capsys.readouterr().err
