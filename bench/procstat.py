"""CPU time and memory of a process tree, and of the whole machine, from /proc.

A server may run helper processes (or be started through a wrapper), so CPU
time and RSS are summed over the process and all its descendants. VmHWM is the
kernel's own high-water mark of resident memory, so a short peak between two
samples is not missed.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import NamedTuple

_TICK = os.sysconf("SC_CLK_TCK")


class Sample(NamedTuple):
    cpu_s: float = 0.0  # utime + stime, all threads
    rss_kb: int = 0  # VmRSS
    hwm_kb: int = 0  # VmHWM, peak resident set


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()  # the command name may contain spaces


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)


def listener_pid(port: int) -> int | None:
    """The process listening on local TCP ``port`` (the parent, if it forked), or None.

    For a database service, whose processes are not below the server we start.
    """
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()  # sl local_address rem_address st ... inode
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    sockets.add(f"socket:[{inode}]")
    owners = {pid for pid in _pids() if sockets & _open_files(pid)} if sockets else set()
    for pid in sorted(owners):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(_stat_fields(pid)[1]) not in owners:
                return pid
    return None


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _open_files(pid: int) -> set[str]:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    files = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            files.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return files


def _memory_kb(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def sample(pid: int | None) -> Sample:
    """CPU, RSS and peak RSS summed over ``pid``'s process tree."""
    if not pid:
        return Sample()
    cpu, rss, hwm = 0.0, 0, 0
    for p in descendants(pid):
        cpu += cpu_seconds(p)
        r, h = _memory_kb(p)
        rss += r
        hwm += h
    return Sample(cpu, rss, hwm)


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores, incl. steal) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / _TICK


def machine_busy_cores(window: float = 0.5) -> float:
    """Cores in use by anyone during the next ``window`` seconds."""
    b0, t0 = machine_busy(), time.monotonic()
    time.sleep(window)
    return (machine_busy() - b0) / (time.monotonic() - t0)
