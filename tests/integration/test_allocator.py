"""`keep_freed_heap` on this machine's real glibc: freed blocks stay in the heap.

Each case runs in a fresh interpreter, because the setting is process-wide and the
heap's shape depends on everything the process allocated before.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from reference.allocator import MAX_THRESHOLD, keep_freed_heap

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# Grow the heap by 1 MiB in 64 KiB blocks (under the 128 KiB mmap threshold, so they come
# from brk), free them all, and print how far the heap's end moved back.
PROBE = """
import ctypes, sys
from reference.allocator import keep_freed_heap
if sys.argv[1] == "keep":
    assert keep_freed_heap()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
libc.sbrk.restype = ctypes.c_void_p
libc.sbrk.argtypes = (ctypes.c_long,)
blocks = [libc.malloc(64 * 1024) for _ in range(16)]
grown = libc.sbrk(0)
for block in reversed(blocks):
    libc.free(block)
print(grown - libc.sbrk(0))
"""


def _returned_bytes(mode: str) -> int:
    # glibc's defaults, whatever the environment running the tests asks of malloc.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    return int(out.stdout)


@glibc_only
def test_without_it_glibc_returns_freed_top_of_heap_to_the_kernel() -> None:
    # The behaviour that cost each worker transaction a brk round trip and fresh pages.
    assert _returned_bytes("default") >= 512 * 1024


@glibc_only
def test_with_it_freed_memory_stays_in_the_heap() -> None:
    assert _returned_bytes("keep") == 0


def test_out_of_range_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        keep_freed_heap(-1)
    with pytest.raises(ValueError, match="threshold"):
        keep_freed_heap(MAX_THRESHOLD + 1)
