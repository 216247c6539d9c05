"""Run a real server under the agent and watch it from outside, recording a timeline.

The servers are those of :data:`support.servers.SERVERS`, started by its RunningServer
(``PYTHONPATH=build/agent-tree/bootstrap`` plus tests/apps, as the webhook would), with
the lifecycle apps of tests/apps; the agent is configured through env vars only.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from support.servers import SERVERS, Kind, Response, RunningServer, free_port, http_get
from support.wait import eventually

TOKEN = "t0ken-for-tests"
# The apps that say what happened to each request (tests/apps), by what the server speaks.
APPS_BY_INTERFACE = {"wsgi": "lifecycle_wsgi:app", "asgi": "lifecycle_asgi:app"}


class Reply(Response):
    """A response, with when the request was sent and when its answer had been read."""

    def __init__(
        self, status: int, headers: Dict[str, str], body: bytes, started: float, ended: float
    ) -> None:
        super().__init__(status, headers, body)
        self.started, self.ended = started, ended


def get(
    port: int,
    path: str,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 30,
    method: str = "GET",
) -> Reply:
    started = time.time()
    response = http_get(port, path, headers, timeout, method)
    return Reply(response.status, response.headers, response.body, started, time.time())


class Server(RunningServer):
    """One server of :data:`support.servers.SERVERS` under the agent, running a lifecycle app.

    ``start()`` returns at once (tests watch the start from outside); leaving the ``with``
    block kills the whole process group.
    """

    def __init__(self, kind: str, python: str, env: Optional[Mapping[str, str]] = None) -> None:
        self.probe_fail_file = tempfile.mktemp(prefix="pilotfish-probe-fail-")
        extra = {
            "PILOTFISH_OFFLINE_TOKEN": TOKEN,
            "PILOTFISH_LOG_LEVEL": "info",
            "APP_PROBE_FAIL_FILE": self.probe_fail_file,
        }
        extra.update(env or {})
        spec = SERVERS[kind]
        assert isinstance(spec, Kind), kind
        super().__init__(
            kind,
            python,
            env=extra,
            app=APPS_BY_INTERFACE.get(spec.interface),
            keep_alive=5 if spec.keep_alive else None,
            # Chosen beforehand, not port 0: the app's own readiness probe (PILOTFISH_APP_PROBE)
            # names the port in the environment the server starts with.
            port=free_port(),
        )
        self.started_at = 0.0

    def start(self, timeout: float = 30, wait: bool = False) -> None:
        self.started_at = time.time()
        super().start(timeout, wait)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        try:
            os.unlink(self.probe_fail_file)
        except OSError:
            pass

    def app(self, path: str, **kwargs: Any) -> Reply:
        return get(self.port, path, **kwargs)

    def readiness(self) -> Optional[int]:
        try:
            return get(self.status_port, "/readiness", timeout=2).status
        except OSError:
            return None

    def status(self) -> Dict[str, Any]:
        return get(self.status_port, "/status", timeout=5).json()

    def offline(self, wait: bool = True, timeout: float = 60) -> Reply:
        return get(
            self.status_port,
            "/offline" + ("" if wait else "?wait=false"),
            headers={"X-Pilotfish-Token": TOKEN},
            timeout=timeout,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        eventually(lambda: self.readiness() == 200, timeout, "readiness 200", context=self.output)
        # The status server that answers is this server's, not a stray process's.
        owner = self.status().get("pid")
        assert self.proc is not None and owner == self.proc.pid, (
            "status port %d answered from pid %s, not from this server (pid %s)\n%s"
            % (self.status_port, owner, self.proc.pid if self.proc else None, self.output()[-2000:])
        )
        # gunicorn: both workers booted and reporting, so requests are spread as in production.
        if self.kind.startswith("gunicorn") or self.kind == "uvicorn-workers":
            eventually(lambda: len(self.status()["workers"]) >= 2, timeout, "2 workers", context=self.output)


class Timeline:
    """Everything observed, with wall-clock times, printed on failure for the record."""

    def __init__(self) -> None:
        self.events: List[Tuple[float, str]] = []
        self._lock = threading.Lock()
        self.t0 = time.time()

    def add(self, what: str, at: Optional[float] = None) -> None:
        with self._lock:
            self.events.append((time.time() if at is None else at, what))

    def __str__(self) -> str:
        return "\n".join("%+8.3fs %s" % (at - self.t0, what) for at, what in sorted(self.events))


class Load:
    """A client sending requests one after another (new connection each) until stopped."""

    def __init__(self, port: int, path: str = "/", interval: float = 0.1) -> None:
        self.port, self.path, self.interval = port, path, interval
        self.replies: List[Reply] = []
        self.errors: List[Tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.replies.append(get(self.port, self.path, timeout=10))
            except Exception as problem:  # a lost request: the very thing we count
                self.errors.append((time.time(), repr(problem)))
            self._stop.wait(self.interval)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        self._thread.join(15)
        return self
