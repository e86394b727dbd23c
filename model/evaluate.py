"""A finished run's newest checkpoint evaluated on one common validation sample.

A run evaluates on the first `train.eval_batches` batches of the common sample (`train.eval_batch_size`), but runs
from before that setting (or with `eval_batch_size=0`) evaluate on batches of their own training batch size drawn
with their own seed: two of them with different batch sizes or seeds report losses on different validation tokens.
`evaluate_run` restores a run's last checkpoint and evaluates it on any sample, the same for every run.
"""

from __future__ import annotations

import numpy as np
import orbax.checkpoint as ocp
from smallest_loss.model.data import batch, load_corpus
from smallest_loss.model.runs import RunDir
from smallest_loss.model.sharding import batch_sharding, make_mesh, put_batch, resolve_mesh_shape
from smallest_loss.model.train import EVAL_SEED, make_eval_fn, make_optimizer, state_layout

# The common sample: 64 validation batches of 16 sequences drawn with the evaluation seed, whatever a run's own batch
# size and seed (`plan --verify` reports every verified run's loss on it too). A run with the default
# `train.eval_batch_size` (16) evaluates on the first `train.eval_batches` of these batches.
COMMON_SAMPLE = (64, 16, EVAL_SEED)


def evaluate_run(folder: str, batches: int, batch_size: int, seed: int) -> tuple[int, float]:
    """(step, mean loss) of the run's newest checkpoint on `batches` validation batches drawn with `seed`."""
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
