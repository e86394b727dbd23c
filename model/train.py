"""The training step (a pure function of state, jitted once with donated state) and the training loop.

The model is split once into a graph definition and a parameter state; the step merges them inside the
jitted function, so no Python object-graph walking happens per step (STYLE.md pattern 4).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh
from smallest_loss.configs.errors import UserError
from smallest_loss.configs.schema import ModelConfig, RunConfig, TrainConfig
from smallest_loss.model import noise
from smallest_loss.model.data import Corpus, batch, check_fits, load_corpus, load_eval_sets, unigram_entropy
from smallest_loss.model.interrupts import HeldInterrupts
from smallest_loss.model.moe import STAT_NAMES, call_with_router_stats
from smallest_loss.model.params import count_params
from smallest_loss.model.prefetch import Prefetcher
from smallest_loss.model.quant import fp8_note
from smallest_loss.model.runs import RunDir, hold_run
from smallest_loss.model.schedule import cooldown_steps, schedule_at
from smallest_loss.model.sharding import (
    barrier,
    batch_sharding,
    from_main,
    make_mesh,
    put_batch,
    replicated,
    resolve_mesh_shape,
    state_shardings,
)
from smallest_loss.model.transformer import Transformer
from smallest_loss.model.usage import Usage
from tqdm.auto import tqdm

State = dict[str, Any]  # {"params": nnx.State, "opt_state": optax state, "step": int32 scalar}


def _decay(cfg: TrainConfig, steps: int) -> optax.Schedule:
    """The cool-down from lr to lr * min_lr_ratio over `steps`: linear, or 1 - sqrt (Hagele et al., 2024,
    eq. 2: lr(t) = lr * (1 - sqrt(t / steps)), which keeps the rate high for longer and ends lower)."""
    low = cfg.lr * cfg.min_lr_ratio
    if cfg.decay == "linear":
        return optax.linear_schedule(cfg.lr, low, steps)
    return lambda t: low + (cfg.lr - low) * (1 - jnp.sqrt(jnp.clip(t / steps, 0.0, 1.0)))


def make_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup, then cosine decay, warmup-stable-decay (Hagele et al., 2024), or constant."""
    warmup = min(cfg.warmup_steps, total_steps)
    rest = max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, rest, alpha=cfg.min_lr_ratio)
    elif cfg.schedule == "wsd":
        cool = cooldown_steps(cfg, total_steps)
        stable = max(rest - cool, 0)
        after = optax.join_schedules([optax.constant_schedule(cfg.lr), _decay(cfg, max(cool, 1))], [stable])
    else:
        after = optax.constant_schedule(cfg.lr)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; weight decay on matrices only (not norms' scales and biases). A run that ends
    on the clock (`train.end_within`) gets a rate of 1 here: its step scales the update by the schedule at the
    horizon in its state (`make_step_fn`), AdamW's update times the rate as optax computes it."""
    adamw = optax.adamw(
        1.0 if cfg.end_within else make_schedule(cfg, total_steps),
        b1=cfg.beta1,
        b2=cfg.beta2,
        weight_decay=cfg.weight_decay,
        mask=lambda params: jax.tree.map(lambda p: p.ndim >= 2, params),
    )
    if cfg.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)
    return adamw


def init_state(
    model_cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int, horizon: float | None = None
) -> tuple[nnx.GraphDef, State]:
    """Build the model, split it once, and return its graph definition and the training state; with a `horizon`
    (a run that ends on the clock) the state holds it too, the step its schedule ends at."""
    graphdef, params = nnx.split(Transformer(model_cfg, nnx.Rngs(seed)), nnx.Param)
    state = dict(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32))
    if horizon is not None:
        state["horizon"] = jnp.asarray(horizon, jnp.float32)
    return graphdef, state


RouterWeights = tuple[float, float]  # (train.router_aux_weight, train.router_z_weight)
DEFAULT_ROUTER_WEIGHTS: RouterWeights = (TrainConfig.router_aux_weight, TrainConfig.router_z_weight)


def router_weights(cfg: TrainConfig) -> RouterWeights:
    return cfg.router_aux_weight, cfg.router_z_weight


def objective(
    params: nnx.State, graphdef: nnx.GraphDef, tokens_BxL1: jax.Array, weights: RouterWeights = DEFAULT_ROUTER_WEIGHTS
) -> tuple[jax.Array, tuple[jax.Array, dict[str, jax.Array]]]:
    """The loss that training differentiates, and (the cross-entropy, the router statistics).

    For a dense model it is the cross-entropy itself and the statistics are {}. A mixture of experts adds its
    router losses, averaged over the layers (model/moe.py), times their weights: aux * load-balancing loss + z *
    z-loss. The logged and evaluated loss is the cross-entropy alone, so dense and MoE runs compare.
    """
    logits_BxLxV, stats = call_with_router_stats(nnx.merge(graphdef, params), tokens_BxL1[:, :-1])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, tokens_BxL1[:, 1:]).mean()
    if not stats:
        return ce, (ce, stats)
    aux, z = weights
    return ce + aux * stats["router_aux_loss"] + z * stats["router_z_loss"], (ce, stats)


def loss_fn(params: nnx.State, graphdef: nnx.GraphDef, tokens_BxL1: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (nats) of a batch of windows of s+1 tokens."""
    return objective(params, graphdef, tokens_BxL1)[1][0]


def _squared_norm(tree: Any) -> jax.Array:
    """Sum of squares of every leaf, in float32 (gradients may be bfloat16, too coarse for a noise scale)."""
    return sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(tree))


def accumulated_grads(
    params: nnx.State,
    graphdef: nnx.GraphDef,
    tokens_BxL1: jax.Array,
    micro_batches: int,
    weights: RouterWeights = DEFAULT_ROUTER_WEIGHTS,
) -> tuple[jax.Array, nnx.State, jax.Array, dict[str, jax.Array]]:
    """Loss and gradient of the batch computed as `micro_batches` micro-batches one after another (a
    `lax.scan`: activations of one micro-batch live at a time), averaged: the full batch's loss and gradient.

    Also returns |G_b|^2, the mean over micro-batches of each one's squared gradient norm, for the gradient
    noise scale (model/noise.py), and the router statistics (`objective`) averaged over the micro-batches.
    Micro-batch j takes rows j, j+k, j+2k, ... (k = `micro_batches`): with the batch split over data-parallel
    devices in contiguous blocks whose size k divides, every device holds its share of every micro-batch, so no
    micro-batch moves between devices.
    """
    k = micro_batches
    tokens_KxbxL1 = tokens_BxL1.reshape(tokens_BxL1.shape[0] // k, k, -1).swapaxes(0, 1)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def one(carry: tuple, tokens_bxL1: jax.Array) -> tuple[tuple, None]:
        loss_sum, grad_sum, sq_sum, stat_sum = carry
        (_, (loss, stats)), grads = grad_fn(params, graphdef, tokens_bxL1, weights)
        grad_sum, stat_sum = jax.tree.map(jnp.add, grad_sum, grads), jax.tree.map(jnp.add, stat_sum, stats)
        return (loss_sum + loss, grad_sum, sq_sum + _squared_norm(grads), stat_sum), None

    zero = jnp.zeros((), jnp.float32)
    stats = jax.eval_shape(lambda: objective(params, graphdef, tokens_KxbxL1[0], weights)[1][1])
    init = (zero, jax.tree.map(jnp.zeros_like, params), zero, jax.tree.map(lambda _: zero, stats))
    (loss_sum, grad_sum, sq_sum, stat_sum), _ = jax.lax.scan(one, init, tokens_KxbxL1)
    mean = jax.tree.map(lambda x: x / k, (grad_sum, stat_sum))
    return loss_sum / k, mean[0], sq_sum / k, mean[1]


def make_step_fn(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    micro_batches: int = 1,
    weights: RouterWeights = DEFAULT_ROUTER_WEIGHTS,
    rate: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> Callable:
    """The pure training step: (state, tokens) -> (new state, metrics). Not yet jitted.

    With `micro_batches` >= 2 the gradient is accumulated over micro-batches (`accumulated_grads`), the
    same update with a micro-batch's activation memory, and the metrics gain the squared norms of the
    gradient noise scale: `grad_sq` (|G_B|^2, the step's gradient before clipping) and `micro_grad_sq`. A mixture
    of experts differentiates its router losses too (`objective`, `weights`) and adds its router statistics
    (model/moe.py STAT_NAMES) to the metrics; `loss` is the cross-entropy alone. With `rate` (step, horizon) ->
    learning rate, a run that ends on the clock: the optimizer's rate is 1 (`make_optimizer`), the update is scaled by
    the rate at the state's step and horizon, and the metrics gain it (`lr`).
    """

    def step(state: State, tokens_BxL1: jax.Array) -> tuple[State, dict[str, jax.Array]]:
        if micro_batches == 1:
            grad_fn = jax.value_and_grad(objective, has_aux=True)
            (_, (loss, stats)), grads = grad_fn(state["params"], graphdef, tokens_BxL1, weights)
        else:
            loss, grads, micro_sq, stats = accumulated_grads(
                state["params"], graphdef, tokens_BxL1, micro_batches, weights
            )
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new = dict(opt_state=opt_state, step=state["step"] + 1)
        grad_sq = _squared_norm(grads)
        metrics = dict(loss=loss, grad_norm=jnp.sqrt(grad_sq), **stats)
        if rate is not None:
            lr = rate(state["step"].astype(jnp.float32), state["horizon"])
            updates = jax.tree.map(lambda u: (lr * u).astype(u.dtype), updates)
            new["horizon"], metrics["lr"] = state["horizon"], lr
        new["params"] = optax.apply_updates(state["params"], updates)
        if micro_batches > 1:
            metrics.update({noise.FULL: grad_sq, noise.MICRO: micro_sq})
        return new, metrics

    return step


def state_layout(
    model_cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int, mesh: Mesh,
    horizon: float | None = None,
) -> tuple[nnx.GraphDef, State, Any]:  # fmt: skip
    """The graph definition, the abstract training state (shapes, dtypes and shardings on `mesh`; nothing
    allocated) and the state's shardings. A resumed run restores into the abstract state directly."""
    graphdefs = []  # the model is built once, from shapes: its graph definition holds no arrays

    def build() -> State:
        graphdef, state = init_state(model_cfg, optimizer, seed, horizon)
        graphdefs.append(graphdef)
        return state

    shapes = jax.eval_shape(build)
    shardings = state_shardings(shapes, mesh)
    abstract = jax.tree.map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes, shardings
    )
    return graphdefs[0], abstract, shardings


def run_layout(cfg: RunConfig, mesh: Mesh) -> tuple[optax.GradientTransformation, nnx.GraphDef, State, Any]:
    """A run's optimizer and its state's layout (`state_layout`) as its checkpoints hold it: a run that ends on the
    clock (`train.end_within`) holds its horizon too, from the planned steps."""
    optimizer = make_optimizer(cfg.train, cfg.total_steps)
    horizon = float(cfg.total_steps) if cfg.train.end_within else None
    return optimizer, *state_layout(cfg.model, optimizer, cfg.train.seed, mesh, horizon)


def new_state(
    model_cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int, shardings: Any,
    horizon: float | None = None,
) -> State:  # fmt: skip
    """A freshly initialised training state, created directly in `shardings` (`state_layout`)."""
    return jax.jit(lambda: init_state(model_cfg, optimizer, seed, horizon)[1], out_shardings=shardings)()


def init_sharded_state(
    model_cfg: ModelConfig, optimizer: optax.GradientTransformation, seed: int, mesh: Mesh
) -> tuple[nnx.GraphDef, State, Any]:
    """Like `init_state`, but created directly in its shardings on `mesh` (never whole on one device).

    Returns the graph definition, the state and the state's shardings.
    """
    graphdef, _, shardings = state_layout(model_cfg, optimizer, seed, mesh)
    return graphdef, new_state(model_cfg, optimizer, seed, shardings), shardings


def jit_sharded_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    shardings: Any,
    mesh: Mesh,
    micro_batches: int = 1,
    weights: RouterWeights = DEFAULT_ROUTER_WEIGHTS,
    rate: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
) -> Callable:
    """The training step jitted once with explicit shardings: state as given, batch over the mesh."""
    return jax.jit(
        make_step_fn(graphdef, optimizer, micro_batches, weights, rate),
        in_shardings=(shardings, batch_sharding(mesh)),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )


def make_eval_fn(graphdef: nnx.GraphDef) -> Callable:
    return jax.jit(lambda params, tokens: loss_fn(params, graphdef, tokens))


# A session's wall-clock, term by term (summary.json `wall_clock`): start-up (folder, corpus, state, before the
# loop), compiling the step and the evaluation, the steps (with their host syncs and logging), evaluations and
# checkpoint saves. They sum to the session's seconds (`total`).
CLOCK_TERMS = ("startup", "compile", "steps", "evals", "saves")
# Parts of a term, kept beside them: of `startup`, creating the training state; of `evals`, the session's first
# evaluation (off the clock, it holds the compiled evaluation's first-call costs)
CLOCK_PARTS = ("startup_init", "evals_first")

EVAL_SEED = 12345  # the evaluation sample's seed (`train.eval_batch_size`)


def eval_batch(corpus_val: np.ndarray, cfg: RunConfig, k: int) -> np.ndarray:
    """Validation batch k: `eval_batch_size` windows drawn with EVAL_SEED, the same for every run (legacy
    `eval_batch_size=0`: the training batch size, drawn with the run's seed)."""
    t = cfg.train
    if t.eval_batch_size:
        return batch(corpus_val, EVAL_SEED, k, t.eval_batch_size, cfg.model.s)
    return batch(corpus_val, t.seed + 7919, k, t.batch_size, cfg.model.s)


def evaluate(eval_fn: Callable, params: nnx.State, corpus: Corpus, cfg: RunConfig, place: Callable) -> float:
    """Mean loss over a fixed set of validation batches (the same batches at every evaluation)."""
    losses = [eval_fn(params, place(eval_batch(corpus.val, cfg, k))) for k in range(cfg.train.eval_batches)]
    return float(np.mean(jax.device_get(losses)))


class RunDiverged(UserError):
    """The loss became NaN or infinite at `step`; the run folder keeps the metrics of the steps before it
    and its summary says `diverged`."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def _say(message: str) -> None:
    """One line to the user on stderr (from process 0 only), for things that change what a run does."""
    if jax.process_index() == 0:
        tqdm.write(message, file=sys.stderr)


class _Loop:
    """State of one training session over a run folder (fresh or resumed)."""

    def __init__(
        self,
        run: RunDir,
        corpus: Corpus,
        resume: bool,
        progress: bool,
        eval_sets: dict[str, Corpus] | None = None,
        began: float | None = None,
    ):
        cfg = run.config
        self.run, self.corpus, self.cfg, self.eval_sets = run, corpus, cfg, eval_sets or {}
        self.total = cfg.total_steps
        self.mesh = make_mesh(resolve_mesh_shape(cfg.train))
        # A run that ends on the clock (`train.end_within`): its horizon, in its state, is moved while it trains by
        # `_retime` (a new run only: a resumed one finishes at the horizon it had reached).
        clocked = cfg.train.end_within > 0
        horizon = float(self.total) if clocked else None
        self.deadline = (began or time.perf_counter()) + cfg.train.end_within if clocked and not resume else None
        self.paces: list[tuple[int, float]] = []  # (step, seconds of steps alone so far) at each host sync
        self.eval_seconds = self.save_seconds = 0.0  # the quickest evaluation's and checkpoint save's so far
        optimizer, self.graphdef, abstract, shardings = run_layout(cfg, self.mesh)
        self.horizon_sharding = shardings.get("horizon")
        rate = (lambda t, h: schedule_at(cfg.train, h, t, jnp)) if clocked else None
        self.step_fn = jit_sharded_step(
            self.graphdef, optimizer, shardings, self.mesh, cfg.train.micro_batches, router_weights(cfg.train), rate
        )
        self.batch_sharding = batch_sharding(self.mesh)
        self.eval_fn = make_eval_fn(self.graphdef)
        # Jitted: one compiled program for the logged rates, where the schedule's eager ops compiled one by one
        # (about 15 programs, 1 s in a fresh process).
        self.schedule = jax.jit(make_schedule(cfg.train, self.total))
        self.manager = run.checkpoint_manager()
        self.start, self.wall_offset, self.last_eval = 0, 0.0, None
        self.window: list[tuple[float, float]] = []  # noise-scale norms since the last windowed estimate
        self.state = self._restore(abstract) if resume or run.branch else None
        began = time.perf_counter()
        if self.state is None:  # a new run, or no usable checkpoint
            self.state = jax.block_until_ready(new_state(cfg.model, optimizer, cfg.train.seed, shardings, horizon))
        elif clocked:  # resumed: the horizon the run had reached
            self.total = max(round(float(jax.device_get(self.state["horizon"]))), self.start)
        self.clock = dict.fromkeys(CLOCK_TERMS, 0.0)
        self.usage: dict[str, float] | None = None  # model/usage.py: the process's spending while the steps ran
        self.clock["startup_init"] = time.perf_counter() - began  # part of start-up: the state's jitted creation
        self.clock["compile"] = self._compile(abstract)
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []
        self.guard = HeldInterrupts()  # Ctrl-C waits for a step, a flush or a save to finish (model/interrupts.py)
        self.tokens_per_step = cfg.train.batch_size * cfg.model.s
        progress = progress and jax.process_index() == 0
        self.bar = tqdm(total=self.total, initial=self.start, disable=not progress, unit="step", dynamic_ncols=True)

    def _compile(self, abstract: State) -> float:
        """Compile the step and the evaluation ahead of time (from shapes); returns the seconds it took, the
        run's compile term (`CLOCK_TERMS`)."""
        t, s = self.cfg.train, self.cfg.model.s
        eval_rows = t.eval_batch_size or t.batch_size

        def spec(rows: int) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct((rows, s + 1), jnp.int32, sharding=self.batch_sharding)

        began = time.perf_counter()
        self.step_fn = self.step_fn.lower(abstract, spec(t.batch_size)).compile()
        self.eval_fn = self.eval_fn.lower(abstract["params"], spec(eval_rows)).compile()
        self._rates([self.start])  # the logged learning rates' eager ops (`_rates`)
        if self.deadline:  # on the clock: an evaluation's first-call costs paid now, and its price known (`_retime`)
            tokens = self.place(eval_batch(self.corpus.val, self.cfg, 0))
            jax.block_until_ready(self.eval_fn(self.state["params"], tokens))
            timed = time.perf_counter()
            jax.block_until_ready(self.eval_fn(self.state["params"], tokens))
            self.eval_seconds = (time.perf_counter() - timed) * t.eval_batches * max(len(self.eval_sets), 1)
        return time.perf_counter() - began

    def _restore(self, abstract: State) -> State | None:
        """The newest checkpoint that is readable and whose steps are all in metrics.jsonl (None: no such
        checkpoint; the run starts again from step 0).

        A damaged checkpoint (files lost) is skipped for the one before it, and a metrics line cut short
        sends the run back to a checkpoint before that step, so that the step is trained and logged again.
        Steps past the restored checkpoint are trained again, deterministically (data.batch).
        """
        lines, damage = self.run.check_metrics()
        steps = sorted(self.manager.all_steps(), reverse=True)
        newer = [c for c in steps if c > len(lines)]
        lost = damage or f"metrics.jsonl ends at step {len(lines)}"
        skipped = [f"{lost}, so the step-{newer[0]} checkpoint is passed over"] if newer else []
        state, step = None, 0
        if steps:  # before any read: a failing read's noise is printed from orbax's threads while it fails
            _quiet_closed_event_loops()
        for candidate in (c for c in steps if c <= len(lines)):
            try:
                state = self.manager.restore(candidate, args=ocp.args.StandardRestore(abstract))
            except Exception as err:  # noqa: BLE001 - whatever makes a checkpoint unreadable, an older one may do
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:100]
                skipped.append(f"the step-{candidate} checkpoint cannot be read ({reason})")
                continue
            step = candidate
            break
        if state is None and self.run.branch:  # no checkpoint of its own yet: the parent's at the branch point
            state, step = _restore_parent(self.run, abstract), self.run.branch[1]
        if skipped:
            _say(f"resume: {'; '.join(skipped)}: resuming from step {step} and training the steps after it again")
        barrier("checkpoint restored")  # every process has read metrics.jsonl before process 0 rewrites it
        self._drop_unusable(step)
        kept = self.run.truncate_metrics(step)
        self.start = step
        self.wall_offset = kept[-1]["wall_seconds"] if kept else 0.0
        evals = [line["eval_loss"] for line in kept if line.get("eval_loss") is not None]
        self.last_eval = evals[-1] if evals else None
        self.window = noise.open_window(kept, self.cfg.train.noise_every)
        return state

    def _drop_unusable(self, step: int) -> None:
        """Delete the checkpoints after `step`: they were skipped, and saving those steps again must not clash."""
        for later in self.manager.all_steps():
            if later > step:
                self.manager.delete(later)

    def flush(self, extra: dict[int, dict[str, Any]] | None = None) -> float:
        """Bring the pending steps' metrics to the host (one sync), log them, stop on divergence."""
        if not self.pending:
            return math.nan
        with self.guard:
            return self._flush(extra)

    def _flush(self, extra: dict[int, dict[str, Any]] | None) -> float:
        values = jax.device_get([m for _, m in self.pending])
        wall = self.wall_offset + time.perf_counter() - self.t0
        # One vectorised call for every pending step's learning rate: called step by step, the schedule's
        # eager jnp ops cost about a millisecond each, as much as a tiny model's whole step on a CPU. A run on the
        # clock has its steps' rates in their metrics (`make_step_fn`).
        clocked = "lr" in values[0]
        rates = [m["lr"] for m in values] if clocked else self._rates([step - 1 for step, _ in self.pending])
        lines = []
        for (step, _), m, lr in zip(self.pending, values, rates, strict=True):
            line = dict(
                step=step,
                tokens=step * self.tokens_per_step,
                wall_seconds=round(wall, 4),
                train_loss=float(m["loss"]),
                grad_norm=float(m["grad_norm"]),
                lr=float(lr),
            )
            line.update(self._noise_fields(step, m))
            line.update({name: float(m[name]) for name in STAT_NAMES if name in m})
            line.update((extra or {}).get(step, {}))
            lines.append(line)
        self.pending = []
        bad = next((line for line in lines if not math.isfinite(line["train_loss"])), None)
        # Steps from the first non-finite loss on carry no information: log the steps before it only.
        self.run.append_metrics(lines[: lines.index(bad)] if bad else lines)
        if bad:
            raise RunDiverged(
                f"loss became {bad['train_loss']} at step {bad['step']}: the run diverged; "
                "lower train.lr or raise train.warmup_steps",
                bad["step"],
            )
        return lines[-1]["train_loss"]

    def _rates(self, steps: list[int]) -> np.ndarray:
        """The learning rate at each step, in one call padded to `log_every` entries: the schedule's eager ops
        compile once per array length, so one length keeps compiling out of the steps (`_compile` warms it)."""
        width = max(self.cfg.train.log_every, len(steps))
        padded = np.pad(np.asarray(steps), (0, width - len(steps)), mode="edge")
        return np.asarray(self.schedule(padded), dtype=np.float64)[: len(steps)]

    def _noise_fields(self, step: int, m: dict[str, Any]) -> dict[str, float | None]:
        """A micro-batched step's squared gradient norms, and every `train.noise_every` steps the gradient
        noise scale over the steps since the last estimate (model/noise.py)."""
        if noise.MICRO not in m:
            return {}
        fields = {noise.FULL: float(m[noise.FULL]), noise.MICRO: float(m[noise.MICRO])}
        self.window.append((fields[noise.MICRO], fields[noise.FULL]))
        every = self.cfg.train.noise_every
        if every and step % every == 0:
            fields.update(noise.window_fields(self.window, *_noise_batches(self.cfg)))
            self.window = []
        return fields

    def session(self) -> None:
        with self.guard.installed():
            self._steps()

    def batches(self) -> Prefetcher:
        """The run's batches from `self.start` on, built and placed on the device ahead of the steps (in their
        order: data.batch of (seed, k), so a resumed run sees the batches of an uninterrupted one)."""
        tcfg = self.cfg.train
        return Prefetcher(
            lambda k: batch(self.corpus.train, tcfg.seed, k, tcfg.batch_size, self.cfg.model.s),
            self.place,
            self.start,
            None if self.deadline else self.total,  # on the clock the end moves: the loop stops at it
            depth=tcfg.prefetch,
        )

    def _steps(self) -> None:
        tcfg = self.cfg.train
        spaced = self.spaced = max(1, self.total // tcfg.eval_points) if tcfg.eval_points else 0
        self.t0 = time.perf_counter()
        meter = Usage()
        try:
            with meter, self.batches() as batches:
                for k, tokens in batches:
                    self._one(k + 1, tokens, spaced)
                    if k + 1 >= self.total:
                        break
        finally:  # an interrupted or diverged session's summary has its steps' seconds too
            self.clock["steps"] = time.perf_counter() - self.t0 - self.clock["evals"] - self.clock["saves"]
            self.usage = meter.fields()

    def _one(self, step: int, tokens: jax.Array, spaced: int) -> None:
        """Step `step` on its placed batch, then the flush, evaluation and save due after it."""
        tcfg = self.cfg.train
        with self.guard:  # the state is donated to the step: it is replaced before Ctrl-C may land
            self.state, metrics = self.step_fn(self.state, tokens)
            self.pending.append((step, metrics))
        last = step == self.total
        do_eval = last or any(every and step % every == 0 for every in (tcfg.eval_every, spaced))
        do_ckpt = last or (tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0)
        do_ckpt = do_ckpt or step in self.run.keep_checkpoints
        if do_eval or do_ckpt or step % tcfg.log_every == 0:
            extra = {}
            if do_eval:
                # the steps dispatched ahead finish first: their seconds are the steps', not the evaluation's
                jax.block_until_ready(self.state["step"])
                began = time.perf_counter()
                extra[step] = self.evaluate_all()
                seconds = time.perf_counter() - began
                self.eval_seconds = min(self.eval_seconds or seconds, seconds)  # the first holds one-time costs
                self.clock.setdefault("evals_first", seconds)
                self.clock["evals"] += seconds
            loss = self.flush(extra)
            if self.deadline and not last:
                self._retime(step)
            self._progress(step, loss)
        if do_ckpt:
            self.save(step)

    def _retime(self, step: int) -> None:
        """On the clock: move the horizon to the steps the time left buys. The pace is the steps' own seconds (without
        evaluations and saves) over the later half of the session's syncs so far; the time left is the deadline's,
        less the evaluations and checkpoint saves due on the way and at the last step, each at the seconds the run's
        quickest took (an evaluation before any has run: its batches as one was timed after compiling)."""
        now = time.perf_counter()
        self.paces.append((step, now - self.t0 - self.clock["evals"] - self.clock["saves"]))
        if len(self.paces) < 3:  # the first sync's interval holds the first steps' dispatch: a pace needs two more
            return
        first = self.paces[max(1, len(self.paces) // 2)]
        pace = max((self.paces[-1][1] - first[1]) / max(step - first[0], 1), 1e-9)  # a clock too coarse: not zero
        tcfg = self.cfg.train
        costs = ((self.eval_seconds, (tcfg.eval_every, self.spaced)), (self.save_seconds, (tcfg.checkpoint_every,)))
        left = self.deadline - now - sum(seconds for seconds, _ in costs)  # the last step's evaluation and save
        steps_left = max(left / pace, 1.0)
        for _ in range(2):  # what is due on the way depends on how far the run goes: a second pass settles it
            end = step + int(steps_left)
            due = sum(seconds * _multiples(step, end, every) for seconds, everies in costs for every in everies)
            steps_left = max((left - due) / pace, 1.0)
        horizon = min(step + int(steps_left), 8 * self.cfg.total_steps)
        horizon = int(from_main(str(horizon)))  # several processes: process 0's clock decides for all
        if horizon != self.total:
            self.total = horizon
            self.state["horizon"] = jax.device_put(np.float32(horizon), self.horizon_sharding)
            self.bar.total = horizon

    def evaluate_all(self) -> dict[str, Any]:
        """The training corpus's validation loss (`eval_loss`) and each extra set's (`eval_losses`). A set with
        the training corpus's fingerprint holds the same validation tokens: its loss is not computed twice."""
        params = self.state["params"]
        self.last_eval = evaluate(self.eval_fn, params, self.corpus, self.cfg, self.place)
        if not self.eval_sets:
            return dict(eval_loss=self.last_eval)
        losses = {
            name: self.last_eval
            if corpus.fingerprint == self.corpus.fingerprint
            else evaluate(self.eval_fn, params, corpus, self.cfg, self.place)
            for name, corpus in self.eval_sets.items()
        }
        return dict(eval_loss=self.last_eval, eval_losses=losses)

    def place(self, tokens_BxL1: np.ndarray) -> jax.Array:
        return put_batch(tokens_BxL1, self.batch_sharding)

    def _progress(self, step: int, loss: float) -> None:
        seconds = time.perf_counter() - self.t0
        rate = (step - self.start) * self.tokens_per_step / max(seconds, 1e-9)
        postfix = dict(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}")
        if self.last_eval is not None:
            postfix["eval"] = f"{self.last_eval:.3f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(step - self.bar.n)

    def save(self, step: int) -> None:
        began = time.perf_counter()
        with self.guard:
            self.manager.save(step, args=ocp.args.StandardSave(self.state), force=True)
            self.manager.wait_until_finished()
        seconds = time.perf_counter() - began
        self.save_seconds = min(self.save_seconds or seconds, seconds)  # the first holds one-time costs
        self.clock["saves"] += seconds

    def interrupted(self) -> int:
        """Ctrl-C: keep every finished step (metrics and a checkpoint), so --resume loses nothing."""
        step = int(jax.device_get(self.state["step"]))
        self.flush()
        if step > (self.manager.latest_step() or 0):
            self.save(step)
        return step


def _multiples(after: int, before: int, every: int) -> int:
    """Steps in (after, before) that are multiples of `every` (0: none)."""
    return max((before - 1) // every - after // every, 0) if every else 0


def _restore_parent(run: RunDir, abstract: State) -> State:
    """A cool-down branch's starting state: its parent's checkpoint at the branch step (parameters, optimizer
    moments and step count; the branch's schedule takes over from that step)."""
    parent_path, step = run.branch
    if not (parent_path / "config.json").is_file():
        raise UserError(f"branch {run.path}: its parent run {parent_path} is missing; it cannot resume")
    manager = RunDir.open(parent_path).checkpoint_manager()
    try:
        if step not in manager.all_steps():
            raise UserError(f"branch {run.path}: its parent {parent_path} no longer has its step-{step} checkpoint")
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    finally:
        manager.close()


def _parent_checkpoints(parent: RunDir) -> list[int]:
    manager = parent.checkpoint_manager()
    try:
        return list(manager.all_steps())
    finally:
        manager.close()


def check_parent(config: RunConfig, out: str | Path, parent_path: str | Path, step: int) -> RunDir:
    """The parent run of a new cool-down branch, refused with one line when the branch cannot start from it:
    no such run, another model or seed, the branch point outside the stable phase, or no checkpoint there."""
    where = f"branch {out}"
    if not (Path(parent_path) / "config.json").is_file():
        raise UserError(f"{where}: its parent run {parent_path} is missing; train the parent first")
    parent = RunDir.open(parent_path)
    pc, tc = parent.config, config.train
    if tc.end_within or pc.train.end_within:  # a branch starts where its parent's planned steps put it
        raise UserError(f"{where}: train.end_within (a run that ends on the clock) does not go with a cool-down branch")
    if pc.model != config.model or pc.train.seed != tc.seed or pc.train.batch_size != tc.batch_size:
        raise UserError(f"{where}: its parent {parent_path} trains another model, seed or batch size")
    if pc.train.schedule != "constant" or (pc.train.lr, pc.train.warmup_steps) != (tc.lr, tc.warmup_steps):
        raise UserError(f"{where}: its parent {parent_path} must be a constant-rate run with its lr and warmup")
    cool = cooldown_steps(tc, config.total_steps)
    if tc.schedule != "wsd" or config.total_steps - cool != step:
        raise UserError(f"{where}: a branch from step {step} is a wsd run whose cool-down starts at that step")
    if step not in _parent_checkpoints(parent) or len(parent.read_metrics()) < step:
        done = len(parent.read_metrics()) >= step
        fix = (
            "its checkpoint there is gone (deleted, or the parent kept no checkpoint at this step): retrain the "
            "parent in a new folder"
            if done
            else "finish the parent first"
        )
        raise UserError(
            f"{where}: its parent {parent_path} has no checkpoint at step {step} ({parent.status()}); {fix}"
        )
    return parent


def _closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and "Event loop is closed" in str(error)


def _quiet_closed_event_loops() -> None:
    """Orbax's failed read leaves callbacks for an event loop it has closed; Python reports each one, when it is
    collected or at exit ("Exception ignored ... Event loop is closed") or from the native threads that call them
    (a bare traceback, through `sys.excepthook`): dozens of tracebacks, no effect. Drop those reports, and only
    those, so a resume past a damaged checkpoint says its one line."""
    if getattr(sys.unraisablehook, "quiet_closed_loops", False):
        return
    unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

    def unraisable(report: Any) -> None:
        if not _closed_loop(report.exc_value):
            unraisable_hook(report)

    def excepthook(kind: type[BaseException], error: BaseException, trace: Any) -> None:
        if not _closed_loop(error):
            except_hook(kind, error, trace)

    unraisable.quiet_closed_loops = True
    sys.unraisablehook, sys.excepthook = unraisable, excepthook
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # its "Task exception was never retrieved" of the same


def _noise_batches(cfg: RunConfig) -> tuple[int, int, int]:
    """(b, B, s) of the gradient noise scale: sequences per micro-batch and per step, tokens per sequence."""
    return cfg.train.batch_size // cfg.train.micro_batches, cfg.train.batch_size, cfg.model.s


def summarise(
    run: RunDir,
    corpus: Corpus,
    status: str,
    message: str | None = None,
    diverged_step: int | None = None,
    clock: dict[str, float] | None = None,
    usage: dict[str, float] | None = None,
    total_steps: int | None = None,
) -> dict[str, Any]:
    """Write and return summary.json from the run's metrics (the single source of truth).

    `total_steps`: where the run's schedule ends, for a run that ends on the clock (`train.end_within`) the horizon it
    reached (the summary's `planned_steps` is the configuration's); by default the configuration's steps.

    `steps` counts the steps logged: for a diverged run, those before the step whose loss was not finite
    (`diverged_step`). A micro-batched run's summary gains `noise_scale` (model/noise.py), and one given the
    session's `clock` (`CLOCK_TERMS`) its `wall_clock`: each term's seconds and their `total`; given the session's
    `usage` (model/usage.py: what the process spent while the steps, their evaluations and saves ran) `steps_usage`.
    """
    cfg = run.config
    lines = run.read_metrics()
    evals = [line["eval_loss"] for line in lines if line.get("eval_loss") is not None]
    set_evals = [line["eval_losses"] for line in lines if line.get("eval_losses") is not None]
    last = lines[-1] if lines else {}
    counts = count_params(cfg.model)
    wall = last.get("wall_seconds", 0.0)
    summary = dict(
        status=status,
        message=message,
        steps=last.get("step", 0),
        total_steps=total_steps or cfg.total_steps,
        diverged_step=diverged_step,
        tokens=last.get("tokens", 0),
        params=counts.total,
        params_embedding=counts.embedding,
        params_non_embedding=counts.non_embedding,
        final_train_loss=last.get("train_loss"),
        final_eval_loss=evals[-1] if evals else None,
        final_eval_losses=set_evals[-1] if set_evals else None,
        val_unigram_entropy=unigram_entropy(corpus.val, cfg.model.v),
        wall_seconds=wall,
        tokens_per_second=last.get("tokens", 0) / wall if wall else None,
    )
    if cfg.train.end_within:
        summary.update(planned_steps=cfg.total_steps, end_within=cfg.train.end_within)
    if cfg.model.experts:  # a mixture of experts: the parameters one token runs through (a dense summary as before)
        summary["params_active"] = counts.active
    if clock is not None:  # with parts of a term, not terms of the total (`CLOCK_PARTS`)
        summary["wall_clock"] = {k: round(clock[k], 4) for k in (*CLOCK_TERMS, *CLOCK_PARTS) if k in clock}
        summary["wall_clock"]["total"] = round(sum(clock[k] for k in CLOCK_TERMS), 4)
    if usage:
        summary["steps_usage"] = usage
    noise_scale = noise.summarise(lines, *_noise_batches(cfg))
    if noise_scale:
        summary["noise_scale"] = noise_scale
    run.write_summary(summary)
    return summary


def _open_for_resume(out: str | Path) -> tuple[RunDir, dict[str, Any] | None]:
    """The run in `out` and its summary; a diverged run is refused (resuming would diverge again)."""
    run = RunDir.open(out)
    summary = run.read_summary()
    if summary and summary["status"] == "diverged":
        raise UserError(
            f"the run in {out} {run.status()} and cannot be resumed (it would diverge again); "
            "start a new run with a lower train.lr or more train.warmup_steps"
        )
    return run, summary


def _check_unchanged(run: RunDir, corpus: Corpus, eval_sets: dict[str, Corpus]) -> None:
    """A run resumes only on the corpus and validation sets it began with (their fingerprints)."""
    began = {None: run.record["corpus"]} | run.record.get("eval_sets", {})
    for name, now in {None: corpus, **eval_sets}.items():
        if began.get(name, {}).get("fingerprint") != now.fingerprint:
            what = "the corpus" if name is None else f"validation set {name} (data.eval_sets)"
            raise UserError(f"{what} changed since {run.path} began (fingerprint differs); it cannot be resumed")


def train(
    config: RunConfig | None,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    branch: tuple[str | Path, int] | None = None,
    keep_checkpoints: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Train a run into folder `out` (new), or continue the run in `out` (`resume=True`).

    Returns the summary; resuming a completed run returns its summary and trains nothing. A diverged run
    raises `RunDiverged` after writing its summary, and refuses to resume; Ctrl-C saves a checkpoint of
    the last finished step and re-raises `KeyboardInterrupt`. The folder is checked before anything slow.

    A new run with `branch=(parent folder, step)` is a cool-down branch (Hagele et al., 2024): it starts from
    the parent's checkpoint at that step and its metrics.jsonl from the parent's lines up to it. A new run with
    `keep_checkpoints` saves and keeps checkpoints at those steps, for its branches.

    A run whose config sets `train.end_within` (seconds) ends on the clock: its whole wall-clock, counted from this
    call, within them; the end of its schedule moves while it trains (`_Loop._retime`), and its summary gives the
    steps planned (`planned_steps`) beside those trained.

    The run folder's lock is held throughout (`runs.hold_run`): a second writer is refused with `RunLocked`.
    """
    parent = check_parent(config, out, *branch) if branch and not resume else None  # refused before the folder
    with hold_run(out, create=not resume):
        return _train(config, out, resume, progress, (parent, branch[1]) if parent else None, keep_checkpoints)


def _train(
    config: RunConfig | None,
    out: str | Path,
    resume: bool,
    progress: bool,
    branch: tuple[RunDir, int] | None,
    keep_checkpoints: tuple[int, ...],
) -> dict[str, Any]:
    """`train`, with the run folder's lock held; `branch` (parent run, step) already checked."""
    began = time.perf_counter()
    parent = branch[0] if branch else None
    if resume:
        run, summary = _open_for_resume(out)
        if summary and summary["status"] == "completed":
            return summary
    else:
        RunDir.prepare(out)
    cfg = run.config if resume else config
    if fp8_note(cfg.model):
        _say(fp8_note(cfg.model))  # model.dtype=float8 where FP8 matmuls do not exist: emulated, and said so
    corpus = load_corpus(cfg.data)
    check_fits(corpus, cfg.model.v, cfg.model.s)
    eval_sets = load_eval_sets(cfg.data, cfg.model.v, cfg.model.s)
    if resume:
        _check_unchanged(run, corpus, eval_sets)
    else:
        run = RunDir.create(
            out,
            cfg,
            corpus.describe(),
            {name: c.describe() for name, c in eval_sets.items()},
            (parent.path, branch[1]) if parent else None,
            keep_checkpoints,
        )
        if parent:
            run.start_from(parent, branch[1])
    loop = _Loop(run, corpus, resume, progress, eval_sets, began)
    loop.clock["startup"] = time.perf_counter() - began - loop.clock["compile"]
    spent = dict(clock=loop.clock, usage=loop.usage)
    try:
        loop.session()
    except RunDiverged as err:
        summarise(run, corpus, "diverged", str(err), diverged_step=err.step, **spent, total_steps=loop.total)
        raise
    except KeyboardInterrupt:
        step = loop.interrupted()
        message = f"interrupted after step {step}; continue with --resume {out}"
        summarise(run, corpus, "interrupted", message, **spent, total_steps=loop.total)
        raise
    finally:
        loop.bar.close()
        loop.manager.close()
    return summarise(run, corpus, "completed", clock=loop.clock, usage=loop.usage, total_steps=loop.total)
