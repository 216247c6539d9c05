"""The status port answers only what it should, and cannot be tied up by a client.

Spec (docs/agent.md): unknown paths 404, wrong methods 405, oversize or
slow requests are cut off; /offline needs the X-Pilotfish-Token header equal to
PILOTFISH_OFFLINE_TOKEN, and with no token configured accepts only loopback.
"""

from __future__ import annotations

import socket
import time
from typing import List, Tuple

import pytest
from pilotfish import status_server
from support.interpreters import require_app_python
from support.servers import RunningServer


@pytest.fixture(scope="module")
def server():
    with RunningServer(
        "waitress", require_app_python("3.11"), env={"PILOTFISH_OFFLINE_TOKEN": "s3cret"}
    ) as running:
        running.wait_status(lambda s: s["ready"], timeout=20)
        yield running


def test_unknown_paths_are_404_and_list_the_real_ones(server: RunningServer) -> None:
    response = server.status_get("/nope")
    assert response.status == 404
    assert "/readiness" in response.json()["paths"]


def test_wrong_methods_are_405_with_an_allow_header(server: RunningServer) -> None:
    response = server.status_get("/status", method="DELETE")
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


def test_health_is_an_alias_of_readiness(server: RunningServer) -> None:
    assert server.status_get("/health").json() == server.status_get("/readiness").json()


def test_offline_without_the_token_is_refused_and_changes_nothing(server: RunningServer) -> None:
    for headers in ({}, {"X-Pilotfish-Token": "wrong"}):
        response = server.status_get("/offline", headers=headers)
        assert response.status == 403
        assert "X-Pilotfish-Token" in response.json()["error"]
    assert server.status()["offline"] is False


def test_an_oversize_request_line_is_cut_off(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.status_port), timeout=5) as sock:
        sock.sendall(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 414")


def test_too_many_headers_are_refused(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.status_port), timeout=5) as sock:
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(80))
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        assert sock.recv(64).startswith(b"HTTP/1.1 431")


def test_a_client_that_sends_nothing_is_disconnected_and_others_are_still_served(
    server: RunningServer,
) -> None:
    idle = socket.create_connection(("127.0.0.1", server.status_port), timeout=10)
    try:
        assert server.status_get("/readiness").status == 200  # not blocked by the idle client
        started = time.monotonic()
        assert idle.recv(1) == b""  # the server hung up on it
        assert time.monotonic() - started < 8
    finally:
        idle.close()


def test_offline_token_is_never_shown_in_status(server: RunningServer) -> None:
    status = server.status()
    assert status["config"]["offline_token"] == "(set)"
    assert "s3cret" not in server.status_get("/status").body.decode()


# In-process: the readiness observers (how the lifecycle hears of a fall-back without polling).


def test_every_evaluation_of_the_gates_reaches_the_observers_and_a_raising_one_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(status_server, "_gates", [])
    monkeypatch.setattr(status_server, "_observers", [])
    seen: List[Tuple[bool, object]] = []

    def broken(ready: bool, report: object) -> None:
        raise RuntimeError("observer bug")

    status_server.add_gate("flaky", lambda: (False, "not yet"))
    status_server.add_readiness_observer(broken)
    status_server.add_readiness_observer(lambda ready, report: seen.append((ready, report)))

    ready, report = status_server.evaluate_gates()

    assert ready is False
    assert report == {"flaky": {"ok": False, "reason": "not yet"}}
    assert seen == [(False, report)]
