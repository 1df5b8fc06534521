"""The C allocator of a training process: freed memory stays in the heap for the next batch.

glibc's malloc serves a block above its mmap threshold (128 kB, raised as such blocks are freed, up
to 32 MiB) with a fresh mapping that `free` unmaps, and gives the top of the heap back to the system
once more than its trim threshold (128 kB) is free. A training loop allocates and frees the same
activation buffers at every batch and every evaluation, so each time the kernel maps and zeroes
those pages again, and the evaluation passes slow down as a run goes on (`bench/allocator.py`
measures the difference).

`keep_freed_memory` sets the mmap threshold to glibc's ceiling (32 MiB) and the trim threshold to
1 GiB: blocks below 32 MiB come from the heap, and freed memory is kept for reuse. The process
holds on to its peak heap instead of returning it. Off glibc (macOS, musl) nothing changes;
`IMBTUI_MALLOC=default` leaves the allocator as glibc sets it (bench/allocator.py's baseline).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: a larger value fails
TRIM_THRESHOLD = 2**30

_done: bool | None = None


def glibc() -> ctypes.CDLL | None:
    """The process's C library, when it is glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """Keep freed blocks below 32 MiB in the heap (module docstring), once per process; True when
    the allocator now does."""
    global _done
    if _done is None:
        libc = None if os.environ.get("IMBTUI_MALLOC") == "default" else glibc()
        _done = bool(libc is not None
                     and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                     and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    return _done
