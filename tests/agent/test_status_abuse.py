"""The status port cannot be used to take the app down, nor to smuggle a second request.

Spec: the status port is reachable from the whole cluster network, so a client
that opens many connections and sends its requests slowly must cost the app a
small, fixed number of threads and file descriptors. The app's own port keeps
accepting, and ``/readiness`` keeps answering within a kubelet's 1 s timeout,
while hundreds of such connections are held open. A request must arrive whole
within a few seconds however slowly it trickles. A request whose body framing
is ambiguous (two ``Content-Length``, ``Content-Length`` with
``Transfer-Encoding``) is answered 400 and the connection closed: its body is
never read as a second request.

The server runs with its descriptor limit lowered to 256 so that exhausting it
takes 400 connections, not tens of thousands.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from pilotfish import status_server
from support.interpreters import require_app_python
from support.servers import RunningServer, http_get
from support.wait import eventually

NOFILE = 256
SLOW_CONNECTIONS = 400
PARTIAL_HEAD = b"GET /status HTTP/1.1\r\nHost: status\r\n"  # never finished
EXTRA_AT_MOST = 32  # threads, and descriptors, the status port may cost under any number of connections
WHOLE_REQUEST_WITHIN = 10.0  # seconds a request may take to arrive, however it trickles


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with RunningServer(
        "waitress", require_app_python("3.11"), env={"PILOTFISH_OFFLINE_TOKEN": "s3cret"}, nofile=NOFILE
    ) as running:
        running.wait_status(lambda s: s["ready"], timeout=30)
        yield running


def load(pid: int) -> Dict[str, int]:
    """Open descriptors and threads of a process, from /proc."""
    fds = len(list(Path("/proc/%d/fd" % pid).iterdir()))
    threads = next(
        int(line.split()[1])
        for line in Path("/proc/%d/status" % pid).read_text().splitlines()
        if line.startswith("Threads:")
    )
    return {"fds": fds, "threads": threads}


@contextlib.contextmanager
def slowloris(port: int, count: int) -> Iterator[List[socket.socket]]:
    """``count`` connections that each send part of a request head, then one more byte every second.

    A byte a second keeps each connection under any per-read timeout, which is
    what made this attack work. Opening stops early if connects fail.
    """
    held: List[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in list(held):
                try:
                    sock.send(b"X")
                except OSError:
                    pass

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    failures = 0
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(PARTIAL_HEAD)
                held.append(sock)
            except OSError:
                failures += 1
                if failures >= 5:
                    break
        yield held
    finally:
        stop.set()
        trickler.join(10)
        for sock in held:
            sock.close()


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server closes (or goes quiet for 2 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        sock.settimeout(2)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except socket.timeout:
            pass
    return received


def test_slow_connections_cost_a_bounded_number_of_threads_and_descriptors(server: RunningServer) -> None:
    assert server.proc is not None
    before = load(server.proc.pid)
    with slowloris(server.status_port, SLOW_CONNECTIONS) as held:
        during = load(server.proc.pid)
        print("status port under %d slow connections: before %s, during %s" % (len(held), before, during))
        assert len(held) == SLOW_CONNECTIONS, "the status port stopped accepting connections"
        assert during["fds"] <= before["fds"] + EXTRA_AT_MOST
        assert during["threads"] <= before["threads"] + EXTRA_AT_MOST


def test_the_apps_port_and_readiness_still_answer_while_slow_connections_are_held(
    server: RunningServer,
) -> None:
    with slowloris(server.status_port, SLOW_CONNECTIONS):
        assert http_get(server.port, "/", timeout=5).status == 200  # the app still accepts
        for _ in range(3):
            started = time.monotonic()
            response = http_get(server.status_port, "/readiness", timeout=1)  # a kubelet's default timeout
            assert response.status == 200 and time.monotonic() - started < 1


def test_a_request_trickled_a_byte_at_a_time_is_cut_off_at_its_deadline(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.status_port), timeout=5) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\n")
        started = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started < WHOLE_REQUEST_WITHIN + 10:
            try:
                sock.sendall(b"X")  # one header byte every 0.5 s: never idle for a whole read timeout
            except OSError:
                closed = True
                break
            readable, _, _ = select.select([sock], [], [], 0.5)
            if readable:
                try:
                    closed = sock.recv(1024) == b""
                except OSError:
                    closed = True
        assert closed, "a trickling client kept its connection past the request deadline"
        assert time.monotonic() - started < WHOLE_REQUEST_WITHIN


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 0\r\nContent-Length: 47\r\n",
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: +5\r\n",
        b"Content-Length: 5, 5\r\n",
    ],
    ids=["two-content-lengths", "length-and-chunked", "chunked", "signed-length", "list-length"],
)
def test_ambiguous_body_framing_gets_400_and_nothing_is_read_as_a_second_request(
    server: RunningServer, framing: bytes
) -> None:
    smuggled = b"GET /status HTTP/1.1\r\nHost: status\r\n\r\n"
    reply = exchange(
        server.status_port,
        b"POST /offline HTTP/1.1\r\nHost: status\r\n" + framing + b"\r\n0\r\n\r\n" + smuggled,
    )
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert reply.count(b"HTTP/1.1 ") == 1, reply


def test_the_body_of_a_request_to_an_unknown_path_is_not_read_as_a_request(server: RunningServer) -> None:
    smuggled = b"GET /status HTTP/1.1\r\nHost: status\r\n\r\n"
    reply = exchange(
        server.status_port,
        b"GET /nope HTTP/1.1\r\nHost: status\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled,
    )
    assert reply.startswith(b"HTTP/1.1 404 ")
    assert reply.count(b"HTTP/1.1 ") == 1, reply


# In-process: the one case a real app cannot be driven into cheaply (every slot busy answering).


@pytest.fixture
def blocked_gate() -> Iterator[threading.Event]:
    """A readiness gate that blocks until released, so /readiness requests hold their slots."""
    release = threading.Event()
    saved = list(status_server._gates)
    status_server.add_gate("blocked-for-test", lambda: (release.wait(30), "released"))
    yield release
    release.set()
    status_server._gates[:] = saved


def test_when_every_slot_is_busy_answering_a_newcomer_gets_a_503_at_once(
    blocked_gate: threading.Event,
) -> None:
    server = status_server.bind("127.0.0.1", 0)
    assert server is not None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    busy: List[socket.socket] = []
    try:
        for _ in range(status_server.MAX_CONNECTIONS):
            sock = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
            sock.sendall(b"GET /readiness HTTP/1.1\r\nHost: status\r\n\r\n")
            busy.append(sock)
        eventually(
            lambda: server.connections()["answering"] >= status_server.MAX_CONNECTIONS,
            10,
            "every connection being answered",
            interval=0.01,
        )
        started = time.monotonic()
        assert exchange(server.server_port, b"GET /readiness HTTP/1.1\r\nHost: status\r\n\r\n").startswith(
            b"HTTP/1.1 503 "
        )
        assert time.monotonic() - started < 3
        assert server.connections()["answering"] == status_server.MAX_CONNECTIONS
        blocked_gate.set()
        for sock in busy:
            sock.settimeout(10)
            assert sock.recv(64).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in busy:
            sock.close()
        server.shutdown()
        server.server_close()
