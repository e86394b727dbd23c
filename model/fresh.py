"""Work done in a fresh Python process, as a user's own command would do it.

A process that has compiled and run many programs pays more for the next: after the 24 steps of a calibration grid
were compiled in one process, a probe run's start-up there (its initial state's jitted creation) took 1.29-1.62 s
against 0.94 s in a fresh process, and its compile 2.63-2.76 s against 2.16 s (2 EPYC cores, 2026-12-07, stop 55).
So what prices a new run's wall-clock (the probe runs, `timing/probes.py`) and what checks it (the quickstart's
verify stage) each run in a process of their own. `run_fresh` starts one on a snippet of code, waits for it, and
passes Ctrl-C on: the child keeps what it finished (a run its steps, the probes those done), and the parent stops too.
"""

from __future__ import annotations

import signal
import subprocess
import sys

INTERRUPTED = 130  # a fresh process's exit status after Ctrl-C, as a shell reports SIGINT


def fresh_code(module: str, function: str) -> str:
    """Code for `run_fresh` that calls `module.function(*argv)` (strings) and exits `INTERRUPTED` on Ctrl-C."""
    return (
        f"import sys\nfrom {module} import {function}\n"
        f"try:\n    {function}(*sys.argv[1:])\nexcept KeyboardInterrupt:\n    sys.exit({INTERRUPTED})"
    )


def run_fresh(code: str, args: list[str]) -> int:
    """Run `code` (`fresh_code`) with `args` in a fresh interpreter and return its exit status; Ctrl-C, in the child
    or here, raises KeyboardInterrupt here once the child has ended (it may be keeping what it finished)."""
    child = subprocess.Popen([sys.executable, "-c", code, *args])
    try:
        returncode = child.wait()
    except KeyboardInterrupt:  # the child had the same Ctrl-C: let it keep what it finished first
        child.wait()
        raise
    if returncode in (INTERRUPTED, -signal.SIGINT):  # Ctrl-C reached the child alone, or first: the same stop
        raise KeyboardInterrupt
    return returncode
