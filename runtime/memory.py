"""Process memory housekeeping for a runtime that runs for months.

Two glibc knobs, both measured (BENCHMARKS.md sections 9 and 11):

- ``limit_arenas``: glibc gives threads their own malloc arenas (up to 8 per core);
  a runtime has a decode, a worker and a watchdog thread per sensor and station,
  and each arena keeps its own free fragments. Two arenas cut 16 stations from
  303 to 273 MB RSS with the same frames kept and latency. Set before the
  runtime's threads start; a ``MALLOC_ARENA_MAX`` in the environment wins.
- ``malloc_trim``: hands freed heap pages back to the OS (the resource sampler
  calls it every minute), so short-lived frame and audio buffers do not leave a
  slowly rising RSS behind.

Both are no-ops where glibc is absent (musl, macOS).
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Callable, Optional

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number
RUNTIME_ARENAS = 2
_done = False


@lru_cache(maxsize=1)
def _libc():
    """The C library, loaded once (None where it cannot be found)."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def limit_arenas(arenas: int = RUNTIME_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (once); False where not applied."""
    global _done
    if _done or "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _libc()
    fn = getattr(libc, "mallopt", None) if libc is not None else None
    if fn is None:
        return False
    _done = bool(fn(M_ARENA_MAX, int(arenas)))
    if _done:
        log.debug("malloc arenas capped at %d", arenas)
    return _done


def malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim`` (None elsewhere)."""
    import ctypes

    libc = _libc()
    fn = getattr(libc, "malloc_trim", None) if libc is not None else None
    if fn is None:
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn
