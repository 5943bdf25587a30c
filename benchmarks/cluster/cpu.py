"""CPU accounting: this process, the node processes and their workers, the machine."""

from __future__ import annotations

import os
import pathlib
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CpuMark",
    "client_cpu_seconds",
    "cores",
    "machine_busy_seconds",
    "node_cpu_seconds",
    "node_exponentiation_seconds",
    "others_busy",
]

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def node_cpu_seconds(groups: Sequence[int]) -> float:
    """CPU time (user + system) of every live process in the given process groups, plus
    what their leaders' reaped children used."""
    wanted = set(groups)
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None or int(fields[2]) not in wanted:  # field 5: pgrp
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if int(entry.name) in wanted:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


#: The system names of a node's exponentiation threads (ittc_node.threadname).
EXPONENTIATION_THREADS = ("ittc-sign", "ittc-worker")


def node_exponentiation_seconds(groups: Sequence[int]) -> float:
    """CPU time of the live threads, in the given process groups, that the nodes name as
    their exponentiation threads (compute threads, worker processes)."""
    wanted = set(groups)
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is None or int(fields[2]) not in wanted:
            continue
        try:
            tasks = list(os.scandir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
        for task in tasks:
            try:
                name = pathlib.Path(task.path, "comm").read_text().strip()
            except OSError:
                continue
            if name.startswith(EXPONENTIATION_THREADS):
                thread = _stat_fields(f"{entry.name}/task/{task.name}")
                if thread is not None:
                    ticks += int(thread[11]) + int(thread[12])
    return ticks / _TICK


def machine_busy_seconds() -> float | None:
    """CPU time the whole machine spent busy (all cores), from /proc/stat."""
    try:
        first = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / _TICK


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMark:
    wall: float
    client: float
    nodes: float | None
    machine: float | None
    #: The nodes' exponentiation threads (part of ``nodes``).
    nodes_exponentiation: float | None = None

    @classmethod
    def now(cls, groups: Sequence[int] | None, *, nodes_first: bool) -> CpuMark:
        # The /proc scan costs this process CPU: do it outside the client's window.
        nodes = exps = None
        # The nodes' totals are read outside their exponentiation threads' reads (before
        # them at the start, after them at the end), so the threads' window lies inside
        # the totals' and their CPU never exceeds the total it is a part of.
        if groups is not None and nodes_first:
            nodes, exps = node_cpu_seconds(groups), node_exponentiation_seconds(groups)
        machine = machine_busy_seconds()
        client = client_cpu_seconds()
        wall = time.perf_counter()
        if groups is not None and not nodes_first:
            exps, nodes = node_exponentiation_seconds(groups), node_cpu_seconds(groups)
        return cls(wall, client, nodes, machine, exps)


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def others_busy(seconds: float = 0.5) -> float | None:
    """Share of all cores busy over ``seconds`` while our cluster is idle: other work."""
    start = machine_busy_seconds()
    t0 = time.perf_counter()
    time.sleep(seconds)
    end = machine_busy_seconds()
    if start is None or end is None:
        return None
    return (end - start) / ((time.perf_counter() - t0) * cores())
