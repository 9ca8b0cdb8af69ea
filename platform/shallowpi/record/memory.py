"""Give the memory a long recording freed back to the operating system.

A recording allocates and frees the same buffers episode after episode (renders, encoded
frames, the twin's scratch data, the store's metadata), on several threads. glibc keeps
what is freed in its heaps, and with allocations of many sizes from many threads those
heaps fragment: the recorder's resident size crept up by ~20 KB an episode although the
Python heap grew far slower (BENCHMARKS.md, Recording (e)). `malloc_trim` returns the
free pages of every heap; called between episodes, on the writer's thread (~0.1 ms, at
most a few ms), it took the growth from 21-26 to 14-15 KB an episode in one A/B run
(measured on the store's first layout, which rewrote every episode's metadata at each
commit; the second writes one small file an episode).
"""

from __future__ import annotations

import ctypes
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

_TRIM: Any = None
_LOOKED = False


def _malloc_trim() -> Any:
    global _TRIM, _LOOKED
    if not _LOOKED:
        _LOOKED = True
        if sys.platform.startswith("linux"):
            try:
                _TRIM = ctypes.CDLL(None).malloc_trim  # glibc; musl has none
                _TRIM.argtypes, _TRIM.restype = [ctypes.c_size_t], ctypes.c_int
            except (OSError, AttributeError):
                _TRIM = None
    return _TRIM


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
