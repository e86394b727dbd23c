"""Measurement: XLA's analyses normalised whatever their shape, real timing records, device rates."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import jax
import pytest
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.timing.measure import (
    chunk_size,
    device_memory_bytes,
    is_oom,
    measure_bandwidth,
    measure_peak_flops,
    median_call_seconds,
    normalise_analyses,
    prepare,
    time_compiled,
    time_round,
)

from tests.timing.jaxprs import dot_equations, dot_flops

MEMORY = SimpleNamespace(
    argument_size_in_bytes=100, output_size_in_bytes=90, temp_size_in_bytes=50, alias_size_in_bytes=80
)


@pytest.mark.parametrize(
    "cost",
    [
        {"flops": 10.0, "bytes accessed": 20.0},  # recent JAX: one dict
        [{"flops": 10.0, "bytes accessed": 20.0}],  # older JAX: a list of one dict per computation
        [{"flops": 4.0}, {"flops": 6.0, "bytes accessed": 20.0}],  # several computations; keys missing when zero
    ],
)
def test_cost_analysis_shapes_normalise_to_the_same(cost):
    out = normalise_analyses(cost, MEMORY)
    assert out["flops"] == 10.0 and out["bytes_accessed"] == 20.0
    assert out["peak_bytes"] == 100 + 90 + 50 - 80  # arguments + outputs + temporaries - donated (aliased)


def test_missing_analyses_are_left_out():
    assert normalise_analyses(None, None) == {}
    assert normalise_analyses({}, None) == {}
    assert "flops" not in normalise_analyses([{"bytes accessed": 3.0}], None)


def test_out_of_memory_is_recognised():
    assert is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 80.00GiB"))
    assert not is_oom(ValueError("compile failed"))


CFG = ModelConfig(v=256, d=32, n=1, h=2, w=64, s=32)  # at batch 4 also in test_counts: one compile per session
# Complete records from real measurements: tests/timing/test_calibrate.py (test_records_are_complete).


def test_a_failed_configuration_is_a_record_not_an_exception(monkeypatch):
    import smallest_loss.timing.measure as measure_mod

    def out_of_memory(*_):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 10 GiB")

    monkeypatch.setattr(measure_mod, "compile_step", out_of_memory)
    item = prepare(CFG, 4)
    assert item.record["status"] == "oom" and "RESOURCE_EXHAUSTED" in item.record["message"]
    assert not item.live and time_round(item, 0.01) == []


def test_a_step_larger_than_the_device_is_oom_before_anything_is_allocated(monkeypatch):
    """Compiled first from shapes alone: XLA's memory analysis says the step cannot fit, so its state is
    never allocated and it never runs."""
    import smallest_loss.timing.measure as measure_mod

    allocated = []
    monkeypatch.setattr(measure_mod, "filled", lambda *a: allocated.append(a))
    item = prepare(CFG, 4, memory_limit=2**16)  # 64 KiB: the parameters and Adam moments alone need more
    assert item.record["status"] == "oom" and "memory analysis" in item.record["message"]
    assert item.record["xla"]["peak_bytes"] > 2**16 and allocated == [] and not item.live


def test_memory_and_chunks_follow_the_device():
    limit = device_memory_bytes()
    assert limit is None or limit > 2**30  # CPU: the table knows no limit (no check); accelerators: bytes_limit
    import jax

    assert chunk_size(8) == (8 if jax.default_backend() == "cpu" else 1) and chunk_size(0) == 1


@pytest.fixture
def timed_calls(monkeypatch):
    """The calls measure_peak_flops and measure_bandwidth time, each taking 0.25 s by this fake clock (the
    function is still called once): rates are then exact numbers, whatever the machine."""
    import smallest_loss.timing.measure as measure_mod

    calls = []

    def median_call_seconds(fn, arg, repeats):
        jax.block_until_ready(fn(arg))
        calls.append((fn, arg))
        return 0.25

    monkeypatch.setattr(measure_mod, "median_call_seconds", median_call_seconds)
    return calls


@pytest.mark.parametrize(("dtype", "matmuls"), [("float32", 1), ("bfloat16", 3), ("no-such-dtype", 2)])
def test_peak_flops_are_the_timed_matmuls_flops_in_the_compute_dtype(timed_calls, dtype, matmuls):
    """The rate is the FLOPs of the very call that was timed (its matmuls, counted from its program, a chain of
    matmuls in one call counted once per link) over its seconds, and those matmuls run in the compute dtype:
    operands and results in it, none cast to float32. A backend without the dtype falls back to float32."""
    rate, measured_in = measure_peak_flops(dtype, n=64, matmuls=matmuls, repeats=3)
    assert measured_in == (dtype if dtype != "no-such-dtype" else "float32")
    (fn, arg), *_ = timed_calls
    dots = list(dot_equations(jax.make_jaxpr(fn)(arg).jaxpr))
    flops = sum(times * dot_flops(eqn) for eqn, times in dots)
    dtypes = {str(v.aval.dtype) for eqn, _ in dots for v in (*eqn.invars, *eqn.outvars)}
    assert flops == 2 * matmuls * 64**3 and rate == flops / 0.25
    assert str(arg.dtype) == measured_in and dtypes == {measured_in}


def test_bandwidth_is_the_timed_calls_bytes_over_its_seconds(timed_calls):
    """The bandwidth is the bytes XLA's cost analysis says the timed call reads and writes, over its seconds."""
    bandwidth = measure_bandwidth(megabytes=8, repeats=3)
    (fn, arg), *_ = timed_calls
    cost = fn.lower(arg).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert cost["bytes accessed"] == 2 * 8 * 2**20 and bandwidth == cost["bytes accessed"] / 0.25


def test_steps_are_timed_in_bursts_at_the_loops_sync_cadence(monkeypatch):
    """Steps go out `sync_every` at a time with one sync after each burst (one time per burst, its seconds a step), as
    the training loop syncs; a step whose estimate alone fills the round's seconds goes out alone."""
    syncs = []
    monkeypatch.setattr(jax, "block_until_ready", lambda x: syncs.append(int(x[0])) or x)

    def step(state, tokens):
        return state + 1, None

    times, state = time_compiled(step, 0, None, 0.0, 25, 25, warmup=0, sync_every=10)
    assert state == 25 and syncs == [10, 20, 25] and len(times) == 3  # bursts of 10, 10 and 5 steps
    syncs.clear()
    times, state = time_compiled(step, 0, None, 1e6, 1, 11, warmup=0, sync_every=10, estimate=1e9)
    assert syncs == [1, 11]  # a step estimated to fill the round alone goes out alone; measured short, ten follow
    syncs.clear()
    times, state = time_compiled(step, 0, None, 0.0, 3, 3, warmup=2, sync_every=10)
    assert syncs == [1, 2, 5]  # the warm-up synced after each step, then one burst of the 3 timed steps


def test_median_call_seconds_times_each_call_after_an_untimed_one(monkeypatch):
    """One call first (compilation, not timed), then `repeats` timed calls, each on its own: their median."""
    import smallest_loss.timing.measure as measure_mod

    clock, durations = [0.0], iter([100.0, 3.0, 1.0, 2.0])

    def call(_):
        clock[0] += next(durations)
        return 0

    monkeypatch.setattr(measure_mod.time, "perf_counter", lambda: clock[0])
    assert median_call_seconds(call, None, repeats=3) == 2.0


def test_rate_probes_stop_after_their_time_once_they_have_three_calls():
    """Slow probe calls (a CPU's large matmul) stop at three once PROBE_SECONDS have passed; fast ones (an
    accelerator's) run every repeat."""
    import time

    from smallest_loss.timing.measure import PROBE_SECONDS, median_call_seconds

    calls = []

    def slow(x):
        calls.append(x)
        time.sleep(PROBE_SECONDS / 2.5)  # three calls pass the time
        return x

    median_call_seconds(slow, jax.numpy.ones(2), repeats=10)
    assert len(calls) == 1 + 3  # the untimed first call, then three
    calls.clear()
    median_call_seconds(lambda x: calls.append(x) or x, jax.numpy.ones(2), repeats=10)
    assert len(calls) == 1 + 10


def test_timing_programs_are_this_process_own(monkeypatch):
    """The step timing compiles carries this process's salted learning rate into the program, so XLA's persistent
    cache cannot serve it a program another process compiled (`cold`): two salts lower to different programs."""
    from smallest_loss.configs.schema import TrainConfig
    from smallest_loss.model.sharding import batch_sharding, make_mesh, resolve_mesh_shape
    from smallest_loss.model.train import jit_sharded_step, make_optimizer, state_layout
    from smallest_loss.timing import measure as measure_module

    def lowered(salt: int) -> str:
        monkeypatch.setattr(measure_module, "COLD_SALT", salt)
        train = measure_module.cold(TrainConfig(steps=1000, warmup_steps=10, batch_size=4))
        optimizer = make_optimizer(train, 1000)
        mesh = make_mesh(resolve_mesh_shape(train))
        graphdef, state, shardings = state_layout(CFG, optimizer, 0, mesh)
        tokens = jax.ShapeDtypeStruct((4, CFG.s + 1), jax.numpy.int32, sharding=batch_sharding(mesh))
        return jit_sharded_step(graphdef, optimizer, shardings, mesh, 1).lower(state, tokens).as_text()

    assert lowered(1) != lowered(2)
    assert 1 <= measure_module.COLD_SALT <= 1000


def test_timing_compiles_are_not_written_to_the_persistent_cache(tmp_path):
    """In a fresh process with its own persistent cache (every compile written, however short): an ordinary jit
    compile is written, the timed step's compile is not, and the threshold is restored after it."""
    code = (
        "import os, jax, jax.numpy as jnp\n"
        "from smallest_loss.configs.schema import ModelConfig\n"
        "from smallest_loss.timing.measure import compile_step\n"
        "folder = os.environ['JAX_COMPILATION_CACHE_DIR']\n"
        "jax.jit(lambda x: jnp.sin(x) * 3.25).lower(jnp.ones(7)).compile()\n"
        "first = len(os.listdir(folder))\n"
        "compile_step(ModelConfig(v=256, d=32, n=1, h=2, w=64, s=32), 4)\n"
        "print(first, len(os.listdir(folder)), jax.config.jax_persistent_cache_min_compile_time_secs)\n"
    )
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first, after, threshold = done.stdout.split()
    assert int(first) >= 1 and int(after) == int(first) and float(threshold) == 0.0
