"""Start real servers under the agent, as in a pod, and talk to them over loopback.

Every server kind the agent supports (docs/agent.md) is one entry of :data:`SERVERS`:
a function from (python, port) to the command line. :class:`RunningServer`
starts it with ``PYTHONPATH=build/agent-tree/bootstrap`` (or without the agent,
to compare), waits until it answers, and stops it with SIGTERM like the kubelet.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from support.agent import agent_env, clean_env

APPS = Path(__file__).resolve().parent.parent / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@functools.lru_cache(maxsize=None)
def _gunicorn_flags(python: str) -> Tuple[str, ...]:
    """``--no-control-socket`` where gunicorn has one (>= 24), so parallel runs don't collide."""
    help_text = subprocess.run([python, "-m", "gunicorn", "--help"], capture_output=True, text=True).stdout
    return ("--no-control-socket",) if "--no-control-socket" in help_text else ()


def _gunicorn(worker: str, app: str, workers: int = 2) -> Callable[[str, int], List[str]]:
    def argv(python: str, port: int) -> List[str]:
        extra = ["--threads", "4"] if worker == "gthread" else []
        return [
            python,
            "-m",
            "gunicorn",
            *_gunicorn_flags(python),
            "-w",
            str(workers),
            "-k",
            worker,
            *extra,
            "-b",
            "127.0.0.1:%d" % port,
            "--graceful-timeout",
            "20",
            app,
        ]

    return argv


SERVERS: Dict[str, Callable[[str, int], List[str]]] = {
    "gunicorn-sync": _gunicorn("sync", "flask_app:app"),
    "gunicorn-gthread": _gunicorn("gthread", "flask_app:app"),
    "gunicorn-uvicorn-worker": _gunicorn("uvicorn_worker.UvicornWorker", "fastapi_app:app"),
    "uvicorn": lambda py, port: [
        py,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "fastapi_app:app",
    ],
    "uvicorn-workers": lambda py, port: [
        py,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "2",
        "fastapi_app:app",
    ],
    "hypercorn": lambda py, port: [py, "-m", "hypercorn", "-b", "127.0.0.1:%d" % port, "fastapi_app:app"],
    "waitress": lambda py, port: [py, "-m", "waitress", "--listen=127.0.0.1:%d" % port, "wsgi_plain:app"],
    "django-runserver": lambda py, port: [
        py,
        str(APPS / "djangoapp" / "manage.py"),
        "runserver",
        "127.0.0.1:%d" % port,
    ],
    "grpc": lambda py, port: [py, str(APPS / "grpc_app.py"), str(port)],
}

# How many processes serve requests (each reports to the status server).
SERVING_PROCESSES = {
    "gunicorn-sync": 2,
    "gunicorn-gthread": 2,
    "gunicorn-uvicorn-worker": 2,
    "uvicorn-workers": 2,
}


class Response:
    def __init__(self, status: int, headers: Dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict:
        return json.loads(self.body)


def http_get(
    port: int,
    path: str,
    headers: Optional[Mapping[str, str]] = None,
    timeout: float = 10,
    method: str = "GET",
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


class RunningServer:
    """A server subprocess; use as a context manager."""

    def __init__(
        self,
        kind: str,
        python: str,
        *,
        agent: bool = True,
        env: Optional[Mapping[str, str]] = None,
        pythonpath: Tuple[str, ...] = (),
        nofile: Optional[int] = None,
        extra_args: Sequence[str] = (),
        wrapper: Sequence[str] = (),
    ) -> None:
        """``extra_args`` go after the server's command line (gunicorn and uvicorn accept
        options there); ``wrapper`` goes before it (e.g. ``unshare`` for a private mount)."""
        self.kind = kind
        self.nofile = nofile  # RLIMIT_NOFILE of the server process, to make fd exhaustion cheap to test
        self.extra_args = tuple(extra_args)
        self.wrapper = tuple(wrapper)
        self.python = python
        self.agent = agent
        self.port = free_port()
        self.status_port = free_port()
        extra = {
            "PILOTFISH_STATUS_PORT": str(self.status_port),
            "PILOTFISH_STATUS_HOST": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
        extra.update(env or {})
        paths = (str(APPS), *pythonpath)
        if agent:
            self.env = agent_env(extra, pythonpath=paths)
        else:
            self.env = clean_env(extra)
            self.env["PYTHONPATH"] = os.pathsep.join(paths)
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> RunningServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [*self.wrapper, *SERVERS[self.kind](self.python, self.port), *self.extra_args],
            cwd=str(APPS),
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._limit_files if self.nofile else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "%s exited with %s:\n%s" % (self.kind, self.proc.returncode, self.output())
                )
            if self._answers():
                return
            time.sleep(0.1)
        raise RuntimeError("%s did not answer within %ss:\n%s" % (self.kind, timeout, self.output()))

    def _limit_files(self) -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        if self.kind == "grpc":
            return True
        try:
            return http_get(self.port, "/", timeout=2).status == 200
        except (OSError, http.client.HTTPException):
            return False

    def get(self, path: str, headers: Optional[Mapping[str, str]] = None, timeout: float = 10) -> Response:
        return http_get(self.port, path, headers, timeout)

    def status_get(
        self, path: str, headers: Optional[Mapping[str, str]] = None, method: str = "GET"
    ) -> Response:
        return http_get(self.status_port, path, headers, method=method)

    def status(self) -> dict:
        return self.status_get("/status").json()

    def wait_status(self, predicate: Callable[[dict], bool], timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if predicate(last):
                    return last
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError("status never matched within %ss; last: %s\n%s" % (timeout, last, self.output()))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                os.killpg(
                    self.proc.pid, signal.SIGTERM
                ) if self.kind == "django-runserver" else self.proc.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return int(self.proc.returncode)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")
