"""Host memory for steady steps: the C allocator set so that a step's buffers are reused, not handed back to the
operating system and faulted in again at every step.

On a CPU, XLA allocates each step's temporary buffers with `malloc` and frees them after it. glibc's allocator serves
large blocks by `mmap` and unmaps them at `free`, and trims the free top of its heap, so the next step faults the same
memory in again, zeroed by the kernel, page by page. On the 2-core host of `results/cpu/` (2026-12-06) the quickstart
sweep's largest run (d96-n5, batch 16, context 64) took 14,700 page faults and 41-52 ms of system CPU a step, and how
many a step takes depends on the process's history (the quickstart's verified d80-n2 run: 312 a step after the sweep's
large runs; 41-2,019 in fresh processes), so the same step costs one thing in one process and another in the next.
With no block mapped for itself (`M_MMAP_MAX` 0), the heap not trimmed below 1 GiB of free top (`M_TRIM_THRESHOLD`),
and 64 MiB kept at the top of every heap (`M_TOP_PAD`), memory freed by one step is reused by the next. The last is
for the threads other than the main one (XLA's, the input pipeline's): each allocates from heaps of its own, 64 MiB
apiece, and glibc unmaps such a heap as soon as it empties unless the pad asks for more than the heap below has free
(`heap_trim`), so a thread whose buffers crossed a heap's end faulted the next one in again at every step: 6,400 page
faults each time a thread freed and reused 150 MiB, none with the pad; in a long process that ran large steps first,
900-3,700 a step of a smaller run before the pad, 1-17 after (`experiments/scripts/bench_host_memory.py` measures both
ways, in fresh processes and in one long one; the figures are in results/cpu/quickstart/README.md, stops 43 and 44).
One heap for all threads (`M_ARENA_MAX` 1) cut the faults as well but slowed the d80-n2 step by 3-19%: not set. The
cost: a process keeps its high-water mark of host memory until it exits.

Commands set it when they start (`experiments/cli.py`); `SMALLEST_LOSS_MALLOC=default` leaves the allocator as it is.
It needs glibc's `mallopt` (Linux); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's malloc.h
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20))
ENV = "SMALLEST_LOSS_MALLOC"


def steady_host_memory() -> bool:
    """Set the C allocator for steady steps (the module docstring); True where every setting took."""
    if os.environ.get(ENV, "").lower() == "default":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library: glibc's mallopt, where there is one
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all([mallopt(option, value) == 1 for option, value in SETTINGS])
