"""Measurement: XLA's analyses normalised whatever their shape, real timing records, device rates."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.timing.measure import (
    chunk_size,
    device_memory_bytes,
    is_oom,
    measure_bandwidth,
    measure_peak_flops,
    normalise_analyses,
    prepare,
    time_round,
)

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


def test_peak_flops_in_the_compute_dtype():
    rate, dtype = measure_peak_flops("float32", n=128, repeats=3)
    assert math.isfinite(rate) and rate > 0 and dtype == "float32"
    rate, dtype = measure_peak_flops("bfloat16", n=128, matmuls=3, repeats=3)  # a chain of matmuls in one call
    assert math.isfinite(rate) and rate > 0 and dtype == "bfloat16"
    assert measure_peak_flops("no-such-dtype", n=128, repeats=3)[1] == "float32"  # the backend lacks it: fallback
    assert measure_bandwidth(megabytes=8, repeats=3) > 0
