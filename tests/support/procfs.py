"""The server's processes as /proc sees them: its workers, its process group, their memory.

Tests bound the workers' resident memory and benchmarks report it; both read it here, so a
figure in a benchmark and a bound in a test mean the same thing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path
from typing import Protocol


class HasProcess(Protocol):
    """A running server: tests' DevServer and the benchmarks' Server both are one."""

    proc: subprocess.Popen[bytes] | None


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [2] pgrp,
    [11] utime, [12] stime; None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _all_fields() -> list[tuple[int, list[str]]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) is not None:
            out.append((int(entry), fields))
    return out


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of `pid`: a server's workers."""
    return {p for p, f in _all_fields() if int(f[1]) == pid and f[0] != "Z"}


def group(pgid: int) -> set[int]:
    """Every process in process group `pgid`: a server started in its own session and all
    it spawned."""
    return {p for p, f in _all_fields() if int(f[2]) == pgid}


def rss(pids: set[int]) -> int:
    """Sum of VmRSS (bytes) of `pids`; a process that is gone counts nothing."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def worker_rss(server: HasProcess) -> int:
    """VmRSS (bytes) of the server process's children: its workers."""
    assert server.proc is not None
    return rss(children(server.proc.pid))


class PeakRss(threading.Thread):
    """The highest `worker_rss` seen, sampled every 10 ms while the block runs."""

    def __init__(self, server: HasProcess) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.done = server, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, worker_rss(self.server))
            self.done.wait(0.01)

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join(5)


def memory_holds(pid: int, needles: list[bytes]) -> set[bytes]:
    """Which of `needles` occur anywhere in the readable memory of process `pid`
    (/proc/PID/maps and /proc/PID/mem; needs the right to trace it, as root has). A
    needle split across two mappings is not found; a needle never is across regions."""
    found: set[bytes] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                region = mem.read(end - start)
            except (OSError, OverflowError, ValueError):
                continue  # [vvar], guard pages and the like
            found |= {n for n in needles if n not in found and n in region}
    return found
