"""The C allocator set for steady steps: a block freed is reused, not faulted in again (glibc only)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
import ctypes, resource, sys
from smallest_loss.model.host_memory import steady_host_memory
print(steady_host_memory())
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
faults = []
for _ in range(4):  # a step's buffer: allocated, written through, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _faults(setting: str) -> tuple[bool, list[int]]:
    env = dict(os.environ, SMALLEST_LOSS_MALLOC=setting)
    done = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120)
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
