"""`keep_freed_heap`: stop glibc handing the C heap back to the kernel on every transaction.

Layer 3 (adapter). The only importer of `ctypes`. Imports nothing from the package; the
worker's composition root calls it once, in the worker process, before the store opens.

Why a job queue touches malloc
------------------------------
Every write transaction makes SQLite allocate a few buffers at `BEGIN` and free them at the
end of each statement. With two worker processes taking turns on the write lock, those
blocks sat at the top of the heap: glibc's `free()` found more than its trim threshold
(128 KiB by default) free at the top and returned it with `brk`, and the next `BEGIN` grew
the heap again, faulting and zeroing fresh pages. `perf` saw three `brk` calls per
transaction (+172 KiB, +176 KiB, -348 KiB) and page faults in 14% of the samples; the
claim statement took 165 µs of CPU instead of 27 µs, and two worker processes drained
the queue slower than one (`make bench` W2, 2x2: 0.44x the bare-SQLite limit against 1x2's
0.99x). A trim threshold of 512 KiB already ended it; the worker uses 4 MiB, so a
process keeps at most that much freed memory at the top of its heap.

Only glibc has `mallopt` with these semantics; elsewhere (musl, macOS) this is a no-op. A
user who sets glibc's own `MALLOC_TRIM_THRESHOLD_` (or `GLIBC_TUNABLES`) keeps it: config
resolves that to None and the worker leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
from typing import Final

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD: Final = -1  # glibc <malloc.h>
DEFAULT_TRIM_THRESHOLD: Final = 4 * 1024 * 1024
MAX_THRESHOLD: Final = 2**31 - 1  # mallopt takes a C int


def keep_freed_heap(threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Set glibc's malloc trim threshold to `threshold` bytes; False where that is not glibc.

    Setting it also turns off glibc's dynamic mmap threshold, so allocations of 128 KiB and
    more go to their own mappings again, as glibc's documentation describes.
    """
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"threshold must be 0..{MAX_THRESHOLD} bytes, not {threshold}")
    if not _is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own libc, no library search
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_TRIM_THRESHOLD, threshold) != 1:
        logger.warning("mallopt(M_TRIM_THRESHOLD, %d) was refused", threshold)
        return False
    return True


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError):  # the name is unknown off glibc
        return False
