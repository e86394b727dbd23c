"""Corpora and batches: deterministic batches and splits, user corpora, clear errors for bad ones."""

from __future__ import annotations

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import DataConfig
from smallest_loss.model.data import batch, check_fits, load_corpus, unigram_entropy


def test_stdlib_corpus_is_found_split_and_fingerprinted():
    corpus = load_corpus(DataConfig())
    assert corpus.n_files > 100 and corpus.vocab_size == 256
    assert corpus.train.size > 10 * corpus.val.size > 0
    assert len(corpus.fingerprint) == 16
    assert 2.0 < unigram_entropy(corpus.val, 256) < 5.5  # bytes of source code: far from uniform (5.55)


def test_batches_are_pure_functions_of_seed_and_step():
    tokens = np.arange(10_000) % 251
    a, b = batch(tokens, 3, 7, 4, 16), batch(tokens, 3, 7, 4, 16)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 17) and a.dtype == np.int32
    assert not np.array_equal(a, batch(tokens, 3, 8, 4, 16))
    assert not np.array_equal(a, batch(tokens, 4, 7, 4, 16))


def test_text_folder_split_by_file_is_deterministic(text_corpus):
    one, two = load_corpus(DataConfig(corpus=str(text_corpus))), load_corpus(DataConfig(corpus=str(text_corpus)))
    assert one.fingerprint == two.fingerprint and one.n_files == 40
    np.testing.assert_array_equal(one.val, two.val)
    assert one.val.size > 0 and one.train.size > 0
    (text_corpus / "f00.txt").write_text("changed")
    assert load_corpus(DataConfig(corpus=str(text_corpus))).fingerprint != one.fingerprint


def test_token_files(tmp_path):
    tokens = (np.arange(5000) * 7 % 1000).astype(np.uint16)
    np.save(tmp_path / "t.npy", tokens)
    tokens.tofile(tmp_path / "t.bin")
    for name in ("t.npy", "t.bin"):
        corpus = load_corpus(DataConfig(corpus=str(tmp_path / name), val_fraction=0.1))
        assert corpus.vocab_size == 1000 and corpus.train.size == 4500 and corpus.val.size == 500
        np.testing.assert_array_equal(np.concatenate([corpus.train, corpus.val]), tokens)
    with pytest.raises(UserError, match="set model.v >= 1000"):
        check_fits(corpus, 256, 16)


def test_bad_corpora(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_corpus(DataConfig(corpus=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no text files"):
        load_corpus(DataConfig(corpus=str(tmp_path / "empty")))
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_corpus(DataConfig(corpus=str(tmp_path / "blank.txt")))
    (tmp_path / "short.txt").write_text("x" * 30)
    with pytest.raises(UserError, match="fewer than one sequence"):
        check_fits(load_corpus(DataConfig(corpus=str(tmp_path / "short.txt"))), 256, 64)
