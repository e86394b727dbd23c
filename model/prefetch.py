"""Input batches prepared ahead of the device: a background thread builds batches k, k+1, ... in order and places
them on the device (the caller's `place`, a `jax.device_put`), holding at most `depth` ready in a bounded queue.

The same idea as `flax.jax_utils.prefetch_to_device`, for any backend (CPU, GPU, TPU): the host builds and
transfers the next batches while the device runs the current step. One producer thread and a FIFO queue keep
the batch order exactly that of a loop that builds each batch when it needs it, so training is unchanged.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

DEPTH = 2  # batches held ready: one in flight on the device, one more waiting


class _Failed:
    """The producer's exception, carried through the queue to be raised in the consumer."""

    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """Iterate (k, placed batch) for k in [start, stop) (stop None: without end), built `depth` ahead by a thread.

    `make(k)` builds batch k on the host; `place(x)` puts it on the device. Close it (or use it as a context
    manager) when a loop ends early: the thread stops at its next batch. With `depth` 0 there is no thread: each
    batch is built and placed when the loop asks for it.
    """

    def __init__(
        self,
        make: Callable[[int], Any],
        place: Callable[[Any], Any],
        start: int,
        stop: int | None,
        depth: int = DEPTH,
    ):
        if depth < 0:
            raise ValueError(f"prefetch depth {depth}: must be 0 or more")
        self.make, self.place, self.start, self.stop = make, place, start, stop
        self.queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._produce, name="prefetch", daemon=True) if depth else None
        if self.thread:
            self.thread.start()

    def _put(self, item: Any) -> bool:
        """Put an item, waiting for room unless the consumer has closed; False once closed."""
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        k = self.start
        while self.stop is None or k < self.stop:
            try:
                item = (k, self.place(self.make(k)))
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
                self._put(_Failed(err))
                return
            if not self._put(item):
                return
            k += 1

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        k = self.start
        while self.stop is None or k < self.stop:
            item = self.queue.get() if self.thread else (k, self.place(self.make(k)))
            if isinstance(item, _Failed):
                raise item.error
            yield item
            k += 1

    def close(self) -> None:
        """Stop the producer and wait for it (at most one batch's build)."""
        self.stopped.set()
        if self.thread:
            self.thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
