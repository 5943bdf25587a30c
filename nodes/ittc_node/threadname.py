"""The system's name for the calling thread (``top -H``, ``ps -L``, ``/proc/<pid>/task``).

Python names its threads only for itself; a node's threads also get the name the system
shows (Linux, 15 characters), so an operator, and the cluster benchmark's CPU
accounting, can tell the exponentiations from the event loop and the audit writer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

__all__ = ["name_this_thread"]

_PR_SET_NAME = 15
_libc: ctypes.CDLL | None = None


def name_this_thread(name: str | None = None) -> None:
    """Give the calling thread ``name`` (default: its Python name) at the system level.
    Does nothing where that is not supported."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        label = (name or threading.current_thread().name).encode("ascii", "replace")[:15]
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(label), 0, 0, 0)
    except (OSError, AttributeError):
        return
