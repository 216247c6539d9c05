"""Run a small app script under the agent, as in a pod, and look at it from outside.

For tests whose app is not one of :data:`support.servers.SERVERS`: the script prints
what the test needs on stdout (one line per fact), stderr is kept for the agent's
lines, and the whole process group is killed at the end.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set, Union

from support.agent import agent_env
from support.servers import free_port, http_get

APPS = Path(__file__).resolve().parent.parent / "apps"


class AgentScript:
    """``python script args...`` under the agent, with a free status port on loopback.

    ``script`` may also be ``"-m"`` (then ``args`` starts with the module), run in ``cwd``.
    """

    def __init__(
        self,
        python: str,
        script: Union[Path, str],
        args: Sequence[str] = (),
        env: Optional[Mapping[str, str]] = None,
        prefix: Sequence[str] = (),
        cwd: Optional[str] = None,
    ) -> None:
        self.status_port = free_port()
        extra = {
            "PILOTFISH_STATUS_PORT": str(self.status_port),
            "PILOTFISH_STATUS_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        extra.update(env or {})
        self.env: Dict[str, str] = agent_env(extra, pythonpath=(str(APPS),))
        self.argv = [*prefix, python, str(script), *args]
        self.cwd = cwd
        self.lines: List[str] = []
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> AgentScript:
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, prefix: str, timeout: float = 30) -> str:
        """The first stdout line starting with ``prefix`` (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line
            if (
                self.proc is not None
                and self.proc.poll() is not None
                and not any(line.startswith(prefix) for line in self.lines)
            ):
                time.sleep(0.2)  # let the reader drain the pipe once more
                if not any(line.startswith(prefix) for line in self.lines):
                    raise AssertionError(
                        "exited with %s before %r:\n%s" % (self.proc.returncode, prefix, self.stderr())
                    )
            time.sleep(0.02)
        raise AssertionError(
            "no line %r within %ss; stdout %r\n%s" % (prefix, timeout, self.lines, self.stderr())
        )

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def status(self, timeout: float = 30) -> dict:
        """``/status`` of this script's status port, once it answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return http_get(self.status_port, "/status", timeout=5).json()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def wait_status(self, predicate, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            try:
                status = http_get(self.status_port, "/status", timeout=5).json()
                if predicate(status):
                    return status
            except OSError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("exited with %s:\n%s" % (self.proc.returncode, self.stderr()))
            time.sleep(0.05)
        raise AssertionError("status never matched: %r\n%s" % (status, self.stderr()))


def listening_tcp_ports(pid: int) -> Set[int]:
    """The TCP ports process ``pid`` has a listening socket on (its fds, matched in /proc/net)."""
    inodes = set()
    for fd in glob.glob("/proc/%d/fd/*" % pid):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
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
