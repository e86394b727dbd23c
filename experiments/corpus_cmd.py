"""`smallest-loss corpus`: write a code-only corpus (Python sources without comments or docstrings)."""

from __future__ import annotations

import argparse
from pathlib import Path

from smallest_loss.experiments.args import check_outputs
from smallest_loss.model.data import python_sources, write_code_only


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="a new folder; files keep their relative paths (and so the split)")
    p.add_argument(
        "--source", default="stdlib", help="'stdlib' (default: the embedded corpus's files) or a folder of .py files"
    )


INTERRUPTED = "interrupted: the corpus folder {args.out} is incomplete; delete it and rerun the command"


def run(args: argparse.Namespace) -> int:
    check_outputs(folders={"--out": args.out})
    stats = write_code_only(python_sources(args.source), Path(args.out))
    print(
        f"wrote {stats['files']} files of code without comments or docstrings to {args.out}: "
        f"{stats['bytes_after']:,} bytes of {stats['bytes_before']:,}"
    )
    if stats["left_out"]:
        print(f"left out {len(stats['left_out'])} files that are not valid Python: {', '.join(stats['left_out'])}")
    print(f"train on it with --set data.corpus={args.out}, or evaluate on it with --set data.eval_sets={args.out}")
    return 0
