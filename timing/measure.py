"""Measure one configuration's real training step: compile time, step time, XLA's cost and memory analyses.

The step is the one training uses (model/train.py: forward, backward, AdamW; state donated), lowered and
compiled ahead of time (compile seconds timed on their own), warmed up, then timed over repeats dispatched at the
training loop's cadence, `jax.block_until_ready` on the outputs after every `train.log_every` steps (fewer for a
step long enough to fill its round alone). The model's layers are a Python loop, so XLA's cost analysis
counts every layer (a `lax.scan` body would be counted once).

Timing on a shared machine. Repeats are taken in *rounds*: every configuration of a batch is compiled
and warmed up first, then each round times every configuration for a short while, round after round.
Slow spells of the machine (on the 2-core VM of results/cpu/timing a small step ran 1.6x slower for
spells of 10-50 s, a large one 1.1x) then hit some rounds of every configuration instead of all the
rounds of a few. A record keeps the median and spread of all repeats and the median of each round;
`best_round_seconds` (the fastest round's median) is the statistic least disturbed by such spells, and
`step_seconds` (the median of all repeats, what profiles predict by default) the one closest to what a
training run meets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import secrets
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from smallest_loss.configs.devices import find_device
from smallest_loss.configs.schema import ModelConfig, TrainConfig
from smallest_loss.model.runs import environment
from smallest_loss.model.sharding import batch_sharding, make_mesh, resolve_mesh_shape
from smallest_loss.model.train import jit_sharded_step, make_optimizer, state_layout
from smallest_loss.timing.counts import counts_for

RECORD_VERSION = 2  # 2: rounds (round_medians, best_round_seconds)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a file; a line cut short by a kill is dropped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def normalise_analyses(cost: Any, memory: Any) -> dict[str, float]:
    """XLA's compiled cost and memory analyses as one flat dict, whatever the JAX version returns.

    `cost_analysis()` is a dict in recent JAX, a list of one dict per computation in older JAX, None on
    some backends; a key is missing when its value is zero. From it: `flops`, `bytes_accessed`
    (every operand and result of every fused op, so well above DRAM traffic), `transcendentals`.
    `memory_analysis()` is an object with byte sizes (or None). Peak memory of the step:
    `peak_bytes` = arguments + outputs + temporaries - aliased bytes (outputs written into donated inputs).
    """
    out: dict[str, float] = {}
    for item in cost if isinstance(cost, (list, tuple)) else [cost]:
        for key, name in (
            ("flops", "flops"),
            ("bytes accessed", "bytes_accessed"),
            ("transcendentals", "transcendentals"),
        ):
            if item and key in item:
                out[name] = out.get(name, 0.0) + float(item[key])
    if memory is not None:
        sizes = {
            f: float(getattr(memory, f"{f}_size_in_bytes", 0) or 0) for f in ("argument", "output", "temp", "alias")
        }
        out.update(
            peak_bytes=sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"],
            temp_bytes=sizes["temp"],
            argument_bytes=sizes["argument"],
            output_bytes=sizes["output"],
            alias_bytes=sizes["alias"],
        )
    return out


def xla_analyses(compiled: Any) -> dict[str, float]:
    """`normalise_analyses` of a compiled step; an analysis the backend cannot give is left out."""

    def safe(method: str) -> Any:
        try:
            return getattr(compiled, method)()
        except Exception:  # noqa: BLE001 - optional data: some backends raise instead of returning None
            return None

    return normalise_analyses(safe("cost_analysis"), safe("memory_analysis"))


def is_oom(err: BaseException) -> bool:
    """Whether an exception is the device running out of memory (XlaRuntimeError RESOURCE_EXHAUSTED)."""
    text = f"{type(err).__name__}: {err}"
    return any(m in text for m in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))


def filled(shapes: Any) -> Any:
    """Arrays of the given shapes, dtypes and shardings, filled with a constant.

    A step's time does not depend on the values, so the timed state need not be initialised: compiling the
    real initialiser would cost about as long as compiling the step itself on a CPU.
    """

    def fill(leaf: jax.ShapeDtypeStruct) -> jax.Array:
        value = 0.02 if jnp.issubdtype(leaf.dtype, jnp.floating) else 0
        return jax.device_put(np.full(leaf.shape, value, leaf.dtype), leaf.sharding)

    return jax.tree.map(fill, shapes)


# XLA's persistent compilation cache (experiments/cli.py) is shared by every process on a machine. A calibration
# compiles the same grid and probes each time it runs, so from the second on a machine it would time compiles served
# from the cache (on the 2-core CPU, 2026-12-06: probes 0.6-1.7 s against 3.0-3.9 s cold), while a plan's run compiles
# a new program (its step count is a constant of its schedule) and pays the cold compile. Timing's programs therefore
# carry a learning rate of their own process, a part in a million to a thousandth off (the step's work is the same),
# so no other process's entry serves them, and they are never written to the cache.
COLD_SALT = 1 + secrets.randbelow(1000)


def cold(train: TrainConfig) -> TrainConfig:
    """`train` with this process's own learning rate, so its compiled step is no other process's (`COLD_SALT`)."""
    return dataclasses.replace(train, lr=train.lr * (1 + COLD_SALT * 1e-6))


@contextlib.contextmanager
def unwritten() -> Iterator[None]:
    """Compile without writing to XLA's persistent cache (timing's programs are no use to a later process)."""
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", math.inf)
    try:
        yield
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


# The steps compiled last in this process, newest last: the noise floor measures again configurations the grid
# has just compiled (a calibration's 8, on CPU 30 s of its 80 s compiling them again). Executables hold no
# buffers; the inputs are allocated afresh by each caller.
_COMPILED: OrderedDict[tuple[ModelConfig, int, int, int], tuple[Any, Callable[[], Any], float]] = OrderedDict()
COMPILED_KEPT = 16


def compile_step(
    cfg: ModelConfig, b: int, devices: int = 1, micro_batches: int = 1
) -> tuple[Any, Callable[[], tuple[Any, jax.Array]], float]:
    """Lower and compile the training step from shapes alone, allocating nothing; returns the compiled step,
    a function that allocates its inputs (state, batch), and the compile seconds (of its first compile: one of
    the last `COMPILED_KEPT` compiled in this process is reused).

    Compiling first lets a caller read XLA's memory analysis before any buffer exists on the device. With
    `devices` > 1 the step is the data-parallel one training uses over a mesh of that many devices
    (model/sharding.py), so the time includes the gradient all-reduce. With `micro_batches` > 1 the step
    accumulates gradients over that many micro-batches of the b sequences (model/train.py).
    """
    key = (cfg, b, devices, micro_batches)
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        return _COMPILED[key]
    train = cold(TrainConfig(steps=1000, warmup_steps=10, batch_size=b, mesh_data=devices, micro_batches=micro_batches))
    optimizer = make_optimizer(train, 1000)
    mesh = make_mesh(resolve_mesh_shape(train))
    graphdef, state, shardings = state_layout(cfg, optimizer, 0, mesh)
    tokens = jax.ShapeDtypeStruct((b, cfg.s + 1), jnp.int32, sharding=batch_sharding(mesh))
    start = time.perf_counter()
    with unwritten():
        compiled = jit_sharded_step(graphdef, optimizer, shardings, mesh, micro_batches).lower(state, tokens).compile()
    seconds = time.perf_counter() - start

    def inputs() -> tuple[Any, jax.Array]:
        batch = np.random.default_rng(0).integers(0, cfg.v, (b, cfg.s + 1), dtype=np.int32)
        return filled(state), jax.device_put(batch, batch_sharding(mesh))

    _COMPILED[key] = (compiled, inputs, seconds)
    while len(_COMPILED) > COMPILED_KEPT:
        _COMPILED.popitem(last=False)
    return compiled, inputs, seconds


SYNC_EVERY = TrainConfig().log_every  # the training loop's host-sync cadence (model/train.py), which timing keeps


def time_compiled(
    compiled: Any,
    state: Any,
    tokens: jax.Array,
    min_seconds: float,
    min_repeats: int,
    max_repeats: int,
    warmup: int = 2,
    sync_every: int = SYNC_EVERY,
    estimate: float | None = None,
) -> tuple[list[float], Any]:
    """Seconds per step over repeats, after `warmup` untimed calls. Steps are dispatched in bursts with one host
    sync after each, as the training loop syncs every `train.log_every` steps, so that the host's dispatch of a step
    overlaps the device's work on the step before as it does in training (an H100, 2026-12-06: a 24-layer step of
    101M parameters at batch 8 took 33.5 ms synced after every step, 22.3 ms in the loop); each burst gives one time,
    its seconds over its steps. A burst is `sync_every` steps, or fewer where fewer fill what is left of `min_seconds`
    at the step's `estimate` (the warm-up's or the last burst's): the overlap matters for short steps only, and a long
    one is not run ten times over its share of the time. Bursts go on until `min_seconds` have passed and at least
    `min_repeats` steps were taken (at most `max_repeats`). Returns the times and the new state (the state is donated
    at every call, so the caller must keep the returned one)."""
    for _ in range(warmup):
        start = time.perf_counter()
        state, metrics = compiled(state, tokens)
        jax.block_until_ready((state, metrics))
        estimate = time.perf_counter() - start
    times: list[float] = []
    steps, elapsed = 0, 0.0
    while steps < max_repeats and (steps < min_repeats or elapsed < min_seconds):
        fill = math.ceil((min_seconds - elapsed) / estimate) if estimate else sync_every
        burst = max(1, min(sync_every, max(fill, min_repeats - steps), max_repeats - steps))
        start = time.perf_counter()
        for _ in range(burst):
            state, metrics = compiled(state, tokens)
        jax.block_until_ready((state, metrics))
        seconds = time.perf_counter() - start
        times.append(seconds / burst)
        steps, elapsed, estimate = steps + burst, elapsed + seconds, seconds / burst
    return times, state


def record_config(cfg: ModelConfig) -> dict[str, Any]:
    """The `config` of a timing record: the architecture fields that change the step (dtype is apart), the
    quantised kinds' bits where there are any (so unquantised records keep their keys), and a mixture of experts'
    fields only for one (`model.experts` > 0): a record without them is a dense model's."""
    bits = {k: getattr(cfg, k) for k in ("bits_weights", "bits_activations", "bits_kv") if getattr(cfg, k)}
    moe = dict(
        experts=cfg.experts,
        top_k=cfg.top_k,
        granularity=cfg.granularity,
        shared_experts=cfg.shared_experts,
        moe_dispatch=cfg.moe_dispatch,
    )
    dense = dict(
        v=cfg.v,
        d=cfg.d,
        n=cfg.n,
        h=cfg.h,
        w=cfg.w,
        s=cfg.s,
        norm=cfg.norm,
        activation=cfg.activation,
        tied_embeddings=cfg.tied_embeddings,
        attention=cfg.attention,
        **bits,
    )
    return dense | moe if cfg.experts else dense


def base_record(cfg: ModelConfig, b: int, devices: int = 1) -> dict[str, Any]:
    """The parts of a timing record (README, "File formats") known before measuring: config, device, counts."""
    env = environment()
    return dict(
        version=RECORD_VERSION,
        config=record_config(cfg),
        device_kind=env["device_kind"],
        backend=env["backend"],
        device_count=devices,
        mesh=[devices, 1],
        dtype=cfg.dtype,
        batch=b,
        jax=env["packages"]["jax"],
        counts=counts_for(cfg, b),
    )


def device_memory_bytes() -> float | None:
    """Memory one device can hold: the allocator's `bytes_limit` where the backend reports it (GPU, TPU),
    else the device table (configs/devices.py), else None (CPU: no check)."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 - optional: some backends raise instead of returning None
        stats = {}
    if stats.get("bytes_limit"):
        return float(stats["bytes_limit"])
    known = find_device(device.device_kind)
    return known.memory_bytes if known else None


@dataclass
class Prepared:
    """One configuration compiled and warmed up, with the times of the rounds measured so far."""

    record: dict[str, Any]
    compiled: Any = None
    state: Any = None
    tokens: Any = None
    rounds: list[list[float]] = field(default_factory=list)
    estimate: float | None = None  # seconds a step: the warm-up's, then the last round's median

    @property
    def live(self) -> bool:
        """Compiled and not failed: still to be timed."""
        return self.compiled is not None and "status" not in self.record

    def fail(self, err: BaseException) -> None:
        """Record a failure (`oom` or `error` with its message) and free the device buffers."""
        self.record.update(
            status="oom" if is_oom(err) else "error",
            message=f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"[:500],
            trace=traceback.format_exc(limit=3)[-1500:],
        )
        self.compiled = self.state = self.tokens = None


def prepare(cfg: ModelConfig, b: int, devices: int = 1, warmup: int = 2, memory_limit: float | None = None) -> Prepared:
    """Compile (timed) and warm up one configuration; a failure is recorded, never raised.

    A step whose compiled peak memory (XLA's memory analysis) exceeds `memory_limit` bytes (by default
    `device_memory_bytes()`) is recorded as `oom` without running it.
    """
    item = Prepared(base_record(cfg, b, devices))
    try:
        compiled, inputs, compile_s = compile_step(cfg, b, devices)
        item.record.update(compile_seconds=compile_s, xla=xla_analyses(compiled))
        limit = memory_limit if memory_limit is not None else device_memory_bytes()
        peak = item.record["xla"].get("peak_bytes")
        if limit and peak and peak > limit:
            raise MemoryError(
                f"Out of memory: the compiled step needs {peak / 2**30:.2f} GiB (XLA memory analysis), "
                f"the device holds {limit / 2**30:.2f} GiB"
            )
        state, item.tokens = inputs()
        item.compiled = compiled
        times, item.state = time_compiled(compiled, state, item.tokens, 0.0, 1, 1, warmup=warmup, sync_every=1)
        item.estimate = times[0]  # one step after the warm-up: how many steps the first round's bursts take
    except Exception as err:  # noqa: BLE001 - any failure of one configuration is recorded, the grid goes on
        item.fail(err)
    return item


def time_round(item: Prepared, seconds: float, min_repeats: int = 1, max_repeats: int = 1000) -> list[float]:
    """Time one round of a prepared configuration (appended to `item.rounds`); a failure is recorded."""
    if not item.live:
        return []
    try:
        times, item.state = time_compiled(
            item.compiled, item.state, item.tokens, seconds, min_repeats, max_repeats, warmup=0, estimate=item.estimate
        )
    except Exception as err:  # noqa: BLE001
        item.fail(err)
        return []
    item.rounds.append(times)
    item.estimate = float(np.median(times)) if times else item.estimate
    return times


def finish(item: Prepared) -> dict[str, Any]:
    """The finished record: median step seconds and spread over all repeats, and per-round medians."""
    if item.live and item.rounds:
        times = np.concatenate([np.asarray(r, dtype=np.float64) for r in item.rounds])
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        round_medians = [float(np.median(r)) for r in item.rounds]
        item.record.update(
            status="ok",
            step_seconds=float(median),
            iqr_seconds=float(q3 - q1),
            min_seconds=float(times.min()),
            max_seconds=float(times.max()),
            repeats=int(times.size),
            rounds=len(item.rounds),
            round_medians=round_medians,
            best_round_seconds=min(round_medians),
            sync_every=SYNC_EVERY,  # the cadence of its bursts (records without it synced after every step)
        )
    elif "status" not in item.record:
        item.record.update(status="error", message="no repeats were timed")
    item.compiled = item.state = item.tokens = None
    return item.record


def chunk_size(configurations: int) -> int:
    """How many configurations are compiled and held in memory together: all of them on CPU (interleaved
    rounds spread a shared machine's slow spells over every configuration), one on accelerators (several
    large models would not fit in device memory together)."""
    return max(configurations, 1) if jax.default_backend() == "cpu" else 1


def measure_many(
    configs: list[tuple],
    min_seconds: float = 1.0,
    rounds: int = 5,
    min_repeats: int = 5,
    max_repeats: int = 400,
    chunk: int | None = None,
    memory_limit: float | None = None,
) -> list[dict[str, Any]]:
    """Timing records of several configurations, timed in interleaved rounds (see the module docstring).

    Each configuration is (model config, global batch) or (model config, global batch, devices) and is
    timed for about `min_seconds` in all, with at least `min_repeats` repeats. At most `chunk` of them
    (default `chunk_size`) are held compiled at once: compiled, timed, freed, then the next chunk.
    Failures become status `oom` or `error`, never exceptions.
    """
    chunk = chunk or chunk_size(len(configs))
    per_round = (min_seconds / rounds, math.ceil(min_repeats / rounds), max(1, max_repeats // rounds))
    records = []
    for start in range(0, len(configs), chunk):
        items = [prepare(*point, memory_limit=memory_limit) for point in configs[start : start + chunk]]
        for _ in range(rounds):
            for item in items:
                time_round(item, *per_round)
        records += [finish(item) for item in items]
    return records


def measure(
    cfg: ModelConfig,
    b: int,
    min_seconds: float = 1.0,
    min_repeats: int = 5,
    max_repeats: int = 400,
    devices: int = 1,
    rounds: int = 5,
    memory_limit: float | None = None,
) -> dict[str, Any]:
    """One configuration's timing record (README, "File formats"): `measure_many` of one."""
    return measure_many([(cfg, b, devices)], min_seconds, rounds, min_repeats, max_repeats, memory_limit=memory_limit)[
        0
    ]


PROBE_SECONDS = 1.0  # a rate probe stops after this many seconds of timed calls, once it has MIN_PROBE_CALLS
MIN_PROBE_CALLS = 3


def median_call_seconds(fn: Any, arg: jax.Array, repeats: int) -> float:
    """The median wall-clock seconds of up to `repeats` calls of fn(arg), after one untimed call (compilation):
    fewer once `PROBE_SECONDS` have passed and `MIN_PROBE_CALLS` were taken (a CPU's 2048^3 matmul takes a third of
    a second; an accelerator's probe calls take milliseconds and all `repeats` run)."""
    jax.block_until_ready(fn(arg))
    times: list[float] = []
    while len(times) < repeats and (len(times) < MIN_PROBE_CALLS or sum(times) < PROBE_SECONDS):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_peak_flops(
    dtype: str = "float32", n: int | None = None, matmuls: int | None = None, repeats: int = 10
) -> tuple[float, str]:
    """The device's achieved matmul rate (FLOP/s) in `dtype`, and the dtype it was measured in.

    Times `matmuls` chained n x n x n matmuls inside one jitted call (2 n^3 FLOPs each; median of
    `repeats` calls). Defaults: on CPU one matmul of n = 2048 (cheap, and large enough for a few cores);
    on accelerators 8 matmuls of n = 8192, so the device is saturated and the call is not launch-bound.
    Measure in the compute dtype of the grid (bf16 on accelerators): fp32 matmuls run at a fraction of
    the bf16 rate there. A backend that cannot run `dtype` falls back to float32.
    """
    cpu = jax.default_backend() == "cpu"
    n = n or (2048 if cpu else 8192)
    matmuls = matmuls or (1 if cpu else 8)

    def chain(a: jax.Array) -> jax.Array:  # a's entries ~ N(0, 1/n): x @ a keeps x's scale, nothing overflows
        return jax.lax.fori_loop(0, matmuls, lambda _, x: x @ a, a)

    def rate(name: str) -> float:
        a = (jax.random.normal(jax.random.key(0), (n, n), jnp.float32) / math.sqrt(n)).astype(name)
        return 2 * matmuls * n**3 / median_call_seconds(jax.jit(chain), a, repeats)

    try:
        return rate(dtype), dtype
    except Exception:  # noqa: BLE001 - the backend lacks this dtype
        if dtype == "float32":
            raise
        return rate("float32"), "float32"


def cache_bytes(level: int = 2) -> float | None:
    """The host CPU's cache of that `level` (from sysfs; L2: per core, L3: the last level, shared) when JAX runs on
    the CPU; None elsewhere or when the system does not say. Used by the cache-aware step-time models (L2:
    timing.counts.spilled_terms; L3: the activation traffic of a step whose working set leaves it)."""
    if jax.default_backend() != "cpu":
        return None
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == str(level):
                size = (index / "size").read_text().strip().upper()
                units = {"K": 2**10, "M": 2**20, "G": 2**30}
                return float(size[:-1]) * units[size[-1]] if size[-1] in units else float(size)
        except (OSError, ValueError):
            return None
    return None


def measure_bandwidth(megabytes: int = 256, repeats: int = 10) -> float:
    """The device's achieved memory bandwidth (bytes/s): a large float32 array read and written (x * 2)."""
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    return 2 * x.nbytes / median_call_seconds(jax.jit(lambda y: y * 2.0), x, repeats)
