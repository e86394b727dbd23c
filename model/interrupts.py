"""Ctrl-C held back while the training loop's state is inconsistent.

A KeyboardInterrupt raised in the middle of a jitted step (after its input state was donated, before the new state
is assigned), of a metrics flush (pending steps taken, lines not yet written) or of a checkpoint save leaves nothing
coherent to save. Inside a guarded section the first SIGINT is only noted, and raised as KeyboardInterrupt when the
section ends; a second SIGINT, or one outside any section, interrupts at once (what the user expects of Ctrl-C
pressed twice). The handler is installed only in the main thread (Python allows no other); elsewhere sections guard
nothing and Ctrl-C behaves as it always does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class HeldInterrupts:
    """`with guard.installed():` for the loop, `with guard:` around each section that must finish."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.depth and not self.pending:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[HeldInterrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
            self.pending = False

    def __enter__(self) -> HeldInterrupts:
        self.depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: Any) -> None:
        self.depth -= 1
        if not self.depth and self.pending:
            self.pending = False
            if kind is None:  # an exception already on its way out goes on; else the held Ctrl-C is raised now
                raise KeyboardInterrupt
