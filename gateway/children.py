"""Child processes that end with the process that started them.

A child (the dev broker, a test's gateway or broker, a bench server) outlives a parent killed
by SIGKILL unless the kernel is told otherwise, and then holds its port and its files until
someone finds it. On Linux the child asks for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``), between fork and exec; elsewhere nothing is asked.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _ask_for_sigterm() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` for ``subprocess.Popen`` or ``asyncio.create_subprocess_exec``."""
    return _ask_for_sigterm if sys.platform == "linux" else None
