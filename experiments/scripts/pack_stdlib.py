"""Pack the running interpreter's standard-library `.py` files into the embedded corpus (`model.data.STDLIB_PACK`).

    python experiments/scripts/pack_stdlib.py [--out model/corpora/stdlib-3.11.7.tar.xz]

The package ships the pack CPython 3.11.7 made (1,790 files, 31.5M bytes, 4.6 MB compressed), so that every machine
and interpreter trains the same text: a tar archive compressed with xz, the files in `stdlib_files` order at their
paths relative to the library's folder, each with mode 0644, owner 0 and time 0, so that packing the same library
twice gives the same bytes. The corpus it makes has the fingerprint the running interpreter's own library has.
CPython's licence goes beside it (`PYTHON-LICENSE.txt`, the library's `LICENSE.txt`).
"""

from __future__ import annotations

import argparse
import io
import platform
import shutil
import tarfile
from pathlib import Path

from smallest_loss.configs.schema import DataConfig
from smallest_loss.model import data


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=data.STDLIB_PACK, help="the pack to write")
    return parser.parse_args(argv)


def pack(out: Path) -> None:
    """Write the pack of the running interpreter's library to `out`, and its licence beside it."""
    root, files = data.stdlib_files()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:xz", preset=9, format=tarfile.PAX_FORMAT) as tar:
        for relative, content in data.file_sources(root, files):
            info = tarfile.TarInfo(relative)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    shutil.copyfile(root / "LICENSE.txt", out.parent / "PYTHON-LICENSE.txt")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    pack(args.out)
    here = data._text_corpus("stdlib", data.file_sources(*data.stdlib_files()), DataConfig.val_fraction)
    with tarfile.open(args.out, "r:xz") as tar:
        packed = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    corpus = data._text_corpus("stdlib", packed, DataConfig.val_fraction)
    print(
        f"packed Python {platform.python_version()}'s library: {corpus.n_files} files, "
        f"{corpus.train.size + corpus.val.size:,} bytes, {args.out.stat().st_size:,} compressed to {args.out}; "
        f"fingerprint {corpus.fingerprint} (the library here: {here.fingerprint})"
    )
    return 0 if corpus.fingerprint == here.fingerprint else 1


if __name__ == "__main__":
    raise SystemExit(main())
