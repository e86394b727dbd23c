"""`smallest-loss corpus`: a code-only copy of a folder of Python sources, and one clear line for bad input."""

from __future__ import annotations

import pytest
from smallest_loss.experiments.cli import main


def test_corpus_writes_a_code_only_copy(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text('"""Doc."""\nx = 1  # one\n')
    (source / "bad.py").write_text("def f(:\n")
    out = tmp_path / "code"
    assert main(["corpus", "--source", str(source), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 1 files" in printed and "bad.py" in printed and f"--set data.corpus={out}" in printed
    assert (out / "a.py").read_text() == "x = 1\n" and not (out / "bad.py").exists()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--source", "/does/not/exist"], "is not a folder"),
        (["--source", "."], "is not empty"),  # --out is the non-empty test folder itself
    ],
)
def test_corpus_refusals(argv, message, tmp_path, capsys, monkeypatch):
    (tmp_path / "x.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["corpus", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
