"""The `smallest-loss` console script: Ctrl-C is one line and exit 130 even while the command is still loading."""

from __future__ import annotations

import _thread
import os
import sys
import threading
from typing import Any

REDELIVER_S = 0.01  # after this, the callback that swallowed a Ctrl-C has returned (they are short)


def keep_interrupts() -> None:
    """A Ctrl-C that lands while a garbage-collection callback or a finaliser runs (JAX runs one after every
    collection) raises KeyboardInterrupt where Python ignores exceptions: it is printed as "Exception ignored" and
    lost, and the command goes on to its end. Here such an interrupt is delivered to the main thread again, once that
    callback has returned, and nothing is printed for it. Other unraisable exceptions are reported as before."""
    default = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(REDELIVER_S, _thread.interrupt_main).start()
            return
        default(unraisable)

    sys.unraisablehook = hook


def main() -> None:
    keep_interrupts()
    try:
        # Imported here, not at the top: JAX, Flax and SciPy take seconds to load, and a Ctrl-C in those seconds
        # must end as quietly as one during the command itself.
        from smallest_loss.experiments.cli import entry
    except KeyboardInterrupt:
        print("\ninterrupted before the command started: nothing was written", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    entry()
