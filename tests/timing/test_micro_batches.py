"""Gradient accumulation on the timing side: a micro-batched step compiles and times like any other, and
its peak memory (XLA's memory analysis) falls with the micro-batch as our estimate says."""

from __future__ import annotations

import pytest
from smallest_loss.configs.schema import ModelConfig
from smallest_loss.timing.counts import train_memory_bytes
from smallest_loss.timing.measure import compile_step, time_compiled, xla_analyses

# Activations dominate the peak here (the logits alone, 2sv floats per sequence, outweigh the parameters at
# b = 4), so accumulating over 8 micro-batches of 4 sequences must cut the peak several times.
CFG = ModelConfig(v=256, d=32, n=1, h=2, w=64, s=64)
B = 32


@pytest.mark.slow
def test_micro_batched_step_compiles_times_and_fits_the_memory_estimate():
    peaks = {}
    for k in (1, 8):
        compiled, inputs, _ = compile_step(CFG, B, micro_batches=k)
        peaks[k] = xla_analyses(compiled)["peak_bytes"]
        estimate = train_memory_bytes(CFG.d, CFG.n, CFG.h, CFG.w, CFG.s, CFG.v, B, micro_batches=k)
        assert estimate == pytest.approx(peaks[k], rel=0.25), k
    assert peaks[1] / peaks[8] > 4
    times, _ = time_compiled(compiled, *inputs(), min_seconds=0, min_repeats=2, max_repeats=2, warmup=1)
    assert len(times) >= 1 and min(times) > 0
