"""Keeps freed heap memory inside the process (glibc), so that a CPU training step does not
pay page faults for its large buffers again at every step.

glibc serves large requests (above a threshold that grows to at most 32 MiB) with fresh
`mmap` regions and returns them to the kernel on `free`; it also gives the top of the heap back
once more than the trim threshold (128 KiB by default) is free. XLA:CPU allocates each step's
buffers anew, so every step then touches freshly mapped pages, which the kernel zero-fills one
page fault at a time. `retain_freed_memory()` turns both off (`mallopt(M_MMAP_MAX, 0)`,
`mallopt(M_TRIM_THRESHOLD, ...)` at its maximum): later steps reuse the pages of earlier ones.
The process then keeps its peak heap size until it exits, as a caching allocator would.

Measured on the shapes model's training step (32x32, batch 16, one core;
`python benchmarks/allocator.py --pairs=2`, docs/performance.md): 15,508 page faults and
37 ms of system time per step without, none with it, and the step about 24 % shorter.
`main.py` applies it on CPU unless `--noretain_freed_memory`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def retain_freed_memory() -> bool:
  """Stops glibc from returning freed memory to the kernel (see the module docstring).

  Process-wide and not undoable; affects allocations made after the call. Returns True if
  both settings were taken (Linux with glibc), False where there is no glibc `mallopt`
  (other systems, musl) and nothing changed.
  """
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  mallopt.restype = ctypes.c_int
  # mallopt returns 1 on success; musl's stub returns 0 and does nothing.
  return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, _INT_MAX) == 1


__all__ = ["retain_freed_memory"]
