"""Final checkpoints of finished runs, evaluated on one common validation sample.

A run evaluates on the first `train.eval_batches` batches of this common sample (`train.eval_batch_size`), but runs
from before that setting (or with `eval_batch_size=0`) evaluate on batches of their own training batch size drawn
with their own seed: two of them with different batch sizes or seeds report losses on different validation tokens,
and a few batches of a small batch size are a small sample. This script restores each run's last checkpoint and
evaluates every run on the same, larger sample:

    python experiments/scripts/evaluate_runs.py RUN [RUN ...] [--batches 64] [--batch-size 16] [--seed 12345]
"""

from __future__ import annotations

import argparse

from smallest_loss.model.evaluate import COMMON_SAMPLE, evaluate_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--batches", type=int, default=COMMON_SAMPLE[0])
    parser.add_argument("--batch-size", type=int, default=COMMON_SAMPLE[1])
    parser.add_argument("--seed", type=int, default=COMMON_SAMPLE[2])
    args = parser.parse_args()
    tokens = args.batches * args.batch_size
    print(f"| run | step | loss on a common sample of {tokens} sequences |\n|---|---|---|")
    for folder in args.runs:
        step, loss = evaluate_run(folder, args.batches, args.batch_size, args.seed)
        print(f"| {folder} | {step} | {loss:.4f} |")


if __name__ == "__main__":
    main()
