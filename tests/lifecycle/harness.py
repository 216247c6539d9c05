"""Run a real server under the agent and watch it from outside, recording a timeline.

Only ``PYTHONPATH=build/agent-tree/bootstrap`` (plus tests/apps for the app module) is
set, as the webhook would; the agent is configured through env vars only.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from support.agent import agent_env
from support.servers import Response, _gunicorn_flags, free_port, http_get

APPS = Path(__file__).resolve().parent.parent / "apps"
TOKEN = "t0ken-for-tests"


def gunicorn_argv(python: str, port: int, worker: str) -> List[str]:
    extra = ["--threads", "4"] if worker == "gthread" else []
    return [
        python,
        "-m",
        "gunicorn",
        *_gunicorn_flags(python),
        "-w",
        "2",
        "-k",
        worker,
        *extra,
        "-b",
        "127.0.0.1:%d" % port,
        "--graceful-timeout",
        "20",
        "--keep-alive",
        "5",
        "lifecycle_wsgi:app",
    ]


def uvicorn_argv(python: str, port: int, _worker: str = "") -> List[str]:
    return [
        python,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--timeout-keep-alive",
        "5",
        "lifecycle_asgi:app",
    ]


def uvicorn_workers_argv(python: str, port: int) -> List[str]:
    return uvicorn_argv(python, port)[:-1] + ["--workers", "2", "lifecycle_asgi:app"]


def grpc_argv(python: str, port: int) -> List[str]:
    return [python, str(APPS / "grpc_app.py"), str(port)]


SERVERS = {
    "grpc": grpc_argv,
    "gunicorn-sync": lambda py, port: gunicorn_argv(py, port, "sync"),
    "gunicorn-gthread": lambda py, port: gunicorn_argv(py, port, "gthread"),
    "uvicorn": uvicorn_argv,
    "uvicorn-workers": uvicorn_workers_argv,
}


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


class Server:
    """One server process under the agent, with its status port."""

    def __init__(self, kind: str, python: str, env: Optional[Mapping[str, str]] = None) -> None:
        self.kind = kind
        self.python = python
        self.port = free_port()
        self.status_port = free_port()
        self.probe_fail_file = tempfile.mktemp(prefix="pilotfish-probe-fail-")
        extra = {
            "PILOTFISH_STATUS_PORT": str(self.status_port),
            "PILOTFISH_STATUS_HOST": "127.0.0.1",
            "PILOTFISH_OFFLINE_TOKEN": TOKEN,
            "PILOTFISH_LOG_LEVEL": "info",
            "APP_PROBE_FAIL_FILE": self.probe_fail_file,
            "PYTHONUNBUFFERED": "1",
        }
        extra.update(env or {})
        self.env = agent_env(extra, pythonpath=(str(APPS),))
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.proc: Optional[subprocess.Popen] = None
        self.started_at = 0.0

    def start(self) -> Server:
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            SERVERS[self.kind](self.python, self.port),
            cwd=str(APPS),
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        try:
            os.unlink(self.probe_fail_file)
        except OSError:
            pass

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def app(self, path: str, **kwargs: Any) -> Reply:
        return get(self.port, path, **kwargs)

    def readiness(self) -> Optional[int]:
        try:
            return get(self.status_port, "/readiness", timeout=2).status
        except OSError:
            return None

    def status(self) -> Dict[str, Any]:
        return get(self.status_port, "/status", timeout=5).json()  # type: ignore[no-any-return]

    def offline(self, wait: bool = True, timeout: float = 60) -> Reply:
        return get(
            self.status_port,
            "/offline" + ("" if wait else "?wait=false"),
            headers={"X-Pilotfish-Token": TOKEN},
            timeout=timeout,
        )

    def wait_for(self, predicate: Any, timeout: float = 20, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError("%s never held within %ss (last %r)\n%s" % (what, timeout, last, self.output()))

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_for(lambda: self.readiness() == 200, timeout, "readiness 200")
        # free_port() cannot reserve a port: make sure the status server is this server's.
        owner = self.status().get("pid")
        assert self.proc is not None and owner == self.proc.pid, (
            "status port %d answered from pid %s, not from this server (pid %s)\n%s"
            % (self.status_port, owner, self.proc.pid if self.proc else None, self.output()[-2000:])
        )
        # gunicorn: both workers booted and reporting, so requests are spread as in production.
        if self.kind.startswith("gunicorn") or self.kind == "uvicorn-workers":
            self.wait_for(lambda: len(self.status()["workers"]) >= 2, timeout, "2 workers")

    def app_listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


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
