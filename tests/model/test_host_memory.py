"""The C allocator set for steady steps: a block freed is reused, not faulted in again (glibc only)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SETUP = """
import ctypes, resource, sys, threading
from smallest_loss.model.host_memory import steady_host_memory
print(steady_host_memory())
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
faults = []
"""
ONE_BLOCK = """
size = 64 << 20
for _ in range(4):  # a step's buffer: allocated, written through, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
IN_A_THREAD = """
def step():  # a thread's buffers, 150 of 1 MiB: across the end of its first 64 MiB heap and into two more
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(1 << 20) for _ in range(150)]
        for block in blocks:
            ctypes.memset(block, 1, 1 << 20)
        for block in reversed(blocks):
            libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=step)
thread.start()
thread.join()
"""


def _faults(setting: str, code: str = ONE_BLOCK) -> tuple[bool, list[int]]:
    env = dict(os.environ, SMALLEST_LOSS_MALLOC=setting)
    args = [sys.executable, "-c", SETUP + code + "print(*faults)"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    took, faults = done.stdout.split("\n")[:2]
    return took == "True", [int(x) for x in faults.split()]


def test_a_freed_block_is_reused_not_faulted_in_again():
    took, steady = _faults("")
    if not took:
        pytest.skip("no glibc mallopt here: the allocator is left as it is")
    took_default, as_it_comes = _faults("default")
    assert not took_default  # SMALLEST_LOSS_MALLOC=default: not set
    # Mapped and unmapped, the block is faulted in at every use (in pages, or in huge pages where the kernel backs
    # large mappings with them); set, the first use faults it in and later uses reuse it.
    assert min(as_it_comes[1:]) > 0 and steady[0] > 0
    assert max(steady[1:]) * 10 < min(as_it_comes[1:]) and max(steady[1:]) * 10 < steady[0]


def test_a_threads_freed_heap_is_kept_not_faulted_in_again():
    took, steady = _faults("", IN_A_THREAD)
    if not took:
        pytest.skip("no glibc mallopt here: the allocator is left as it is")
    _, as_it_comes = _faults("default", IN_A_THREAD)
    # As it comes, a thread heap emptied at the end of a step is unmapped and faulted in again by the next (6,400 of
    # the 38,400 pages a step on the host of results/cpu/); set, the first use faults the buffers in, later ones none.
    assert min(as_it_comes[1:]) > 0 and steady[0] > 0
    assert max(steady[1:]) * 10 < min(as_it_comes[1:]) and max(steady[1:]) * 10 < steady[0]
