"""Process-level settings: the default device, and malloc tuned for the CPU kernels.

:func:`default_device` is where every model runs unless a caller names a
device: CUDA when present, else the CPU.

glibc's ``malloc`` serves large blocks (above a threshold that adapts up to
32 MiB) with ``mmap`` and gives them back to the system on ``free``; the next
allocation of that size then faults every page in again, and the kernel zeroes
each one.  A forward + backward over a batch of 64 rows of the embedded model
allocates and frees tens of MB of activations and gradients, so every batch of
the trajectory kernel paid 12,700-22,500 minor page faults (50-90 MB of fresh
pages) and about 10% of its time (benchmarks/NOTES.md, attempt 20).

:func:`keep_freed_memory` fixes the threshold at 32 MiB and stops ``free`` from
trimming the heap, so freed blocks are reused by the next batch.  The process
keeps its peak heap instead of returning it to the system.  It is called once
by :func:`provlib.kernels.trajectory.trajectory_features` on CPU; set
``PROVLIB_KEEP_FREED_MEMORY=0`` to leave ``malloc`` alone.
"""
from __future__ import annotations

import ctypes
import os
import platform

import torch

_M_TRIM_THRESHOLD = -1   # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20      # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 2**31 - 1       # never trim in practice
ENV = "PROVLIB_KEEP_FREED_MEMORY"

_state: bool | None = None


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as described above, once per process; True if it is in effect.

    Returns False (and changes nothing) where the C library is not glibc, or when
    the environment variable ``PROVLIB_KEEP_FREED_MEMORY`` is ``0``.
    """
    global _state
    if _state is None:
        _state = _apply()
    return _state


def _apply() -> bool:
    if os.environ.get(ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
