"""What a restore process does to its allocator and threads so that RSS follows the budget.

glibc malloc keeps freed memory: every thread's freed windows stay in its arena (up to 8
arenas per core), and after the first large buffer is freed the mmap threshold rises to
that buffer's size (up to 32 MiB), so later 4 MiB windows come from the heap and stay
resident after free().  `prepare_process_allocator` fixes both before the restore threads
start: 2 arenas, and a fixed mmap threshold (which also disables glibc's dynamic
adjustment), so every buffer of 128 KiB or more is its own mapping, returned to the kernel
on free.  The engine's large buffers come from its `BufferPool` anyway (allocated once,
reused); the threshold bounds what the libraries allocate (decoder output, librados).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

DEFAULT_ARENAS = 2
DEFAULT_MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, kept fixed
DEFAULT_TRIM_THRESHOLD_BYTES = 1024 * 1024

# Each restore runs on a thread of its own with this stack size.  The stack's resident part
# is bounded by it, and the engine reserves it from the budget before the thread starts.
# Deep enough for zlib/bz2/zstd, hashlib, json and boto3 (Python 3.11 frames live on the heap).
RESTORE_THREAD_STACK_BYTES = 512 * 1024


@dataclass(frozen=True)
class AllocatorSettings:
    arenas_applied: bool
    mmap_threshold_applied: bool
    trim_threshold_applied: bool


def _mallopt(param: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False  # not glibc: nothing to tune, nothing to claim
    return bool(libc.mallopt(param, value))


def prepare_process_allocator(arenas: int = DEFAULT_ARENAS,
                              mmap_threshold_bytes: int = DEFAULT_MMAP_THRESHOLD_BYTES,
                              trim_threshold_bytes: int = DEFAULT_TRIM_THRESHOLD_BYTES) -> AllocatorSettings:
    """Apply the restore's malloc settings to this process (before its threads start).

    A MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in the environment
    wins over the corresponding argument; 0 leaves glibc's default.
    """
    def apply(param: int, value: int, env: str) -> bool:
        if value <= 0 or env in os.environ:
            return False
        return _mallopt(param, value)

    return AllocatorSettings(apply(M_ARENA_MAX, arenas, "MALLOC_ARENA_MAX"),
                             apply(M_MMAP_THRESHOLD, mmap_threshold_bytes, "MALLOC_MMAP_THRESHOLD_"),
                             apply(M_TRIM_THRESHOLD, trim_threshold_bytes, "MALLOC_TRIM_THRESHOLD_"))
