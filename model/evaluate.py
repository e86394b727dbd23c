"""A finished run's newest checkpoint evaluated on one common validation sample, as trained or quantised after
training.

A run evaluates on the first `train.eval_batches` batches of the common sample (`train.eval_batch_size`), but runs
from before that setting (or with `eval_batch_size=0`) evaluate on batches of their own training batch size drawn
with their own seed: two of them with different batch sizes or seeds report losses on different validation tokens.
`evaluate_run` restores a run's last checkpoint and evaluates it on any sample, the same for every run.

Post-training quantisation (PTQ; Kumar et al., ICLR 2025, "Scaling Laws for Precision": quantising a trained
model costs more loss the more tokens it saw): `post_training_losses` rounds the trained weights of the
transformer blocks' linear layers to P bits (round to nearest on the symmetric grid of model/quant.py, one absmax
scale per output channel: the run evaluated with `model.bits_weights = P`, the grid quantised training uses) and
evaluates the model again. The token embedding and the output layer stay as trained, as do the activations and
keys and values (quantised or not, as the run trained them). Every width and the model as trained are evaluated on
the same batches of the common sample, so each rise is measured on identical tokens. The results go to the run's
`ptq.json`; widths already measured there (same checkpoint step and sample) are reused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import RunConfig
from smallest_loss.model.data import batch, load_corpus
from smallest_loss.model.runs import PTQ_FILE, RunDir, hold_run, read_ptq, write_json
from smallest_loss.model.sharding import batch_sharding, make_mesh, put_batch, resolve_mesh_shape
from smallest_loss.model.train import EVAL_SEED, make_eval_fn, make_optimizer, run_layout, state_layout

# The common sample: 64 validation batches of 16 sequences drawn with the evaluation seed, whatever a run's own batch
# size and seed (`plan --verify` reports every verified run's loss on it too). A run with the default
# `train.eval_batch_size` (16) evaluates on the first `train.eval_batches` of these batches.
COMMON_SAMPLE = (64, 16, EVAL_SEED)
PTQ_METHOD = "round to nearest, symmetric, one absmax scale per output channel; the blocks' linear weights"
PTQ_BATCHES = 16  # the first 16 batches of the common sample (16 x 16 sequences)


def _restored(folder: str | Path) -> tuple[RunConfig, Any, int, Any, Any]:
    """(config, mesh, step, state, graphdef) of the run's newest checkpoint."""
    run = RunDir.open(folder)
    cfg = run.config
    mesh = make_mesh(resolve_mesh_shape(cfg.train))
    _, graphdef, abstract, _ = run_layout(cfg, mesh)
    manager = run.checkpoint_manager()
    step = manager.latest_step()
    if step is None:
        manager.close()
        raise UserError(f"{folder} holds no checkpoint to evaluate")
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    manager.close()
    return cfg, mesh, step, state, graphdef


def _mean_loss(eval_fn: Callable, params: Any, val: np.ndarray, sample: tuple[int, int, int], s: int,
               mesh: Any) -> float:  # fmt: skip
    batches, batch_size, seed = sample
    place = batch_sharding(mesh)
    losses = [float(eval_fn(params, put_batch(batch(val, seed, k, batch_size, s), place))) for k in range(batches)]
    return float(np.mean(losses))


def evaluate_run(folder: str, batches: int, batch_size: int, seed: int) -> tuple[int, float]:
    """(step, mean loss) of the run's newest checkpoint on `batches` validation batches drawn with `seed`."""
    cfg, mesh, step, state, graphdef = _restored(folder)
    corpus = load_corpus(cfg.data)
    return step, _mean_loss(make_eval_fn(graphdef), state["params"], corpus.val, (batches, batch_size, seed),
                            cfg.model.s, mesh)  # fmt: skip


def _check_ptq(run: RunDir, bits: Sequence[int]) -> None:
    model, folder = run.config.model, run.path
    if run.status() != "completed":
        raise UserError(f"{folder}: {run.status()}; post-training quantisation needs a completed run")
    if model.experts or model.dtype == "float8":
        what = "a mixture of experts" if model.experts else "an FP8 run"
        raise UserError(f"{folder}: post-training integer quantisation of {what} is not built")
    for P in bits:
        if isinstance(P, bool) or not isinstance(P, int) or not 2 <= P <= 15:
            raise UserError(f"--bits {P!r}: a post-training width is an integer from 2 to 15 bits")
        if model.bits_weights and P >= model.bits_weights:
            trained = model.bits_weights
            raise UserError(f"--bits {P}: {folder} trained its weights at {trained} bits already; give fewer bits")


@dataclass(frozen=True)
class PostTraining:
    """A run's losses on `sample` (batches, batch_size, seed of the common sample) at checkpoint `step`: `loss` as
    trained and `loss_post` {bits: loss} after quantising its weights to that many bits; `ptq.json` holds it."""

    step: int
    sample: dict[str, int]
    method: str
    loss: float
    loss_post: dict[int, float]

    def rise(self, bits: int) -> float:
        """The loss quantising to `bits` adds."""
        return self.loss_post[bits] - self.loss

    def to_dict(self) -> dict[str, Any]:
        """The `ptq.json` form (widths as string keys, in order)."""
        post = {str(P): v for P, v in sorted(self.loss_post.items())}
        return dict(step=self.step, sample=self.sample, method=self.method, loss=self.loss, loss_post=post)


def _measure(
    folder: Path, todo: list[int], loss: float | None, where: tuple[int, int, int]
) -> tuple[int, float, dict[int, float]]:
    """(checkpoint step, loss as trained (`loss`, else measured), {bits: loss} for each of `todo`) on `where`."""
    cfg, mesh, step, state, graphdef = _restored(folder)
    val, optimizer = load_corpus(cfg.data).val, make_optimizer(cfg.train, cfg.total_steps)
    if loss is None:
        loss = _mean_loss(make_eval_fn(graphdef), state["params"], val, where, cfg.model.s, mesh)
    post = {}
    for P in todo:
        ptq_graph = state_layout(dataclasses.replace(cfg.model, bits_weights=P), optimizer, cfg.train.seed, mesh)[0]
        post[P] = _mean_loss(make_eval_fn(ptq_graph), state["params"], val, where, cfg.model.s, mesh)
    return step, loss, post


def post_training_losses(folder: str | Path, bits: Sequence[int], batches: int = PTQ_BATCHES) -> PostTraining:
    """The run's loss as trained and after quantising its weights to each of `bits` (module docstring), on the first
    `batches` batches of the common sample; written to (and reused from) the run's `ptq.json`."""
    run = RunDir.open(folder)
    _check_ptq(run, bits)
    if not 1 <= batches <= COMMON_SAMPLE[0]:
        raise UserError(f"--batches {batches}: give 1 to {COMMON_SAMPLE[0]} batches of the common sample")
    sample = dict(batches=batches, batch_size=COMMON_SAMPLE[1], seed=COMMON_SAMPLE[2])
    with hold_run(run.path, create=False):
        manager = run.checkpoint_manager()
        old, step = read_ptq(run.path), manager.latest_step()
        manager.close()
        keep = old is not None and old.get("step") == step and old.get("sample") == sample and old.get("loss")
        known = {int(P): v for P, v in old["loss_post"].items()} if keep else {}
        todo = [P for P in sorted(set(bits)) if P not in known]
        if keep and not todo:
            return PostTraining(step, sample, old.get("method", PTQ_METHOD), old["loss"], known)
        where = (batches, COMMON_SAMPLE[1], COMMON_SAMPLE[2])
        step, loss, measured = _measure(run.path, todo, old["loss"] if keep else None, where)
        result = PostTraining(step, sample, PTQ_METHOD, loss, dict(sorted({**known, **measured}.items())))
        write_json(run.path / PTQ_FILE, result.to_dict())
    return result
