"""Final checkpoints of finished runs, evaluated on one common validation sample.

A run evaluates on the first `train.eval_batches` batches of this common sample (`train.eval_batch_size`), but runs
from before that setting (or with `eval_batch_size=0`) evaluate on batches of their own training batch size drawn
with their own seed: two of them with different batch sizes or seeds report losses on different validation tokens,
and a few batches of a small batch size are a small sample. This script restores each run's last checkpoint and
evaluates every run on the same, larger sample:

    python experiments/evaluate_runs.py RUN [RUN ...] [--batches 64] [--batch-size 16] [--seed 12345]
"""

from __future__ import annotations

import argparse

import numpy as np
from smallest_loss.model.train import EVAL_SEED

# The common sample: 64 validation batches of 16 sequences drawn with the evaluation seed, whatever a run's own batch
# size and seed (`plan --verify` reports every verified run's loss on it too). A run with the default
# `train.eval_batch_size` (16) evaluates on the first `train.eval_batches` of these batches.
COMMON_SAMPLE = (64, 16, EVAL_SEED)


def evaluate_run(folder: str, batches: int, batch_size: int, seed: int) -> tuple[int, float]:
    """(step, mean loss) of the run's newest checkpoint on `batches` validation batches drawn with `seed`."""
    import orbax.checkpoint as ocp
    from smallest_loss.model.data import batch, load_corpus
    from smallest_loss.model.runs import RunDir
    from smallest_loss.model.sharding import batch_sharding, make_mesh, put_batch, resolve_mesh_shape
    from smallest_loss.model.train import make_eval_fn, make_optimizer, state_layout

    run = RunDir.open(folder)
    cfg = run.config
    mesh = make_mesh(resolve_mesh_shape(cfg.train))
    optimizer = make_optimizer(cfg.train, cfg.total_steps)
    graphdef, abstract, _ = state_layout(cfg.model, optimizer, cfg.train.seed, mesh)
    manager = run.checkpoint_manager()
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    manager.close()
    corpus, eval_fn, place = load_corpus(cfg.data), make_eval_fn(graphdef), batch_sharding(mesh)
    losses = [
        float(eval_fn(state["params"], put_batch(batch(corpus.val, seed, k, batch_size, cfg.model.s), place)))
        for k in range(batches)
    ]
    return step, float(np.mean(losses))


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
