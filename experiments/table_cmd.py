"""`smallest-loss table RUNS --out runs.csv`: run or sweep folders as one table in the columns every law reads
(scaling/run_table.py), for `fit --csv` with any form (`--form moe`, `--form precision`) or your own analysis."""

from __future__ import annotations

import argparse
import sys

from smallest_loss.scaling.run_table import write_run_table


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders or sweep folders")
    p.add_argument("--out", required=True, help="the CSV to write")


def run(args: argparse.Namespace) -> int:
    out, rows, left_out = write_run_table(args.runs, args.out)
    for line in left_out:
        print(f"left out: {line}", file=sys.stderr)
    print(f"wrote {rows} runs to {out}")
    return 0
