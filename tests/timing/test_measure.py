"""Measurement: XLA's analyses normalised whatever their shape, real timing records, device rates."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.timing.measure import (
    is_oom,
    measure,
    measure_bandwidth,
    measure_peak_flops,
    normalise_analyses,
    prepare,
    time_round,
)

MEMORY = SimpleNamespace(argument_size_in_bytes=100, output_size_in_bytes=90, temp_size_in_bytes=50,
                         alias_size_in_bytes=80)


@pytest.mark.parametrize("cost", [
    {"flops": 10.0, "bytes accessed": 20.0},  # recent JAX: one dict
    [{"flops": 10.0, "bytes accessed": 20.0}],  # older JAX: a list of one dict per computation
    [{"flops": 4.0}, {"flops": 6.0, "bytes accessed": 20.0}],  # several computations; keys missing when zero
])
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


def test_measure_writes_a_complete_record():
    cfg = ModelConfig(v=256, d=32, n=1, h=2, w=64, s=16)
    record = measure(cfg, 2, min_seconds=0.05, min_repeats=6, rounds=3)
    assert record["status"] == "ok", record.get("message")
    assert record["repeats"] >= 6 and record["rounds"] == 3 and len(record["round_medians"]) == 3
    assert record["min_seconds"] <= record["best_round_seconds"] <= max(record["round_medians"])
    assert record["min_seconds"] <= record["step_seconds"] <= record["max_seconds"]
    assert record["iqr_seconds"] >= 0 and record["compile_seconds"] > 0
    assert record["xla"]["flops"] > 0 and record["xla"]["bytes_accessed"] > 0 and record["xla"]["peak_bytes"] > 0
    assert record["counts"]["flops"] == pytest.approx(record["xla"]["flops"], rel=0.1)
    assert record["batch"] == 2 and record["dtype"] == "float32" and record["device_kind"]
    json.loads(json.dumps(record))  # one JSON line


def test_a_failed_configuration_is_a_record_not_an_exception(monkeypatch):
    import smallest_loss.timing.measure as measure_mod
    def out_of_memory(*_):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 10 GiB")

    monkeypatch.setattr(measure_mod, "compile_step", out_of_memory)
    item = prepare(ModelConfig(v=256, d=32, n=1, h=2, w=64, s=16), 2)
    assert item.record["status"] == "oom" and "RESOURCE_EXHAUSTED" in item.record["message"]
    assert not item.live and time_round(item, 0.01) == []


def test_device_rates_are_positive():
    assert math.isfinite(measure_peak_flops(n=256, repeats=3)) and measure_peak_flops(n=256, repeats=3) > 0
    assert measure_bandwidth(megabytes=8, repeats=3) > 0
