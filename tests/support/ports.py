"""Ports for test servers, without bind-and-release races.

Servers that can bind port 0 do so, and the harness reads the port they got from the
process (:func:`listening_ports` of its process group). A few cannot: the agent's status
port is how an app's worker processes find their owner, so every process of one app must
be told the same number beforehand, and some tests configure a peer's address before the
peer starts. For those, :func:`free_port` hands out a port that nothing else will take:

- below the kernel's ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``), so no
  ``bind(0)`` and no outgoing connection of any process can be given it (and below the
  NodePort range, 30000 on);
- held with an exclusive lock on its byte of one shared file until this process exits, so
  two test processes (parallel workers, several checkouts) never hand out the same port;
- checked free with a bind at hand-out time, for anything else that listens there.
"""

from __future__ import annotations

import fcntl
import glob
import os
import random
import socket
import tempfile
import threading
from pathlib import Path
from typing import IO, Optional, Set

# One file for every checkout and every TMPDIR, so all test processes on the machine see the same locks.
_LOCKS = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / "pilotfish-test-ports.lock"
_lock_file: Optional[IO[bytes]] = None  # one fd for all: closing it would drop every lock
_handed_out: Set[int] = set()  # a process's own record locks never conflict with each other
_guard = threading.Lock()
_FLOOR = 20000  # below: well-known and registered services a developer may run
_NODE_PORTS = 30000  # and from here on Kubernetes' NodePort range (a local cluster may bind those)


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port reserved for this test process (see the module's docstring)."""
    global _lock_file
    with _guard:
        if _lock_file is None:
            _lock_file = open(_LOCKS, "ab")  # noqa: SIM115 - open until the process exits
        top = min(_ephemeral_start(), _NODE_PORTS)
        start = random.randrange(_FLOOR, top)
        for port in [*range(start, top), *range(_FLOOR, start)]:
            if port in _handed_out:
                continue
            try:
                fcntl.lockf(_lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
            except OSError:
                continue  # another test process has it
            if _bindable(port):
                _handed_out.add(port)
                return port
            fcntl.lockf(_lock_file, fcntl.LOCK_UN, 1, port)
    raise RuntimeError("no free port between %d and %d" % (_FLOOR, top))


def _socket_inodes(pids: Set[int]) -> Set[str]:
    inodes = set()
    for pid in pids:
        for fd in glob.glob("/proc/%d/fd/*" % pid):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def process_group(pgid: int) -> Set[int]:
    """The live processes of process group ``pgid`` (a server started with ``start_new_session``)."""
    pids = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid):  # after "pid (comm)": state ppid pgrp
            pids.add(int(stat.split("/")[2]))
    return pids


def listening_ports(pids: Set[int]) -> Set[int]:
    """The TCP ports the processes ``pids`` have a listening socket on (their fds, matched in /proc/net)."""
    inodes = _socket_inodes(pids)
    ports: Set[int] = set()
    if not inodes:
        return ports
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def listening_tcp_ports(pid: int) -> Set[int]:
    """The TCP ports process ``pid`` itself has a listening socket on."""
    return listening_ports({pid})
