"""Extra validation sets (data.eval_sets): evaluated on their validation split at every evaluation, logged
per set, summarised, fingerprinted in config.json, kept across a resume, and refused when unusable."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import DataConfig, RunConfig
from smallest_loss.model.data import load_corpus
from smallest_loss.model.train import train

from tests.conftest import tiny_run
from tests.model.conftest import metrics, record_batches

SPLIT = 0.25  # validation share: several of the 40 files of each corpus


def _folder(root: Path, text: str) -> Path:
    root.mkdir()
    for i in range(40):
        (root / f"f{i:02d}.txt").write_text(f"{i:02d} " + text * 12)
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Training text; a copy of it with one more file that falls in the training split (so the copy's
    validation tokens are the training corpus's, under another fingerprint); and digits, never trained on."""
    root = tmp_path_factory.mktemp("corpora")
    train_text = _folder(root / "fox", "the quick brown fox jumps over the lazy dog. ")
    copy = root / "copy"
    shutil.copytree(train_text, copy)
    (copy / "added.txt").write_text("an extra training file. " * 20)
    return dict(train=train_text, copy=copy, digits=_folder(root / "digits", "3141592653 5897932384 "))


def _config(corpora: dict[str, Path]) -> RunConfig:
    cfg = tiny_run(str(corpora["train"]), steps=12, lr=1e-2, eval_every=6, checkpoint_every=4)
    return dataclasses.replace(
        cfg,
        data=DataConfig(str(corpora["train"]), SPLIT, eval_sets=(f"same={corpora['copy']}", str(corpora["digits"]))),
    )


@pytest.fixture(scope="module")
def run(corpora: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("eval-sets") / "run"
    train(_config(corpora), folder, progress=False)
    return folder


def test_the_copy_holds_the_training_validation_tokens(corpora):
    """The precondition of the next test: only the fingerprint differs."""
    one, two = (load_corpus(DataConfig(str(corpora[name]), SPLIT)) for name in ("train", "copy"))
    np.testing.assert_array_equal(one.val, two.val)
    assert one.fingerprint != two.fingerprint


@pytest.mark.slow
def test_each_set_is_evaluated_logged_and_summarised(run, corpora):
    lines = metrics(run)
    evaluated = [line for line in lines if "eval_loss" in line]
    assert [line["step"] for line in evaluated] == [6, 12]
    assert all("eval_losses" not in line for line in lines if "eval_loss" not in line)
    for line in evaluated:
        losses = line["eval_losses"]
        assert set(losses) == {"same", "digits"}
        # The same validation tokens and batches, evaluated through the eval set's own path.
        assert losses["same"] == pytest.approx(line["eval_loss"], abs=1e-5)
    # Digits never appear in the training text: once the model has learnt its letters, they cost more.
    assert evaluated[-1]["eval_losses"]["digits"] > evaluated[-1]["eval_loss"] + 0.1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_eval_losses"] == evaluated[-1]["eval_losses"]
    record = json.loads((run / "config.json").read_text())
    assert set(record["eval_sets"]) == {"same", "digits"}
    digits = load_corpus(DataConfig(str(corpora["digits"]), SPLIT))
    assert record["eval_sets"]["digits"]["fingerprint"] == digits.fingerprint
    assert record["config"]["data"]["eval_sets"] == [f"same={corpora['copy']}", str(corpora["digits"])]


@pytest.mark.slow
def test_resume_keeps_the_sets_and_refuses_a_changed_one(run, corpora, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    record_batches(monkeypatch, stop_at=9, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        train(_config(corpora), folder, progress=False)
    monkeypatch.undo()
    digits = corpora["digits"] / "f00.txt"
    original = digits.read_text()
    digits.write_text(original + "7")
    try:
        with pytest.raises(UserError, match="validation set digits .* changed"):
            train(None, folder, resume=True, progress=False)
    finally:
        digits.write_text(original)
    train(None, folder, resume=True, progress=False)
    got, want = metrics(folder)[-1]["eval_losses"], metrics(run)[-1]["eval_losses"]
    assert got == pytest.approx(want, abs=1e-5)


def test_unusable_sets_are_refused_before_training(corpora, tmp_path):
    cfg = _config(corpora)
    missing = dataclasses.replace(cfg, data=DataConfig(str(corpora["train"]), eval_sets=(str(tmp_path / "gone"),)))
    with pytest.raises(UserError, match="data.eval_sets gone: corpus path .* does not exist"):
        train(missing, tmp_path / "a", progress=False)
    np.save(tmp_path / "wide.npy", np.arange(2000) % 1000)
    wide = dataclasses.replace(cfg, data=DataConfig(str(corpora["train"]), eval_sets=(str(tmp_path / "wide.npy"),)))
    with pytest.raises(UserError, match="data.eval_sets wide: .* set model.v >= 1000"):
        train(wide, tmp_path / "b", progress=False)
    assert not (tmp_path / "a" / "config.json").exists() and not (tmp_path / "b" / "config.json").exists()
    with pytest.raises(UserError, match="two sets are named 'x'"):
        DataConfig(eval_sets=("a/x.txt", "b/x.npy"))
    with pytest.raises(UserError, match="names no corpus"):
        DataConfig(eval_sets=("x=",))


def test_sets_from_the_command_line_and_config_json():
    cfg = apply_overrides(RunConfig(), ["data.eval_sets=code=corpora/code, stdlib,tokens/web.npy"])
    assert cfg.data.named_eval_sets == {"code": "corpora/code", "stdlib": "stdlib", "web": "tokens/web.npy"}
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # JSON holds a list
    assert hash(cfg) == hash(RunConfig.from_dict(cfg.to_dict()))
    assert apply_overrides(cfg, ["data.eval_sets="]).data.eval_sets == ()
