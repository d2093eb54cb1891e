"""Which processes make up the stack, how much memory they hold and how much CPU they burn (/proc only).

The API is found by its listening port (the gunicorn master and its workers all
hold that socket); MongoDB and RabbitMQ are the servers the API's own TCP
connections lead to. Nothing needs a pidfile, so this works for any stack the
bench is pointed at.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TCP_LISTEN = "0A"
_TCP_ESTABLISHED = "01"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tcp_sockets() -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of every TCP socket on the host."""
    table: dict[int, tuple[int, int, str]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], int(cols[9])
            table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16), state)
    return table


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return inodes
    for fd in fds:
        try:
            link = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[8:-1]))
    return inodes


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class StackPids:
    api: list[int]  # gunicorn master and workers
    mongodb: list[int]
    rabbitmq: list[int]

    @property
    def api_workers(self) -> list[int]:
        """The API processes whose parent is an API process too (gunicorn's workers)."""
        return [p for p in self.api if _status_field(p, "PPid") in self.api]


def children(pid: int) -> list[int]:
    return [p for p in all_pids() if _status_field(p, "PPid") == pid]


def find_stack(api_port: int) -> StackPids:
    """The API's processes, and the servers its established connections go to."""
    sockets = _tcp_sockets()
    inodes = {pid: _socket_inodes(pid) for pid in all_pids()}
    listening: dict[int, set[int]] = {}  # port -> pids
    for pid, owned in inodes.items():
        for inode in owned:
            entry = sockets.get(inode)
            if entry and entry[2] == _TCP_LISTEN:
                listening.setdefault(entry[0], set()).add(pid)
    api = sorted(listening.get(api_port, set()))
    peer_ports = {
        sockets[i][1]
        for pid in api
        for i in inodes.get(pid, set())
        if i in sockets and sockets[i][2] == _TCP_ESTABLISHED
    }
    servers = {pid for port in peer_ports for pid in listening.get(port, set())} - set(api)
    rabbit = sorted(p for p in servers if "beam" in command_line(p) or "rabbit" in command_line(p))
    mongo = sorted(servers - set(rabbit))
    return StackPids(api=api, mongodb=mongo, rabbitmq=rabbit)


def connections_per_pid(pids: list[int], port: int) -> dict[int, int]:
    """Established TCP connections each process serves on `port` (how a server spread its clients)."""
    sockets = _tcp_sockets()
    return {
        pid: sum(
            1
            for i in _socket_inodes(pid)
            if i in sockets and sockets[i][0] == port and sockets[i][2] == _TCP_ESTABLISHED
        )
        for pid in pids
    }


# ---- memory ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Memory:
    rss_kb: int
    peak_rss_kb: int  # VmHWM: the largest RSS each process had, summed
    pss_kb: int  # proportional share: pages shared between the processes are counted once

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss_kb + other.rss_kb, self.peak_rss_kb + other.peak_rss_kb, self.pss_kb + other.pss_kb)


def _status_field(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(pids: Iterable[int]) -> Memory:
    total = Memory(0, 0, 0)
    for pid in pids:
        total = total + Memory(_status_field(pid, "VmRSS"), _status_field(pid, "VmHWM"), _pss_kb(pid))
    return total


# ---- CPU -------------------------------------------------------------------------------
def _cpu_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine_busy_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle


def _reaped_children_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


class CpuMeter:
    """CPU used per group of processes between start() and stop(), in % of one core.

    The group named `own_group` also gets the CPU of this process's children that
    ended and were reaped in between (the original-path client processes).
    """

    def __init__(self, groups: dict[str, list[int]], own_group: str = "bench") -> None:
        self.groups = groups
        self.own_group = own_group
        self._start: dict[int, int] = {}
        self._machine = 0
        self._children_s = 0.0
        self._wall = 0.0

    def _snapshot(self) -> dict[int, int]:
        return {pid: _cpu_ticks(pid) for pids in self.groups.values() for pid in pids}

    def start(self) -> None:
        self._start = self._snapshot()
        self._machine = _machine_busy_ticks()
        self._children_s = _reaped_children_s()
        self._wall = os.times().elapsed

    def stop(self) -> dict[str, float]:
        end = self._snapshot()
        wall = os.times().elapsed - self._wall
        if wall <= 0:
            return {}
        share = {
            name: 100.0 * sum(end.get(p, 0) - self._start.get(p, 0) for p in pids) / _CLK_TCK / wall
            for name, pids in self.groups.items()
        }
        if self.own_group in share:
            share[self.own_group] += 100.0 * (_reaped_children_s() - self._children_s) / wall
        machine = 100.0 * (_machine_busy_ticks() - self._machine) / _CLK_TCK / wall
        share["other"] = max(0.0, machine - sum(share.values()))
        share["machine"] = machine
        return share
