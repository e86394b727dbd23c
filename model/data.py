"""Corpora, tokens and batches.

The embedded default corpus is the Python standard library's own source, found through the running
interpreter: no download. Text is tokenised as bytes (v = 256). Users may bring a text file, a folder
of text files, or a token file (`.npy`, or raw little-endian `uint16` `.bin`).

Text corpora are split by file (a file's validation membership is a hash of its relative path, so the
split does not depend on which other files exist); token files are split by position (the last
`val_fraction` of tokens). Every corpus has a fingerprint (SHA-256 of its content and split) recorded
in each run. Batch k of a run is a pure function of (seed, k): resumed runs see the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sysconfig
from pathlib import Path

import numpy as np
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import DataConfig

_TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".json", ".c", ".h", ".html", ".js", ".csv", ".tex", ""}
_FILE_SEPARATOR = b"\n\n"


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
            name=self.name, fingerprint=self.fingerprint, files=self.n_files,
            train_tokens=int(self.train.size), val_tokens=int(self.val.size), vocab_size=self.vocab_size,
        )


def stdlib_files() -> tuple[Path, list[Path]]:
    """The running interpreter's standard-library `.py` files (third-party packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in root.rglob("*.py")
        if "site-packages" not in p.parts and "dist-packages" not in p.parts and p.is_file()
    )
    return root, files


def _is_validation(relative: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(relative.encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64 < val_fraction


def _text_corpus(name: str, root: Path, files: list[Path], val_fraction: float) -> Corpus:
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    hasher = hashlib.sha256(f"split={val_fraction}".encode())
    for path in files:
        relative = path.relative_to(root).as_posix() if path != root else path.name
        data = path.read_bytes()
        hasher.update(relative.encode() + b"\0" + hashlib.sha256(data).digest())
        parts[_is_validation(relative, val_fraction)].append(data)
    if not parts[True] or not parts[False]:
        # Too few files to split by file: hold out the tail of the concatenated text instead.
        everything = _FILE_SEPARATOR.join(parts[False] + parts[True])
        cut = int(len(everything) * (1 - val_fraction))
        train, val = everything[:cut], everything[cut:]
    else:
        train, val = _FILE_SEPARATOR.join(parts[False]), _FILE_SEPARATOR.join(parts[True])
    return Corpus(
        name=name, train=np.frombuffer(train, np.uint8), val=np.frombuffer(val, np.uint8),
        vocab_size=256, fingerprint=hasher.hexdigest()[:16], n_files=len(files),
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
        name=str(path), train=np.asarray(tokens[:cut]), val=np.asarray(tokens[cut:]),
        vocab_size=int(tokens.max()) + 1, fingerprint=digest.hexdigest()[:16], n_files=1,
    )


@functools.lru_cache(maxsize=2)
def _stdlib_corpus(val_fraction: float) -> Corpus:
    # Cached: the interpreter's own sources do not change while it runs, and sweeps load them per run.
    root, files = stdlib_files()
    if not files:
        raise UserError(f"no standard-library sources found under {root}; pass --set data.corpus=PATH")
    return _text_corpus("stdlib", root, files, val_fraction)


def load_corpus(cfg: DataConfig) -> Corpus:
    """Load the corpus that `cfg.corpus` names: "stdlib", a text file or folder, or a token file."""
    if cfg.corpus == "stdlib":
        return _stdlib_corpus(cfg.val_fraction)
    path = Path(cfg.corpus).expanduser()
    if not path.exists():
        raise UserError(f"corpus path {cfg.corpus!r} does not exist; use 'stdlib' or a text/token file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
        if not files:
            raise UserError(f"corpus folder {cfg.corpus!r} holds no text files ({' '.join(sorted(_TEXT_SUFFIXES))})")
        corpus = _text_corpus(str(path), path, files, cfg.val_fraction)
    elif path.suffix in (".npy", ".bin"):
        corpus = _token_corpus(path, cfg.val_fraction)
    else:
        corpus = _text_corpus(str(path), path, [path], cfg.val_fraction)
    if corpus.train.size == 0:
        raise UserError(f"corpus {cfg.corpus!r} is empty")
    return corpus


def check_fits(corpus: Corpus, v: int, s: int) -> None:
    """Every token must be below the model's vocabulary, and both splits must hold a full sequence."""
    if corpus.vocab_size > v:
        raise UserError(
            f"corpus {corpus.name} has token ids up to {corpus.vocab_size - 1}; set model.v >= {corpus.vocab_size}"
        )
    for split, tokens in (("train", corpus.train), ("validation", corpus.val)):
        if tokens.size < s + 1:
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
