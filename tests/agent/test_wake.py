"""Waking up: once, on the app's real server, without blocking an event loop, never leaking.

Spec: the agent wakes on the first TCP listener of the app (AF_INET/AF_INET6 stream),
never on the Unix sockets of ``multiprocessing.Manager()`` or the forkserver. The wake
runs on the agent's own thread: the thread that called ``listen()`` (an asyncio app's
event loop) does no file or network work for us. A wake happens at most once per
process; one that fails closes what it opened (the status socket, the shared memory)
and leaves the app to run alone.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest
from support.interpreters import matrix_versions, require_app_python, require_interpreter
from support.ports import listening_tcp_ports
from support.scripts import APPS, AgentScript
from support.servers import _gunicorn_flags, free_port, http_get
from support.wait import eventually

WAKE = APPS / "wake"


def _app_get(port: int, path: str = "/") -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _flagged(port: int) -> Dict[str, Any]:
    return json.loads(http_get(port, "/flagged").body)


@pytest.mark.parametrize("minor", matrix_versions())
def test_an_asyncio_app_that_forbids_blocking_calls_on_its_loop_wakes_once_and_leaks_nothing(
    minor: str,
) -> None:
    python = require_interpreter(minor)
    with AgentScript(python, WAKE / "asyncio_strict.py", ["4"], env={"PILOTFISH_LOG_LEVEL": "info"}) as app:
        _, pid, *ports = app.line("listening").split()
        app_ports = {int(port) for port in ports}
        status = app.wait_status(lambda s: s["ready"])
        assert status["runtime"]["role"] == "owner" and status["runtime"]["pid"] == int(pid)
        for port in app_ports:
            assert _app_get(port).status == 200
        assert _flagged(min(app_ports))["flagged"] == [], "the agent blocked the event loop"
        assert listening_tcp_ports(int(pid)) == app_ports | {app.status_port}
        log = app.stderr()
    assert log.count("serving status on") == 1
    assert "warning" not in log, log


def test_a_wake_that_fails_closes_the_status_socket_and_is_not_tried_again() -> None:
    python = require_interpreter("3.11")
    env = {"FAULT": "status-thread"}  # the status server's thread cannot start
    with AgentScript(python, WAKE / "asyncio_strict.py", ["3"], env=env) as app:
        _, pid, *ports = app.line("listening").split()
        app_ports = {int(port) for port in ports}
        for port in app_ports:
            assert _app_get(port).status == 200
        eventually(
            lambda: listening_tcp_ports(int(pid)) == app_ports,
            10,
            "the status socket closed",
            context=app.stderr,
        )
        assert _flagged(min(app_ports))["fault_calls"] == 1, "the wake was tried again"
        log = app.stderr()
    assert log.count("pilotfish: warning:") == 1, log
    assert "the agent could not start in this process" in log


def test_a_fork_during_a_slow_wake_waits_for_it_and_the_child_is_a_worker(tmp_path: Path) -> None:
    """A synchronous listen() waits for the wake, and so does a fork: the child of the owner
    is counted, even when a start-up step takes a while."""
    python = require_interpreter("3.11")
    script = tmp_path / "fork_after_listen.py"
    script.write_text(
        "import os, socket, sys, time\n"
        "boot = [m for n, m in sys.modules.items() if n.endswith('.runtime') and hasattr(m, 'on_wake')][0]\n"
        "boot.on_wake(lambda: time.sleep(1))\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        # One write per line: both processes share stdout, unbuffered (print's pieces interleaved).
        "    os.write(1, ('child %d %s\\n' % (os.getpid(), boot.role())).encode()); time.sleep(3600)\n"
        "os.write(1, ('listening %d %s\\n' % (os.getpid(), boot.role())).encode()); time.sleep(3600)\n"
    )
    with AgentScript(python, script) as app:
        listening = app.line("listening")
        assert listening.split()[2] == "owner", (listening, app.lines, app.stderr())
        _, child, role = app.line("child").split()
        assert role == "worker"
        status = app.wait_status(lambda s: len(s["workers"]) >= 1)
        assert int(child) in [worker["pid"] for worker in status["workers"]]


# -- only real servers wake the agent ----------------------------------------------------


def _slow_request(port: int, seconds: float, into: List[Any]) -> None:
    started = time.monotonic()
    response = _app_get(port, "/slow?%g" % seconds)
    into.append((response.status, time.monotonic() - started, time.monotonic()))


def _offline_waits_for_the_slow_request(app: AgentScript, port: int) -> None:
    answers: List[Any] = []
    slow = threading.Thread(target=_slow_request, args=(port, 6.0, answers))
    slow.start()
    app.wait_status(lambda s: s["in_flight"] == 1, timeout=20)
    offline = http_get(app.status_port, "/offline", method="POST", timeout=60)
    offline_done = time.monotonic()
    slow.join(30)
    assert offline.status == 200 and offline.json()["drained"] is True, offline.json()
    assert answers and answers[0][0] == 200
    assert offline_done >= answers[0][2], "/offline said drained while the slow request was running"


@pytest.mark.parametrize("helper", ["manager", "forkserver"])
def test_a_multiprocessing_helper_started_first_does_not_become_the_owner(helper: str) -> None:
    python = require_interpreter("3.11")
    with AgentScript(python, WAKE / "helpers_first.py", [helper, "3"]) as app:
        app.line("helper-started")
        # The helper listens on a Unix socket; until the real server listens, nothing may
        # say ready (and the status port is not even open).
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not any(line.startswith("listening") for line in app.lines):
            try:
                readiness = http_get(app.status_port, "/readiness", timeout=2)
            except OSError:
                readiness = None
            assert readiness is None or readiness.status == 503, "ready before the app listens"
            time.sleep(0.1)  # sampling: never ready all along, until the app listens
        _, pid, port = app.line("listening").split()
        status = app.wait_status(lambda s: s["ready"])
        assert status["runtime"]["pid"] == int(pid) and status["runtime"]["role"] == "owner"
        assert status["runtime"]["app_addresses"] == ["127.0.0.1:%s" % port]
        _offline_waits_for_the_slow_request(app, int(port))


def test_a_prefork_server_that_listens_after_forking_counts_every_worker() -> None:
    """Workers forked before anyone listens each wake on their own: the one that binds the
    status port owns it, the others find its shared memory and are counted there."""
    python = require_interpreter("3.11")
    port = free_port()
    with AgentScript(python, WAKE / "prefork_reuseport.py", [str(port), "3"]) as app:
        workers = {int(pid) for pid in app.line("forked").split()[1:]}
        owner = app.wait_status(lambda s: s["ready"])["runtime"]["pid"]
        assert owner in workers
        # the two siblings claim their slots when they wake
        eventually(lambda: len(app.status()["workers"]) >= 2, 20, "two workers with slots")
        for _ in range(30):
            response = _app_get(port)
            assert response.status == 200
        status = app.wait_status(lambda s: s["requests_total"] >= 30)
        served = {worker["pid"] for worker in status["workers"] if worker["requests"]}
        assert status["requests_total"] == 30, status["workers"]
        assert {worker["pid"] for worker in status["workers"]} <= workers
        assert len(served) >= 2, "SO_REUSEPORT spread 30 connections over one worker only?"
        assert "warning" not in app.stderr()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def _unix_get(path: str) -> int:
    conn = _UnixConnection(path)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.mark.parametrize("server", ["gunicorn", "waitress"])
def test_a_server_bound_to_a_unix_socket_on_purpose_still_wakes_the_agent(
    server: str, tmp_path: Path
) -> None:
    """Unix sockets do not wake the agent through listen(); a real server's integration does."""
    python = require_app_python("3.11")
    path = str(tmp_path / "app.sock")
    if server == "gunicorn":
        args = ["gunicorn", *_gunicorn_flags(python), "-w", "2", "-b", "unix:" + path, "flask_app:app"]
        processes = 2
    else:
        args = ["waitress", "--unix-socket=" + path, "wsgi_plain:app"]
        processes = 1
    with AgentScript(python, "-m", args, cwd=str(APPS)) as app:
        status = app.wait_status(lambda s: s["ready"], timeout=60)
        assert status["runtime"]["role"] == "owner"
        assert path in status["runtime"]["app_addresses"]
        for _ in range(6):
            assert _unix_get(path) == 200
        # gunicorn forks its workers a random 0-0.1 s apart: the pod may be ready (and
        # serve all six) before the second worker exists, so wait for it rather than assume it
        status = app.wait_status(lambda s: s["requests_total"] >= 6 and len(s["workers"]) >= processes)
        assert status["requests_total"] == 6
        assert len(status["workers"]) == processes


# -- what the agent says when a setting is wrong -----------------------------------------


def test_a_bad_log_level_is_warned_about_once() -> None:
    python = require_interpreter("3.11")
    with AgentScript(python, WAKE / "listen_twice.py", env={"PILOTFISH_LOG_LEVEL": "loud"}) as app:
        app.line("listening")
        app.wait_status(lambda s: s["runtime"]["role"] == "owner")
        log = app.stderr()
    assert log.count("PILOTFISH_LOG_LEVEL") == 1, log
    assert "PILOTFISH_LOG_LEVEL='loud' is invalid" in log


def test_a_status_host_that_does_not_resolve_is_named_not_reported_as_a_busy_port() -> None:
    python = require_interpreter("3.11")
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -n (a network namespace, so the name lookup stays on this machine)")
    env = {"PILOTFISH_STATUS_HOST": "not-a-host"}
    with AgentScript(python, WAKE / "listen_twice.py", env=env, prefix=[unshare, "-n"]) as app:
        app.line("listening")
        eventually(
            lambda: "pilotfish: warning" in app.stderr(), 20, "the agent's warning", context=app.stderr
        )
        log = app.stderr()
    assert "PILOTFISH_STATUS_HOST='not-a-host' is not a valid or resolvable address" in log, log
    assert "in use" not in log
    assert log.count("pilotfish: warning") == 1


@pytest.mark.parametrize("minor", matrix_versions())
def test_an_app_that_never_imported_threading_keeps_its_main_thread_and_exits_cleanly(minor: str) -> None:
    # threading names main whichever thread imports it first: had that been the agent's wake
    # thread, SIGTERM was left unhandled and Python 3.8 printed an AssertionError at exit.
    python = require_interpreter(minor)
    with AgentScript(python, WAKE / "bare_socket_server.py", args=["3"]) as app:
        app.line("listening")
        status = app.wait_status(lambda s: s["runtime"]["role"] == "owner")
        assert status["pid"] == app.proc.pid  # type: ignore[union-attr]
        app.line("exiting", timeout=30)
        assert app.proc.wait(timeout=30) == 0  # type: ignore[union-attr]
        log = app.stderr()
    assert "non-main thread" not in log, log
    assert "Traceback" not in log and "Exception ignored" not in log, log
