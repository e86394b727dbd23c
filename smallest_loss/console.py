"""The `smallest-loss` console script: Ctrl-C is one line and exit 130 even while the command is still loading."""

from __future__ import annotations

import os
import sys


def main() -> None:
    try:
        # Imported here, not at the top: JAX, Flax and SciPy take seconds to load, and a Ctrl-C in those seconds
        # must end as quietly as one during the command itself.
        from smallest_loss.experiments.cli import entry
    except KeyboardInterrupt:
        print("\ninterrupted before the command started: nothing was written", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)
    entry()
