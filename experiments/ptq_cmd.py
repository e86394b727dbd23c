"""`smallest-loss ptq RUNS --bits 3 4 8`: each finished run's loss after post-training quantisation of its weights to
each width (model/evaluate.py `post_training_losses`), written to the run's `ptq.json`. `smallest-loss table` then
adds a `loss_post_<P>` column per width, and `fit --csv TABLE --form precision` fits Kumar et al.'s PTQ penalty
from them, which `plan --serve-bits` prices."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smallest_loss.configs.errors import UserError
from smallest_loss.experiments.args import check_outputs
from smallest_loss.experiments.plots_ptq import plot_ptq
from smallest_loss.model.evaluate import PTQ_BATCHES, post_training_losses
from smallest_loss.model.runs import RunDir
from smallest_loss.scaling.collect import run_folders
from smallest_loss.scaling.report import markdown_table
from tqdm.auto import tqdm

INTERRUPTED = (
    "interrupted: every run measured so far has its ptq.json; rerun the same command to measure the rest (the widths "
    "already measured are reused)"
)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders or sweep folders")
    p.add_argument("--bits", type=int, nargs="+", required=True, help="weight widths to quantise to, 2-15 bits")
    p.add_argument("--batches", type=int, default=PTQ_BATCHES,
                   help=f"batches of the common validation sample to evaluate on (default {PTQ_BATCHES})")  # fmt: skip
    p.add_argument("--plot", help="also draw each run's rise against its tokens per parameter to this PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    folders = [folder for path in args.runs for folder in run_folders(Path(path))]
    check_outputs(files={"--plot": args.plot})
    widths = sorted(set(args.bits))
    rows, ratios, rises = [], [], {P: [] for P in widths}
    for folder in tqdm(folders, desc="ptq", unit="run", disable=args.quiet):
        run_dir = RunDir.open(folder)
        if run_dir.status() != "completed":
            print(f"left out: {folder.name}: {run_dir.status()}", file=sys.stderr)
            continue
        result = post_training_losses(folder, args.bits, args.batches)
        summary = run_dir.read_summary()
        ratios.append(summary["tokens"] / summary["params"])
        for P in widths:
            rises[P].append(result.rise(P))
        rows.append([folder.name, f"{result.loss:.4f}", *(f"{rises[P][-1]:+.4f}" for P in widths)])
    if not rows:
        raise UserError("no completed run to quantise")
    print(markdown_table(rows, ["run", "loss", *(f"{P} bits" for P in widths)]))
    if args.plot:
        print(f"wrote {plot_ptq(ratios, rises, args.plot)}")
    print(f"wrote ptq.json in {len(rows)} runs; `smallest-loss table` adds their loss_post_<bits> columns")
    return 0
