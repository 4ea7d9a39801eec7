"""CPU time of the bench process, of the servers it started and of the whole machine.

A throughput figure only means something if we know who was saturated: on two cores, a load
generator using a full core is the bottleneck, not the server it drives; and the machine is
shared, so CPU used by processes outside the bench (``others``) or stolen by the hypervisor
(``steal``) explains a baseline that moves between runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LOADGEN = "loadgen"
OTHERS = "others"
STEAL = "steal"
_MACHINE = "machine"
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# /proc/stat "cpu" line: user nice system idle iowait irq softirq steal ...
_BUSY_FIELDS = (0, 1, 2, 5, 6)
_STEAL_FIELD = 7


def cpu_s(stat_file: str) -> float:
    """User + system CPU seconds so far of the process or thread whose stat file is given."""
    with open(stat_file, encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 in proc(5)); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def machine_cpu_s() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy, and seconds stolen from it, so far."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    busy = sum(ticks[i] for i in _BUSY_FIELDS)
    return busy / _CLOCK_TICKS_PER_S, ticks[_STEAL_FIELD] / _CLOCK_TICKS_PER_S


@dataclass(frozen=True, slots=True)
class CpuSample:
    """Wall time and CPU seconds per name at one instant."""

    wall_s: float
    cpu_s: dict[str, float]


class CpuMeter:
    """Samples the bench process (``loadgen``), each server process and its main thread
    (``<name>_loop``, where asyncio runs; the rest is helper threads such as the SQLite writer),
    and the machine."""

    def __init__(self, processes: Mapping[str, int]) -> None:
        self._processes = dict(processes)

    def sample(self) -> CpuSample:
        cpu: dict[str, float] = {LOADGEN: time.process_time()}
        for name, pid in self._processes.items():
            cpu[name] = cpu_s(f"/proc/{pid}/stat")
            cpu[f"{name}_loop"] = cpu_s(f"/proc/{pid}/task/{pid}/stat")
        cpu[_MACHINE], cpu[STEAL] = machine_cpu_s()
        return CpuSample(time.perf_counter(), cpu)

    def percent(self, first: CpuSample, last: CpuSample) -> dict[str, float]:
        """Busy percentage of one core per name between two samples (200 = both cores)."""
        wall = last.wall_s - first.wall_s
        used = {name: 100.0 * (last.cpu_s[name] - first.cpu_s[name]) / wall for name in last.cpu_s}
        ours = used[LOADGEN] + sum(used[name] for name in self._processes)
        used[OTHERS] = used.pop(_MACHINE) - ours
        return used


def weighted_percent(windows: Sequence[tuple[Mapping[str, float], float]]) -> dict[str, float]:
    """The CPU percentages of several windows as of one, each weighted by its length: pairs
    of (percentages, seconds)."""
    total_s = sum(seconds for _, seconds in windows)
    cpu: dict[str, float] = {}
    for percent, seconds in windows:
        for name, pct in percent.items():
            cpu[name] = cpu.get(name, 0.0) + pct * seconds / total_s
    return cpu
