"""The training loop's steady step, timed as `train` runs it: fresh batches from the input pipeline (built on
the host and placed on the device, ahead of the steps with `prefetch`), steps dispatched without waiting, and
one host sync (the metrics brought back) every `sync_every` steps, as `train.log_every` does.

Against the compiled step timed alone (timing/measure.py: one batch reused, synced at the same cadence), the
difference is the loop's host cost per step: building and transferring batches, dispatch, the syncs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
from smallest_loss.model.prefetch import DEPTH, Prefetcher


def loop_seconds(
    step: Callable,
    state: Any,
    make: Callable[[int], Any],
    place: Callable[[Any], Any],
    steps: int,
    sync_every: int = 10,
    prefetch: bool = True,
    start: int = 0,
) -> tuple[float, Any]:
    """Seconds per step of `steps` loop steps from batch `start` (see the module docstring), timed from the first
    step to the last sync; returns them and the new state (the state is donated)."""
    pending: list[Any] = []
    feed = Prefetcher(make, place, start, start + steps, depth=DEPTH if prefetch else 0)
    began = time.perf_counter()
    try:
        for i, (_, tokens) in enumerate(feed):
            state, metrics = step(state, tokens)
            pending.append(metrics)
            if (i + 1) % sync_every == 0 or i + 1 == steps:
                jax.device_get(pending)
                pending = []
    finally:
        feed.close()
    return (time.perf_counter() - began) / steps, state
