"""Resident memory of a server process: where it stands now and the most it reached since.

The kernel keeps a process's peak resident set (``VmHWM``) over its whole life; writing ``5``
to its ``clear_refs`` (Linux 4.0+) brings the peak down to the current size, so a peak can be
taken over one window. A thread also samples ``VmRSS`` every 10 ms: that is the peak where the
reset is refused or not supported, and a check on the kernel's figure where it is.
"""

from __future__ import annotations

import threading

SAMPLE_INTERVAL_S = 0.01
RESET_SLACK_BYTES = 1 << 20
_RESET_PEAK = "5"
_KIB = 1024


def status_bytes(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` of the process, in bytes."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0]) * _KIB
    return found


def reset_peak(pid: int) -> bool:
    """Bring the kernel's peak down to the current size; False when that did not take."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as refs:
            refs.write(_RESET_PEAK)
    except OSError:
        return False
    now = status_bytes(pid)
    return now["VmHWM"] <= now["VmRSS"] + RESET_SLACK_BYTES


class PeakRss:
    """The peak resident set of process ``pid`` between ``start`` and ``stop``."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name=f"rss-{pid}", daemon=True)
        self.kernel_peak = False
        """Whether the kernel's peak was reset, so that ``stop`` can use it."""
        self.sampled_peak = 0

    def start(self) -> int:
        """Reset the peak and start sampling; the resident set now (the baseline), in bytes."""
        self.kernel_peak = reset_peak(self._pid)
        self.sampled_peak = status_bytes(self._pid)["VmRSS"]
        self._thread.start()
        return self.sampled_peak

    def stop(self) -> int:
        """Stop sampling; the peak since ``start``, in bytes."""
        self._done.set()
        self._thread.join()
        if not self.kernel_peak:
            return self.sampled_peak
        return max(self.sampled_peak, status_bytes(self._pid)["VmHWM"])

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL_S):
            try:
                rss = status_bytes(self._pid)["VmRSS"]
            except FileNotFoundError:  # the process died: the case fails on its own
                return
            self.sampled_peak = max(self.sampled_peak, rss)
