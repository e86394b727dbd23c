"""Corpora and batches: deterministic batches and splits, user corpora, the code-only variant, clear errors."""

from __future__ import annotations

import ast
import dataclasses
import re

import numpy as np
import pytest
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.models import get_preset
from smallest_loss.configs.overrides import apply_overrides
from smallest_loss.configs.schema import DataConfig
from smallest_loss.model import data as data_module
from smallest_loss.model.data import (
    _stdlib_corpus,
    batch,
    check_fits,
    corpus_load_seconds,
    load_corpus,
    python_sources,
    stdlib_files,
    strip_comments_and_docstrings,
    text_files,
    unigram_entropy,
    write_code_only,
)

PACKED = "4e8fc6c907f13743"  # the embedded corpus's fingerprint (CPython 3.11.7's library, split 0.05)


def test_stdlib_corpus_is_found_split_and_fingerprinted():
    corpus = load_corpus(DataConfig())
    assert corpus.n_files > 100 and corpus.vocab_size == 256
    assert corpus.train.size > 10 * corpus.val.size > 0
    assert len(corpus.fingerprint) == 16
    assert 2.0 < unigram_entropy(corpus.val, 256) < 5.5  # bytes of source code: far from uniform (5.55)


def test_the_embedded_corpus_is_the_packed_library_whatever_the_interpreter(monkeypatch):
    """The default corpus is read from the package's pack (CPython 3.11.7's library), never from the running
    interpreter's library: every Python trains the same text, whose fingerprint is the pack's."""
    monkeypatch.setattr(data_module, "stdlib_files", lambda: pytest.fail("read the interpreter's library"))
    corpus = _stdlib_corpus.__wrapped__(DataConfig.val_fraction)
    assert (corpus.fingerprint, corpus.n_files, corpus.train.size + corpus.val.size) == (PACKED, 1790, 31_528_800)


def test_pack_stdlib_packs_a_library_into_the_corpus_it_reads(tmp_path, monkeypatch):
    from smallest_loss.experiments.scripts import pack_stdlib

    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    for i in range(12):
        (root / ("pkg" if i % 2 else ".") / f"m{i:02d}.py").write_text(f"value_{i} = {i}\n")
    (root / "LICENSE.txt").write_text("licence\n")
    monkeypatch.setattr(data_module, "stdlib_files", lambda: (root, sorted(root.rglob("*.py"))))
    out = tmp_path / "corpora" / "pack.tar.xz"
    assert pack_stdlib.main(["--out", str(out)]) == 0  # the pack's corpus has the library's fingerprint
    first = out.read_bytes()
    assert (out.parent / "PYTHON-LICENSE.txt").read_text() == "licence\n"
    pack_stdlib.main(["--out", str(out)])
    assert out.read_bytes() == first  # the same library packs into the same bytes


def test_a_corpus_load_is_timed_as_a_new_process_loads_it(text_corpus):
    # The standard library's corpus read again, not served from this process's cache, and the cache left as it was.
    before = _stdlib_corpus.cache_info()
    assert corpus_load_seconds(DataConfig()) > 0
    after = _stdlib_corpus.cache_info()
    assert (after.hits, after.misses, after.currsize) == (before.hits, before.misses, before.currsize)
    # The extra validation sets are loaded too: a missing one is refused as the run would refuse it.
    folder = DataConfig(corpus=str(text_corpus))
    assert corpus_load_seconds(folder) > 0
    with pytest.raises(UserError, match="does not exist"):
        corpus_load_seconds(dataclasses.replace(folder, eval_sets=(str(text_corpus / "missing"),)))


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


SOURCE = '''"""Module docstring."""
# a comment line
import os  # a trailing comment


def f(x):
    """A docstring
    over two lines."""
    s = "# a hash in a string"

    return x  # the result


class A:
    "a docstring alone: the block gets pass"


def g():
    """docstring"""  # and a comment
    "a string used as a comment"
'''

CODE_ONLY = """import os


def f(x):
    s = "# a hash in a string"

    return x


class A:
    pass


def g():
    pass
"""


def test_code_only_strips_comments_and_docstrings():
    assert strip_comments_and_docstrings(SOURCE) == CODE_ONLY
    with pytest.raises(SyntaxError):
        strip_comments_and_docstrings("def f(:\n")


def _without_string_statements(source: str) -> str:
    """The syntax tree of `source` less its string-only statements (an emptied block holding `pass`), by
    `ast`, independently of the `tokenize`-based stripping under test."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if not isinstance(body, list) or not body or not isinstance(body[0], ast.stmt):
                continue
            kept = [
                s
                for s in body
                if not (
                    isinstance(s, ast.Expr)
                    and isinstance(s.value, ast.JoinedStr | ast.Constant)
                    and isinstance(getattr(s.value, "value", ""), str | bytes)
                )
            ]
            setattr(node, name, kept or ([] if isinstance(node, ast.Module) else [ast.Pass()]))
    return ast.dump(tree)


def test_code_only_keeps_the_code_of_real_sources():
    """On a sample of the standard library, stripping changes the syntax tree by the strings alone."""
    root, files = stdlib_files()
    for path in files[::300]:
        source = path.read_text(encoding="utf-8", errors="replace")
        try:
            want = _without_string_statements(source)
        except SyntaxError:
            continue
        assert _without_string_statements(strip_comments_and_docstrings(source)) == want, path


def test_code_only_folder_keeps_file_names_and_split(tmp_path):
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    for i in range(30):
        (source / "pkg" / f"m{i:02d}.py").write_text(f'"""Doc {i}."""\nvalue_{i:02d} = {i}  # note {i}\n')
    (source / "broken.py").write_text("def f(:\n")
    stats = write_code_only(python_sources(str(source)), tmp_path / "one")
    assert stats["files"] == 30 and stats["left_out"] == ["broken.py"] and stats["bytes_after"] < stats["bytes_before"]
    assert (tmp_path / "one" / "pkg" / "m07.py").read_text() == "value_07 = 7\n"
    write_code_only(python_sources(str(source)), tmp_path / "two")
    split = DataConfig(str(tmp_path / "one"), val_fraction=0.3)
    one, two = load_corpus(split), load_corpus(dataclasses.replace(split, corpus=str(tmp_path / "two")))
    assert one.fingerprint == two.fingerprint  # deterministic
    full = load_corpus(dataclasses.replace(split, corpus=str(source)))
    names = [{m for m in re.findall(rb"value_\d\d", c.val.tobytes())} for c in (one, full)]
    assert names[0] == names[1] and names[0]  # the same files held out
    assert b"#" not in one.train.tobytes() + one.val.tobytes() and b"Doc" not in one.train.tobytes()
    with pytest.raises(UserError, match="is not empty"):
        write_code_only(python_sources(str(source)), tmp_path / "one")
    with pytest.raises(UserError, match="not a folder"):
        python_sources(str(tmp_path / "missing"))


def test_every_run_evaluates_on_the_same_sample_whatever_its_batch_and_seed():
    """train.eval_batch_size: the evaluation batches do not depend on the run's batch size or seed (legacy 0 does)."""
    from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig
    from smallest_loss.model.train import eval_batch

    val = np.arange(5000) % 251

    def cfg(**train):
        return RunConfig(model=ModelConfig(v=256, d=32, n=1, h=2, s=16), train=TrainConfig(**train))

    a, b = cfg(batch_size=4, seed=0), cfg(batch_size=8, seed=3)
    for k in range(3):
        np.testing.assert_array_equal(eval_batch(val, a, k), eval_batch(val, b, k))
        assert eval_batch(val, a, k).shape == (16, 17)
    legacy = [cfg(batch_size=4, seed=0, eval_batch_size=0), cfg(batch_size=8, seed=3, eval_batch_size=0)]
    assert eval_batch(val, legacy[0], 0).shape == (4, 17) and eval_batch(val, legacy[1], 0).shape == (8, 17)


def test_corpus_folder_reads_text_files_by_extension_only(tmp_path):
    folder, outside = tmp_path / "corpus", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("secret text outside the folder\n" * 50)
    (folder / "a.txt").write_text("hello world\n" * 50)
    (folder / "notes.MD").write_text("# notes\n" * 50)
    (folder / "id_rsa").write_text("no extension: never read\n")
    (folder / "program.txt").write_bytes(b"\x7fELF\x00\x01binary" * 20)  # a binary file with a text extension
    (folder / "link.txt").symlink_to(outside)  # a symlink that leaves the folder
    (folder / "inside.txt").symlink_to(folder / "a.txt")  # one that stays inside is a file of the folder
    names = [p.name for p in text_files(folder, DataConfig().extensions)]
    assert names == ["a.txt", "inside.txt", "notes.MD"]
    corpus = load_corpus(DataConfig(corpus=str(folder), extensions=(".md",)))
    assert corpus.n_files == 1
    with pytest.raises(UserError, match=r"no text files with the extensions \.csv .*data\.extensions"):
        load_corpus(DataConfig(corpus=str(folder), extensions=(".csv",)))


def test_special_and_binary_files_are_refused_in_one_line(tmp_path):
    with pytest.raises(UserError, match="not a regular file or folder"):
        load_corpus(DataConfig(corpus="/dev/zero"))
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(UserError, match="is binary, not text"):
        load_corpus(DataConfig(corpus=str(binary)))
    with pytest.raises(UserError, match="data.extensions"):
        DataConfig(extensions=("txt",))
    assert apply_overrides(get_preset("tiny"), ["data.extensions=.TXT,.md"]).data.extensions == (".txt", ".md")
