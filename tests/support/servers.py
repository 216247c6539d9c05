"""Start real servers under the agent, as in a pod, and talk to them over loopback.

Every server kind the agent supports (docs/agent.md) is one entry of :data:`SERVERS`,
the one table of server command lines: a :class:`Kind` turns (python, port) into the
command line, with the app, the number of workers and the keep-alive a test may choose.
:class:`RunningServer` starts it with ``PYTHONPATH=build/agent-tree/bootstrap`` (or
without the agent, to compare), waits until it answers, and stops it with SIGTERM like
the kubelet, then kills whatever is left of its process group.

Ports: a server binds port 0 and the harness reads the port it got from its processes
(support.ports), unless the test needs the number before the start (``port=free_port()``).
The agent's status port is always allocated beforehand (see support.ports.free_port).
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
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from support.agent import agent_env, clean_env
from support.ports import free_port, listening_ports, process_group
from support.wait import GiveUp, eventually

__all__ = ["SERVERS", "SERVING_PROCESSES", "Kind", "Response", "RunningServer", "free_port", "http_get"]

APPS = Path(__file__).resolve().parent.parent / "apps"


@functools.lru_cache(maxsize=None)
def gunicorn_flags(python: str) -> Tuple[str, ...]:
    """``--no-control-socket`` where gunicorn has one (>= 24), so parallel runs don't collide."""
    help_text = subprocess.run([python, "-m", "gunicorn", "--help"], capture_output=True, text=True).stdout
    return ("--no-control-socket",) if "--no-control-socket" in help_text else ()


_gunicorn_flags = gunicorn_flags  # the name other test modules import


class Kind:
    """How to start one kind of server: ``kind(python, port)`` is its command line.

    ``app`` is the default application (module:attribute, or the script for grpc), ``interface``
    what the app must speak (wsgi, asgi or grpc), ``workers`` how many processes serve requests
    (each reports to the status server) and ``keep_alive`` the option that sets the idle
    keep-alive timeout, when the server has one.
    """

    def __init__(
        self,
        argv: Callable[[str, int, str, int], List[str]],
        app: str,
        interface: str,
        workers: int = 1,
        keep_alive: Optional[str] = None,
    ) -> None:
        self.argv = argv  # (python, port, app, workers) -> command line; single-process kinds ignore workers
        self.app = app
        self.interface = interface
        self.workers = workers
        self.keep_alive = keep_alive

    def __call__(
        self,
        python: str,
        port: int,
        app: Optional[str] = None,
        workers: Optional[int] = None,
        keep_alive: Optional[int] = None,
    ) -> List[str]:
        argv = self.argv(python, port, app or self.app, self.workers if workers is None else workers)
        if keep_alive is not None:
            if self.keep_alive is None:
                raise ValueError("this server has no keep-alive option")
            argv += [self.keep_alive, str(keep_alive)]
        return argv


def _gunicorn(worker: str) -> Callable[[str, int, str, int], List[str]]:
    def argv(python: str, port: int, app: str, workers: int) -> List[str]:
        extra = ["--threads", "4"] if worker == "gthread" else []
        return [
            python,
            "-m",
            "gunicorn",
            *gunicorn_flags(python),
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


def _uvicorn(python: str, port: int, app: str, workers: int) -> List[str]:
    argv = [python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
    return argv + (["--workers", str(workers)] if workers > 1 else []) + [app]


# Every one of them binds port 0 when told to, and the harness reads the port it got.
# A test module may add its own kinds, as a Kind or as a bare (python, port) -> argv.
SERVERS: Dict[str, Union[Kind, Callable[[str, int], List[str]]]] = {
    "gunicorn-sync": Kind(_gunicorn("sync"), "flask_app:app", "wsgi", 2, "--keep-alive"),
    "gunicorn-gthread": Kind(_gunicorn("gthread"), "flask_app:app", "wsgi", 2, "--keep-alive"),
    "gunicorn-uvicorn-worker": Kind(
        _gunicorn("uvicorn_worker.UvicornWorker"), "fastapi_app:app", "asgi", 2, "--keep-alive"
    ),
    "uvicorn": Kind(_uvicorn, "fastapi_app:app", "asgi", 1, "--timeout-keep-alive"),
    "uvicorn-workers": Kind(_uvicorn, "fastapi_app:app", "asgi", 2, "--timeout-keep-alive"),
    "hypercorn": Kind(
        lambda py, port, app, _w: [py, "-m", "hypercorn", "-b", "127.0.0.1:%d" % port, app],
        "fastapi_app:app",
        "asgi",
    ),
    "waitress": Kind(
        lambda py, port, app, _w: [py, "-m", "waitress", "--listen=127.0.0.1:%d" % port, app],
        "wsgi_plain:app",
        "wsgi",
    ),
    "django-runserver": Kind(
        lambda py, port, app, _w: [py, app, "runserver", "127.0.0.1:%d" % port],
        str(APPS / "djangoapp" / "manage.py"),
        "wsgi",
    ),
    "grpc": Kind(lambda py, port, app, _w: [py, app, str(port)], str(APPS / "grpc_app.py"), "grpc"),
}

# How many processes serve requests (each reports to the status server).
SERVING_PROCESSES = {
    name: kind.workers for name, kind in SERVERS.items() if isinstance(kind, Kind) and kind.workers > 1
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


_Server = TypeVar("_Server", bound="RunningServer")


class RunningServer:
    """A server subprocess under the agent (or without it); use as a context manager.

    ``kind`` names an entry of :data:`SERVERS` (or, with ``argv``, labels a script of the
    test's own that takes its port some other way); ``app``, ``workers`` and ``keep_alive`` change
    its command line, ``extra_args`` go after it (gunicorn and uvicorn accept options there)
    and ``wrapper`` before it (e.g. ``unshare`` for a private mount). ``port``: a port chosen
    beforehand (by :func:`free_port`) when the test needs it before the start; by default the
    server binds port 0 and :attr:`port` is the port it got. ``start()`` returns once
    ``ready_path`` answers 200 (or, with None, once the port accepts connections).
    """

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
        app: Optional[str] = None,
        workers: Optional[int] = None,
        keep_alive: Optional[int] = None,
        port: Optional[int] = None,
        ready_path: Optional[str] = "/",
        argv: Optional[Sequence[str]] = None,
    ) -> None:
        self.kind = kind
        self.own_argv = None if argv is None else list(argv)  # a plain script's command line, not the table's
        self.ready_path = ready_path  # answers 200 once the server is up; None: the port accepts connections
        self.nofile = nofile  # RLIMIT_NOFILE of the server process, to make fd exhaustion cheap to test
        self.extra_args = tuple(extra_args)
        self.wrapper = tuple(wrapper)
        self.python = python
        self.agent = agent
        self.app_name, self.workers, self.keep_alive = app, workers, keep_alive
        self._port = port
        # Not port 0: every process of the app must be told the same status port, it is how
        # a worker finds its owner. free_port() hands out one no other test or process takes.
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

    def __enter__(self: _Server) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self) -> List[str]:
        if self.own_argv is not None:
            return [*self.wrapper, *self.own_argv, *self.extra_args]
        entry: Union[Kind, Callable[[str, int], List[str]]] = SERVERS[self.kind]
        port = 0 if self._port is None else self._port
        if isinstance(entry, Kind):
            argv = entry(self.python, port, self.app_name, self.workers, self.keep_alive)
        else:  # a test's own entry: (python, port) -> command line
            argv = entry(self.python, port)
        return [*self.wrapper, *argv, *self.extra_args]

    def start(self, timeout: float = 30, wait: bool = True) -> None:
        """Start the server; with ``wait``, return once it answers on its port."""
        self.proc = subprocess.Popen(
            self.command(),
            cwd=str(APPS),
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=self._limit_files if self.nofile else None,
        )
        if wait:
            # every 0.05 s: until the port is known, each check reads /proc (a few ms)
            eventually(
                self._answers,
                timeout,
                "%s answering on its port" % self.kind,
                interval=0.05,
                context=self.output,
            )

    def _limit_files(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def raise_if_exited(self) -> None:
        """For checks given to eventually(): a server that has exited will not come up (GiveUp)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise GiveUp("%s exited with %s:\n%s" % (self.kind, self.proc.returncode, self.output()))

    def _bound_port(self) -> Optional[int]:
        """The app's port, once its processes listen on exactly one port besides the status port."""
        if self._port is None and self.proc is not None:
            ports = listening_ports(process_group(self.proc.pid) | {self.proc.pid}) - {self.status_port}
            if len(ports) == 1:
                self._port = ports.pop()
        return self._port

    @property
    def port(self) -> int:
        """The app's port; for a server that binds port 0, waits until it has bound it."""
        if self._port is None:
            if self.proc is None:
                raise RuntimeError("%s binds port 0: its port is known once it has started" % self.kind)

            def bound() -> Optional[int]:
                self.raise_if_exited()
                return self._bound_port()

            eventually(bound, 30, "%s listening on a port" % self.kind, interval=0.05, context=self.output)
        assert self._port is not None
        return self._port

    def _answers(self) -> bool:
        self.raise_if_exited()
        port = self._bound_port()
        if port is None:
            return False
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
        if self.kind == "grpc" or self.ready_path is None:
            return True
        return http_get(port, self.ready_path, timeout=2).status == 200

    def app_listening(self) -> bool:
        """Whether the app's port accepts connections now (False before it is bound)."""
        port = self._bound_port()
        if port is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
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
        last: Dict[str, dict] = {}

        def matches() -> Optional[dict]:
            last["status"] = self.status()
            return last["status"] if predicate(last["status"]) else None

        return eventually(
            matches,
            timeout,
            "status matching",
            context=lambda: "last status: %s\n%s" % (last.get("status"), self.output()),
        )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM as the kubelet sends it, SIGKILL past ``timeout``; then nothing of it is left."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                if self.kind == "django-runserver":  # the autoreloader's child serves
                    os.killpg(self.proc.pid, signal.SIGTERM)
                else:
                    self.proc.terminate()
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL the whole process group: the server and any worker it left behind."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")


def stream_holds_in_flight(server: RunningServer) -> dict:
    """GET a 6-chunk streamed response (0.25 s apart) and check the agent's in-flight follows it:
    1 while it streams, 0 only after its last chunk (no sooner than 1.5 s); the final status."""
    import threading
    import time

    result: Dict[str, Response] = {}
    worker = threading.Thread(
        target=lambda: result.setdefault("r", server.get("/stream?chunks=6&delay=0.25")), daemon=True
    )
    started = time.monotonic()
    worker.start()
    server.wait_status(lambda s: s["in_flight"] == 1, timeout=5)
    worker.join(timeout=15)
    assert result["r"].status == 200 and result["r"].body.count(b"chunk") == 6
    done = server.wait_status(lambda s: s["in_flight"] == 0, timeout=5)
    assert time.monotonic() - started >= 1.5
    return done
