"""``die_with_parent``: a child started with it ends when its parent is killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PARENT = """
import subprocess, sys, time
from gateway.children import die_with_parent
preexec = die_with_parent() if sys.argv[1] == "with" else None
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=preexec)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its reaping is left


def _orphan_after_sigkill(mode: str) -> int:
    """Start a parent that starts a child, kill the parent by SIGKILL; the child's pid."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert parent.stdout is not None
    with parent.stdout:
        child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return child


def _ended_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_child_ends_when_its_parent_is_killed() -> None:
    assert _ended_within(_orphan_after_sigkill("with"), 5)


def test_without_it_the_child_outlives_its_parent() -> None:
    """The control: what the helper prevents does happen without it."""
    child = _orphan_after_sigkill("without")
    try:
        assert not _ended_within(child, 0.5)
    finally:
        os.kill(child, signal.SIGKILL)
