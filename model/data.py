"""Corpora, tokens and batches.

The embedded default corpus ("stdlib") is the Python standard library's own source: the `.py` files of CPython
3.11.7's, shipped with the package (`model/corpora/`, 4.6 MB compressed), so that every machine and every
interpreter trains the same text (the running interpreter's own library differs from one Python release to the
next, and so did the losses and laws fitted on it). No download. Text is tokenised as bytes (v = 256). Users may
bring a text file, a folder of text files, or a token file (`.npy`, or raw little-endian `uint16` `.bin`).

Text corpora are split by file (a file's validation membership is a hash of its relative path, so the
split does not depend on which other files exist); token files are split by position (the last
`val_fraction` of tokens). Every corpus has a fingerprint (SHA-256 of its content and split) recorded
in each run. Batch k of a run is a pure function of (seed, k): resumed runs see the same batches.

A run may evaluate on extra validation sets (`data.eval_sets`): each one's validation split, found by
the same rule, so a variant of the training corpus that keeps its file names (such as the code-only copy
that `write_code_only` makes) holds out the same files and its validation text was never trained on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import sysconfig
import tarfile
import time
import tokenize
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import DataConfig

_SNIFF_BYTES = 8192  # a file is binary when these first bytes hold a NUL
_FILE_SEPARATOR = b"\n\n"
# The embedded corpus: CPython 3.11.7's standard-library `.py` files in `stdlib_files` order, each at its path
# relative to the library's folder (experiments/scripts/pack_stdlib.py made it; PYTHON-LICENSE.txt beside it)
STDLIB_PACK = Path(__file__).parent / "corpora" / "stdlib-3.11.7.tar.xz"
Sources = Iterable[tuple[str, bytes]]  # a text corpus's files: (path relative to its folder, bytes), in order


@dataclasses.dataclass(frozen=True)
class Corpus:
    """Train and validation tokens of one corpus, with its provenance."""

    name: str
    train: np.ndarray  # 1-D integer tokens
    val: np.ndarray
    vocab_size: int  # smallest vocabulary that holds every token
    fingerprint: str
    n_files: int

    def describe(self) -> dict:
        return dict(
            name=self.name,
            fingerprint=self.fingerprint,
            files=self.n_files,
            train_tokens=int(self.train.size),
            val_tokens=int(self.val.size),
            vocab_size=self.vocab_size,
        )


THIRD_PARTY_FOLDERS = ("site-packages", "dist-packages")


def stdlib_sources() -> list[tuple[str, bytes]]:
    """The embedded corpus's files (`STDLIB_PACK`): (path relative to the library's folder, bytes), in order."""
    if not STDLIB_PACK.is_file():
        raise UserError(f"the embedded corpus {STDLIB_PACK} is missing from this installation; reinstall the package")
    with tarfile.open(STDLIB_PACK, "r:xz") as tar:
        return [(member.name, tar.extractfile(member).read()) for member in tar if member.isfile()]


def stdlib_files() -> tuple[Path, list[Path]]:
    """The running interpreter's standard-library `.py` files (third-party packages excluded): what
    experiments/scripts/pack_stdlib.py packs into the embedded corpus."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    # A walk that never enters the third-party folders: the interpreter's own site-packages lies under the stdlib
    # folder, and listing it (jax and its kin) took 8 of a run's 9 seconds of corpus loading. Folders behind
    # symbolic links are not entered, as `Path.rglob` does not enter them.
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in THIRD_PARTY_FOLDERS]
        files.extend(Path(folder, name) for name in names if name.endswith(".py"))
    return root, sorted(path for path in files if path.is_file())


def python_sources(source: str) -> Sources:
    """The `.py` files of "stdlib" (the embedded corpus, `stdlib_sources`) or of a folder (sorted), each (path
    relative to its folder, bytes)."""
    if source == "stdlib":
        return stdlib_sources()
    root = Path(source).expanduser()
    if not root.is_dir():
        raise UserError(f"--source {source!r} is not a folder; use 'stdlib' or a folder of .py files")
    files = sorted(p for p in root.rglob("*.py") if p.is_file())
    if not files:
        raise UserError(f"--source {source!r} holds no .py files")
    return file_sources(root, files)


def file_sources(root: Path, files: list[Path]) -> Iterator[tuple[str, bytes]]:
    """Each file's (path relative to `root`, or its name where it is `root`, bytes), read as it is reached."""
    for path in files:
        yield (path.relative_to(root).as_posix() if path != root else path.name), path.read_bytes()


_SKIPPED = (tokenize.NL, tokenize.COMMENT)  # neither starts nor ends a statement
_CUT = "\0"  # marks where text was cut (Python source cannot hold NUL)


def _string_statements(tokens: list[tokenize.TokenInfo]) -> list[tuple[tuple[int, int], tuple[int, int], str]]:
    """(start, end, replacement) of every statement that is only a string: docstrings, and strings used as
    comments. The replacement is `pass` where removing the string would leave its block empty."""
    cuts, empty, previous, i = [], [False], tokenize.NEWLINE, 0  # empty[-1]: no statement kept in this block
    while i < len(tokens):
        tok = tokens[i]
        if tok.type in _SKIPPED:
            i += 1
            continue
        if tok.type == tokenize.INDENT:
            empty.append(True)
        elif tok.type == tokenize.DEDENT:
            empty.pop()
        elif previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):  # a statement starts here
            j, last = i, None
            while tokens[j].type in (tokenize.STRING, tokenize.COMMENT):  # "a" "b" # c: one statement
                last = tokens[j] if tokens[j].type == tokenize.STRING else last
                j += 1
            if last and tokens[j].type == tokenize.NEWLINE:
                following = next(t.type for t in tokens[j + 1 :] if t.type not in _SKIPPED)
                fill = "pass" if empty[-1] and following == tokenize.DEDENT else ""
                cuts.append((tok.start, last.end, fill))
                empty[-1] = empty[-1] and not fill
                previous, i = tokenize.NEWLINE, j + 1
                continue
            empty[-1] = False
        previous, i = tok.type, i + 1
    return cuts


def strip_comments_and_docstrings(source: str) -> str:
    """Python source with its comments and string-only statements (docstrings) removed: the code alone.

    Found with the `tokenize` module, so a `#` or triple quote inside a string is left alone. A line that the
    removal empties is dropped (other blank lines stay); a block left empty gets `pass`, so the result
    parses to the same syntax tree less those strings. Raises `SyntaxError` on text that is not Python.
    """
    if _CUT in source:
        raise SyntaxError("source holds a NUL character")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except tokenize.TokenError as err:
        raise SyntaxError(err.args[0]) from None
    cuts = [(t.start, t.end, "") for t in tokens if t.type == tokenize.COMMENT] + _string_statements(tokens)
    lines = io.StringIO(source).readlines()  # split on "\n" alone, as tokenize counts rows
    starts = np.cumsum([0] + [len(line) for line in lines])
    pieces, done = [], 0
    for (row, col), (end_row, end_col), fill in sorted(cuts):
        begin = starts[row - 1] + col
        pieces += [source[done:begin], _CUT + fill]
        done = starts[end_row - 1] + end_col
    pieces.append(source[done:])
    kept = []
    for line in "".join(pieces).split("\n"):
        if _CUT in line:
            line = line.replace(_CUT, "").rstrip()
            if not line:
                continue
        kept.append(line)
    return "\n".join(kept)


def write_code_only(sources: Sources, out: Path) -> dict[str, int | list[str]]:
    """Write each Python file's code alone (`strip_comments_and_docstrings`, UTF-8) to `out`, at its relative
    path, so that the copy splits into the same validation files as the original.

    Returns counts of files written and bytes before and after, and the files left out (not valid Python).
    """
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose a new folder for the corpus")
    written, before, after, left_out = 0, 0, 0, []
    for relative, data in sources:
        try:
            encoding = tokenize.detect_encoding(io.BytesIO(data).readline)[0]
            code = strip_comments_and_docstrings(data.decode(encoding)).encode()
        except (SyntaxError, UnicodeDecodeError):
            left_out.append(relative)
            continue
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(code)
        written, before, after = written + 1, before + len(data), after + len(code)
    return dict(files=written, bytes_before=before, bytes_after=after, left_out=left_out)


def _is_validation(relative: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


def _text_corpus(name: str, sources: Sources, val_fraction: float) -> Corpus:
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    hasher = hashlib.sha256(f"split={val_fraction}".encode())
    n_files = 0
    for relative, data in sources:
        hasher.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
        parts[_is_validation(relative, val_fraction)].append(data)
        n_files += 1
    if not parts[True] or not parts[False]:
        # Too few files to split by file: hold out the tail of the concatenated text instead.
        everything = _FILE_SEPARATOR.join(parts[False] + parts[True])
        cut = int(len(everything) * (1 - val_fraction))
        train, val = everything[:cut], everything[cut:]
    else:
        train, val = _FILE_SEPARATOR.join(parts[False]), _FILE_SEPARATOR.join(parts[True])
    return Corpus(
        name=name,
        train=np.frombuffer(train, np.uint8),
        val=np.frombuffer(val, np.uint8),
        vocab_size=256,
        fingerprint=hasher.hexdigest()[:16],
        n_files=n_files,
    )


def _token_corpus(path: Path, val_fraction: float) -> Corpus:
    if path.suffix == ".npy":
        try:
            tokens = np.load(path, mmap_mode="r")
        except ValueError as err:
            raise UserError(f"{path}: not a readable .npy token file ({err})") from None
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise UserError(f"{path}: token file must hold a 1-D integer array, got {tokens.dtype}{tokens.shape}")
    else:
        tokens = np.memmap(path, dtype="<u2", mode="r")
    if tokens.size < 2:
        raise UserError(f"{path}: token file holds {tokens.size} tokens; it needs many more")
    if int(tokens.min()) < 0:
        raise UserError(f"{path}: token ids must not be negative")
    cut = int(tokens.size * (1 - val_fraction))
    digest = hashlib.sha256(f"split={val_fraction}".encode() + np.ascontiguousarray(tokens).tobytes())
    return Corpus(
        name=str(path),
        train=np.asarray(tokens[:cut]),
        val=np.asarray(tokens[cut:]),
        vocab_size=int(tokens.max()) + 1,
        fingerprint=digest.hexdigest()[:16],
        n_files=1,
    )


@functools.lru_cache(maxsize=2)
def _stdlib_corpus(val_fraction: float) -> Corpus:
    # Cached: sweeps load it per run.
    return _text_corpus("stdlib", stdlib_sources(), val_fraction)


def _is_binary(path: Path) -> bool:
    with path.open("rb") as f:
        return b"\0" in f.read(_SNIFF_BYTES)


def text_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """The text files of a corpus folder: by extension (never a file without one), regular files inside the folder
    (a symlink that leaves it is skipped), and not binary (checked on their first bytes)."""
    root = folder.resolve()
    files = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in extensions or not path.is_file():
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            continue
        try:
            if not _is_binary(path):
                files.append(path)
        except OSError as err:
            raise UserError(f"corpus file {path} cannot be read ({err.strerror or err})") from None
    return files


def _load(
    spec: str, val_fraction: float, extensions: tuple[str, ...] = DataConfig.extensions, cached: bool = True
) -> Corpus:
    """The corpus that `spec` names: "stdlib", a text file or folder, or a token file. `cached` False: the standard
    library's corpus is read again, as a new process reads it, and the process's cache of it is left as it was."""
    if spec == "stdlib":
        return _stdlib_corpus(val_fraction) if cached else _stdlib_corpus.__wrapped__(val_fraction)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"corpus path {spec!r} does not exist; use 'stdlib' or a text/token file or folder")
    if path.is_dir():
        files = text_files(path, extensions)
        if not files:
            raise UserError(
                f"corpus folder {spec!r} holds no text files with the extensions {','.join(extensions)} "
                "(set others with --set data.extensions=.txt,.md)"
            )
        corpus = _text_corpus(str(path), file_sources(path, files), val_fraction)
    elif not path.is_file():
        raise UserError(f"corpus path {spec!r} is not a regular file or folder (a device or pipe); give a file")
    elif path.suffix in (".npy", ".bin"):
        corpus = _token_corpus(path, val_fraction)
    elif _is_binary(path):
        raise UserError(f"corpus file {spec!r} is binary, not text; give a text file, or tokens as .npy or .bin")
    else:
        corpus = _text_corpus(str(path), file_sources(path, [path]), val_fraction)
    if corpus.train.size == 0:
        raise UserError(f"corpus {spec!r} is empty")
    return corpus


def load_corpus(cfg: DataConfig) -> Corpus:
    """Load the training corpus that `cfg.corpus` names: "stdlib", a text file or folder, or a token file."""
    return _load(cfg.corpus, cfg.val_fraction, cfg.extensions)


def corpus_load_seconds(cfg: DataConfig) -> float:
    """Seconds a new run spends loading its corpus and extra validation sets (`load_corpus`, `load_eval_sets`),
    measured by loading them as its process would: read, split, hashed and scanned, none served from this process's
    cache. A part of the run's start-up that depends on its data, not on the device: a plan adds it to the profile's
    start-up (timing.wallclock.Cadence.load_seconds)."""
    start = time.perf_counter()
    _load(cfg.corpus, cfg.val_fraction, cfg.extensions, cached=False)
    for spec in cfg.named_eval_sets.values():
        _load(spec, cfg.val_fraction, cfg.extensions, cached=False)
    return time.perf_counter() - start


def load_eval_sets(cfg: DataConfig, v: int, s: int) -> dict[str, Corpus]:
    """The extra validation sets of `cfg.eval_sets` by name, each checked against the model (`check_fits`).

    Each is split like a training corpus and evaluated on its validation split only: for a variant of the
    training corpus (same files, other text) that split was never trained on, and for another corpus it is
    still a fixed sample of its text (evaluation draws `train.eval_batches` windows from it in any case).
    """
    sets = {}
    for name, spec in cfg.named_eval_sets.items():
        try:
            sets[name] = _load(spec, cfg.val_fraction, cfg.extensions)
            check_fits(sets[name], v, s, splits=("validation",))
        except UserError as err:
            raise UserError(f"data.eval_sets {name}: {err}") from None
    return sets


def check_fits(corpus: Corpus, v: int, s: int, splits: tuple[str, ...] = ("train", "validation")) -> None:
    """Every token must be below the model's vocabulary, and the splits used must hold a full sequence."""
    if corpus.vocab_size > v:
        raise UserError(
            f"corpus {corpus.name} has token ids up to {corpus.vocab_size - 1}; set model.v >= {corpus.vocab_size}"
        )
    for split, tokens in (("train", corpus.train), ("validation", corpus.val)):
        if split in splits and tokens.size < s + 1:
            raise UserError(
                f"corpus {corpus.name}: {split} split has {tokens.size} tokens, fewer than one sequence "
                f"of model.s+1={s + 1}; use a larger corpus or a shorter model.s"
            )


def batch(tokens: np.ndarray, seed: int, k: int, batch_size: int, seq_len: int) -> np.ndarray:
    """Batch k of a run: `batch_size` windows of `seq_len + 1` tokens at positions drawn from (seed, k).

    A pure function of its arguments, so a resumed run sees exactly the batches of an uninterrupted one.
    """
    rng = np.random.default_rng([seed, k])
    starts = rng.integers(0, tokens.size - seq_len, size=batch_size)
    return np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int32)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats per token) of the token frequencies: the loss of a model that knows only them."""
    counts = np.bincount(np.asarray(tokens), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
