"""Measure one configuration's real training step: compile time, step time, XLA's cost and memory analyses.

The step is the one training uses (model/train.py: forward, backward, AdamW; donated state), lowered and
compiled ahead of time (compile seconds timed on their own), warmed up, then timed over repeats with
`block_until_ready` on the outputs. The layers are a Python loop, so XLA's cost analysis counts every
layer (a `lax.scan` body would be counted once).
"""

from __future__ import annotations

import statistics
import time
import traceback
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from configs.schema import ModelConfig, TrainConfig
from model.runs import environment
from model.sharding import batch_sharding, make_mesh, resolve_mesh_shape
from model.train import init_sharded_state, jit_sharded_step, make_optimizer
from timing.counts import counts_for

RECORD_VERSION = 1


def normalise_cost_analysis(raw: Any) -> dict[str, float]:
    """XLA's cost analysis as {flops, bytes_accessed, transcendentals}: a dict in new JAX, a list of one
    dict per computation in old JAX, None on some backends; keys are missing when zero."""
    if raw is None:
        return {}
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    out: dict[str, float] = {}
    for item in items:
        for key, name in (("flops", "flops"), ("bytes accessed", "bytes_accessed"),
                          ("transcendentals", "transcendentals")):
            if item and key in item:
                out[name] = out.get(name, 0.0) + float(item[key])
    return out


def normalise_memory_analysis(raw: Any) -> dict[str, float]:
    """Peak device memory of a compiled step: arguments + outputs + temporaries - aliased (donated) bytes."""
    if raw is None:
        return {}
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
    values = {f: float(getattr(raw, f, 0) or 0) for f in fields}
    peak = values["argument_size_in_bytes"] + values["output_size_in_bytes"] + values["temp_size_in_bytes"]
    return dict(peak_bytes=peak - values["alias_size_in_bytes"], temp_bytes=values["temp_size_in_bytes"],
                argument_bytes=values["argument_size_in_bytes"])


def _is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def compile_step(cfg: ModelConfig, b: int, devices: int = 1) -> tuple[Any, Any, jax.Array, float]:
    """Build state and a batch, lower and compile the training step; returns (compiled, state, batch, secs).

    With `devices` > 1 the step is the data-parallel one training uses over a mesh of that many devices
    (model/sharding.py), so the time includes the gradient all-reduce.
    """
    train = TrainConfig(steps=1000, warmup_steps=10, batch_size=b, mesh_data=devices)
    optimizer = make_optimizer(train, 1000)
    mesh = make_mesh(resolve_mesh_shape(train))
    graphdef, state, shardings = init_sharded_state(cfg, optimizer, 0, mesh)
    tokens = jax.random.randint(jax.random.key(0), (b, cfg.s + 1), 0, cfg.v, dtype=jnp.int32)
    tokens = jax.device_put(tokens, batch_sharding(mesh))
    start = time.perf_counter()
    compiled = jit_sharded_step(graphdef, optimizer, shardings, mesh).lower(state, tokens).compile()
    return compiled, state, tokens, time.perf_counter() - start


def time_compiled(compiled: Any, state: Any, tokens: jax.Array, min_seconds: float, min_repeats: int,
                  max_repeats: int, warmup: int = 2) -> tuple[list[float], Any]:
    """Per-step seconds over repeats, after warm-up; repeats until `min_seconds` (within the bounds).
    Returns the times and the state (donated at every call, so the caller must keep the new one)."""
    for _ in range(warmup):
        state, metrics = compiled(state, tokens)
        jax.block_until_ready((state, metrics))
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < min_seconds):
        start = time.perf_counter()
        state, metrics = compiled(state, tokens)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    return times, state


def _base_record(cfg: ModelConfig, b: int, devices: int = 1) -> dict[str, Any]:
    env = environment()
    return dict(version=RECORD_VERSION, config=dict(v=cfg.v, d=cfg.d, n=cfg.n, h=cfg.h, w=cfg.w, s=cfg.s,
                                                    norm=cfg.norm, activation=cfg.activation,
                                                    tied_embeddings=cfg.tied_embeddings, attention=cfg.attention),
                device_kind=env["device_kind"], backend=env["backend"], device_count=devices, mesh=[devices, 1],
                dtype=cfg.dtype, batch=b, jax=env["packages"]["jax"], counts=counts_for(cfg, b))


def _failed(record: dict[str, Any], err: BaseException) -> dict[str, Any]:
    record.update(status="oom" if _is_oom(err) else "error",
                  message=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500],
                  trace=traceback.format_exc(limit=3)[-1500:])
    return record


def _prepare(cfg: ModelConfig, b: int, devices: int = 1) -> dict[str, Any]:
    """Compile and warm up one configuration; a failure is recorded in the returned item's record."""
    item: dict[str, Any] = dict(record=_base_record(cfg, b, devices), times=[])
    try:
        compiled, state, tokens, compile_s = compile_step(cfg, b, devices)
        item["record"].update(compile_seconds=compile_s,
                              xla=dict(**normalise_cost_analysis(compiled.cost_analysis()),
                                       **normalise_memory_analysis(compiled.memory_analysis())))
        item["state"] = time_compiled(compiled, state, tokens, 0.0, 0, 0)[1]  # warm-up only
        item.update(compiled=compiled, tokens=tokens)
    except Exception as err:  # noqa: BLE001 - any failure of one configuration is recorded, the grid goes on
        _failed(item["record"], err)
    return item


def measure_many(configs: list[tuple], min_seconds: float = 1.0, rounds: int = 5,
                 min_repeats: int = 5, max_repeats: int = 400) -> list[dict[str, Any]]:
    """Timing records (DESIGN.md section 4) of several configurations, timed in interleaved rounds.

    On a shared machine the speed drifts over minutes; timing every configuration a little in each of
    `rounds` rounds spreads that drift over all of them instead of biasing whichever ran during a slow
    spell. Each configuration is (model config, global batch) or (model config, global batch, devices).
    Failures become status `oom` or `error`, never exceptions.
    """
    items = [_prepare(*point) for point in configs]
    live = [it for it in items if "compiled" in it]
    per_round = (min_seconds / rounds, -(-min_repeats // rounds), max(1, max_repeats // rounds))
    for _ in range(rounds):
        for it in live:
            try:
                times, it["state"] = time_compiled(it["compiled"], it["state"], it["tokens"], *per_round, warmup=0)
                it["times"] += times
            except Exception as err:  # noqa: BLE001
                _failed(it["record"], err)
                it["failed"] = True
        live = [it for it in live if not it.get("failed")]
    for it in live:
        times = it["times"]
        q1, q3 = np.percentile(times, [25, 75])
        it["record"].update(status="ok", step_seconds=statistics.median(times), iqr_seconds=float(q3 - q1),
                            min_seconds=min(times), repeats=len(times), rounds=rounds)
    return [it["record"] for it in items]


def measure(cfg: ModelConfig, b: int, min_seconds: float = 0.5, min_repeats: int = 5,
            max_repeats: int = 200, devices: int = 1) -> dict[str, Any]:
    """One configuration's timing record (see `measure_many`)."""
    return measure_many([(cfg, b, devices)], min_seconds, rounds=1, min_repeats=min_repeats,
                        max_repeats=max_repeats)[0]


def measure_peak_flops(n: int = 2048, dtype: str = "float32", repeats: int = 10) -> float:
    """The device's achieved matmul rate (FLOP/s): median over repeats of an n x n x n matmul."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype=jnp.dtype(dtype))
    matmul = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(matmul(a, a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, a))
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def measure_bandwidth(megabytes: int = 256, repeats: int = 10) -> float:
    """The device's achieved memory bandwidth (bytes/s): read + write of a large array (x * 2)."""
    x = jnp.ones((megabytes * 2**20 // 4,), jnp.float32)
    scale = jax.jit(lambda y: y * 2.0)
    jax.block_until_ready(scale(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(scale(x))
        times.append(time.perf_counter() - start)
    return 2 * x.nbytes / statistics.median(times)
