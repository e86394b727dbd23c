"""What the process spent inside a block: CPU seconds, page faults, context switches, garbage collections."""

from __future__ import annotations

import gc
import time

from smallest_loss.model.usage import FIELDS, Usage, usage_reading


def test_usage_counts_the_block_and_its_collections():
    with Usage() as meter:
        junk = [[i] * 50 for i in range(20_000)]  # fresh pages
        began = time.process_time()
        while time.process_time() - began < 0.1:  # CPU enough for any accounting tick to see
            sum(range(1000))
        gc.collect()
        gc.collect()
    del junk
    fields = meter.fields()
    assert fields["wall"] > 0 and fields["gc_collections"] >= 2 and fields["gc_seconds"] > 0
    assert set(FIELDS) <= set(fields)  # Linux and macOS have getrusage
    assert fields["cpu_user"] + fields["cpu_system"] > 0 and all(fields[k] >= 0 for k in FIELDS)
    assert meter._on_gc not in gc.callbacks  # the collector's callback is removed on exit
    gc.collect()
    assert meter.fields()["gc_collections"] == fields["gc_collections"]


def test_usage_reading_needs_a_recording():
    assert usage_reading(None, 10) is None and usage_reading({"wall": 1.0, "gc_seconds": 0.0}, 10) is None
    usage = dict(wall=1.0, cpu_user=1.5, cpu_system=0.5, minor_faults=100, involuntary_switches=5, gc_seconds=0.0)
    assert usage_reading(usage, 0) is None
    assert usage_reading(usage, 100).startswith("the process held 2.00 cores, 20.0 ms CPU a step (25% system)")
