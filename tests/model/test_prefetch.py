"""The prefetching input pipeline: the same batches in the same order as building each when needed."""

import json

import jax
import numpy as np
import pytest
from smallest_loss.model.data import batch
from smallest_loss.model.prefetch import Prefetcher
from smallest_loss.model.train import CLOCK_TERMS


def test_prefetch_yields_the_batches_of_the_plain_loop_in_order():
    tokens = np.arange(5000, dtype=np.int32) % 97
    make = lambda k: batch(tokens, 3, k, 4, 8)  # noqa: E731
    with Prefetcher(make, jax.device_put, 5, 25, depth=3) as batches:
        got = [(k, np.asarray(x)) for k, x in batches]
    assert [k for k, _ in got] == list(range(5, 25))
    for k, x in got:
        np.testing.assert_array_equal(x, make(k))


def test_prefetch_raises_the_producers_error_at_its_batch():
    def make(k):
        if k == 3:
            raise ValueError("bad batch")
        return np.full(2, k)

    seen = []
    with pytest.raises(ValueError, match="bad batch"), Prefetcher(make, lambda x: x, 0, 10) as batches:
        for k, _ in batches:
            seen.append(k)
    assert seen == [0, 1, 2]


def test_closing_early_stops_an_endless_prefetcher():
    p = Prefetcher(lambda k: k, lambda x: x, 0, None, depth=1)
    first = [k for k, _ in zip(range(4), p, strict=False)]
    p.close()
    assert first == [0, 1, 2, 3] and not p.thread.is_alive()


@pytest.mark.slow
def test_a_run_records_its_wall_clock_by_term(reference_run):
    """summary.json's `wall_clock`: every term of the session, each non-negative, summing to its total; of the
    start-up, the seconds creating the initial state; of the evaluations, the first's."""
    clock = json.loads((reference_run / "summary.json").read_text())["wall_clock"]
    assert set(clock) == {*CLOCK_TERMS, "total", "startup_init", "evals_first"}
    assert all(clock[k] >= 0 for k in CLOCK_TERMS)
    assert 0 < clock["startup_init"] <= clock["startup"] and 0 < clock["evals_first"] <= clock["evals"]
    assert clock["total"] == pytest.approx(sum(clock[k] for k in CLOCK_TERMS), abs=1e-3)
    assert clock["compile"] > 0 and clock["steps"] > 0 and clock["evals"] > 0 and clock["saves"] > 0
    usage = json.loads((reference_run / "summary.json").read_text())["steps_usage"]  # what the process spent
    assert (
        usage["wall"] >= clock["steps"] and usage["cpu_user"] + usage["cpu_system"] > 0 and usage["minor_faults"] >= 0
    )
