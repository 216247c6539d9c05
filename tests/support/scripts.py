"""Run a small app script under the agent, as in a pod, and look at it from outside.

For tests whose app is not one of :data:`support.servers.SERVERS`: the script prints
what the test needs on stdout (one line per fact), stderr is kept for the agent's
lines, and the whole process group is killed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

from support.agent import agent_env
from support.servers import free_port, http_get
from support.wait import GiveUp, eventually

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
        self._reader: Optional[threading.Thread] = None

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
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
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

    def _alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise GiveUp("exited with %s:\n%s" % (self.proc.returncode, self.stderr()))

    def line(self, prefix: str, timeout: float = 30) -> str:
        """The first stdout line starting with ``prefix`` (waits for it)."""

        def first() -> Optional[str]:
            found = next((line for line in list(self.lines) if line.startswith(prefix)), None)
            if found is None and self.proc is not None and self.proc.poll() is not None:
                if self._reader is not None:
                    self._reader.join(5)  # the pipe is drained once the process has gone
                found = next((line for line in list(self.lines) if line.startswith(prefix)), None)
                if found is None:
                    raise GiveUp(
                        "exited with %s before %r:\n%s" % (self.proc.returncode, prefix, self.stderr())
                    )
            return found

        return eventually(
            first,
            timeout,
            "a line %r" % prefix,
            context=lambda: "stdout %r\n%s" % (self.lines, self.stderr()),
        )

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def status(self, timeout: float = 30) -> dict:
        """``/status`` of this script's status port, once it answers."""
        return eventually(
            lambda: http_get(self.status_port, "/status", timeout=5).json(),
            timeout,
            "/status answering",
            context=self.stderr,
        )

    def wait_status(self, predicate, timeout: float = 30) -> dict:
        last: Dict[str, dict] = {}

        def matches() -> Optional[dict]:
            self._alive()
            last["status"] = http_get(self.status_port, "/status", timeout=5).json()
            return last["status"] if predicate(last["status"]) else None

        return eventually(
            matches,
            timeout,
            "status matching",
            context=lambda: "%r\n%s" % (last.get("status"), self.stderr()),
        )
