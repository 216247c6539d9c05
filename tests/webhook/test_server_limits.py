"""Bad input costs the real server little: ``pilotfish-webhook serve`` over HTTPS on loopback.

- a huge AdmissionReview (thousands of containers, ~3 MiB) gets a bounded answer with a
  warning naming the limit, and ``/healthz`` keeps answering while it is processed;
- a request whose headers or body stop arriving is answered ``408`` and its connection
  closed once ``--read-timeout-seconds`` pass, on ``/mutate`` and on every config API
  endpoint, while other requests go on unaffected; a connection that sends nothing is
  closed too; an oversize config API body is refused with ``413``.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest
from pilotfish_webhook.admission.mutate import MAX_INJECTED_CONTAINERS
from pilotfish_webhook.admission.router import DEFAULT_MAX_BODY_BYTES
from support.config_server import ConfigServer, example_config_server
from support.pods import admission_review

READ_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConfigServer]:
    tmp = tmp_path_factory.mktemp("limits")
    with example_config_server(tmp, ["--read-timeout-seconds", str(READ_TIMEOUT)]) as running:
        yield running


@pytest.fixture()
def http(server: ConfigServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, verify=server.context(), timeout=30) as client:
        yield client


def huge_review() -> Tuple[bytes, int]:
    """The largest review the server accepts: a pod naming every one of its containers."""

    def body(count: int) -> bytes:
        containers = [{"name": "c%06d" % i, "image": "shop:1"} for i in range(count)]
        pod: Dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "huge",
                "namespace": "shop",
                "labels": {"app": "shop"},
                "annotations": {"pilotfish.io/containers": ",".join(x["name"] for x in containers)},
            },
            "spec": {"containers": containers},
        }
        return json.dumps(admission_review(pod, uid="uid-huge")).encode()

    per_container = len(body(1001)) - len(body(1000))
    count = (DEFAULT_MAX_BODY_BYTES - len(body(0))) // per_container - 100
    data = body(count)
    assert DEFAULT_MAX_BODY_BYTES - 64 * 1024 < len(data) <= DEFAULT_MAX_BODY_BYTES
    return data, count


def test_a_huge_review_gets_a_bounded_answer_while_healthz_stays_responsive(
    server: ConfigServer, http: httpx.Client
) -> None:
    data, count = huge_review()
    result: Dict[str, Any] = {}

    def post() -> None:
        with httpx.Client(base_url=server.url, verify=server.context(), timeout=120) as big:
            started = time.monotonic()
            answer = big.post("/mutate", content=data, headers={"Content-Type": "application/json"})
            result.update(answer=answer, seconds=time.monotonic() - started)

    sender = threading.Thread(target=post)
    sender.start()
    slowest, probes = 0.0, 0
    while sender.is_alive() or probes < 3:
        started = time.monotonic()
        assert http.get("/healthz", timeout=10).status_code == 200
        took = time.monotonic() - started
        slowest, probes = max(slowest, took), probes + 1
        assert took < 1.0, "/healthz took %.2f s while a %d-byte review was processed" % (took, len(data))
        time.sleep(0.02)
    sender.join()
    answer = result["answer"]
    assert answer.status_code == 200
    assert len(answer.content) < 2048
    response = answer.json()["response"]
    assert response["uid"] == "uid-huge" and response["allowed"] is True and "patch" not in response
    [warning] = response["warnings"]
    assert "%d containers" % count in warning and "limit of %d" % MAX_INJECTED_CONTAINERS in warning
    assert result["seconds"] < 10, "the huge review took %.1f s" % result["seconds"]


def stalled(server: ConfigServer, head: bytes, sent: bytes) -> ssl.SSLSocket:
    """A TLS connection that sent ``head`` and part of the body, then goes quiet."""
    host, port = server.url.rsplit("/", 1)[-1].split(":")
    raw = socket.create_connection((host, int(port)), timeout=10)
    tls = server.context().wrap_socket(raw, server_hostname=host)
    tls.sendall(head + sent)
    return tls


def read_until_closed(tls: ssl.SSLSocket, limit: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``limit`` s)."""
    data = b""
    deadline = time.monotonic() + limit
    while True:
        tls.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = tls.recv(65536)
        except socket.timeout:
            raise AssertionError("connection still open after %.0f s; got %r" % (limit, data))
        except (ssl.SSLError, ConnectionError):
            return data
        if not chunk:
            return data
        data += chunk


def request_head(method: str, path: str, length: int) -> bytes:
    return (
        "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\n\r\n" % (method, path, length)
    ).encode()


STALLED: List[Tuple[str, str]] = [
    ("POST", "/mutate"),
    ("POST", "/v1/register"),
    ("POST", "/v1/deregister"),
    ("GET", "/v1/config?namespace=demo&app=shop&timeout=30"),
    ("GET", "/v1/instances?namespace=demo&service=shop&timeout=30"),
]


@pytest.mark.parametrize("method,path", STALLED)
def test_a_body_that_stops_arriving_is_answered_408_and_closed_within_the_deadline(
    server: ConfigServer, http: httpx.Client, method: str, path: str
) -> None:
    started = time.monotonic()
    tls = stalled(server, request_head(method, path, 1000), b'{"apiVersi')
    try:
        # Meanwhile the server serves everyone else.
        assert http.get("/healthz").status_code == 200
        assert http.get("/v1/config", params={"namespace": "demo", "app": "shop"}).status_code == 200
        answer = read_until_closed(tls, limit=READ_TIMEOUT + 15)
    finally:
        tls.close()
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within" in answer
    assert READ_TIMEOUT * 0.9 <= took < READ_TIMEOUT + 15


@pytest.mark.parametrize(
    "sent",
    [b"POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le", b"GET /v1/config?namespace=demo&app=shop"],
)
def test_headers_that_stop_arriving_are_answered_408_and_closed_within_the_deadline(
    server: ConfigServer, http: httpx.Client, sent: bytes
) -> None:
    started = time.monotonic()
    tls = stalled(server, sent, b"")
    try:
        assert http.get("/healthz").status_code == 200
        answer = read_until_closed(tls, limit=READ_TIMEOUT + 15)
    finally:
        tls.close()
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"headers not received within" in answer
    assert READ_TIMEOUT * 0.9 <= took < READ_TIMEOUT + 15


def test_a_connection_that_never_sends_a_request_is_closed(server: ConfigServer) -> None:
    started = time.monotonic()
    tls = stalled(server, b"", b"")
    try:
        assert read_until_closed(tls, limit=READ_TIMEOUT + 15) == b""
    finally:
        tls.close()
    assert READ_TIMEOUT * 0.9 <= time.monotonic() - started < READ_TIMEOUT + 15


def test_the_next_request_on_a_kept_alive_connection_has_the_same_header_deadline(
    server: ConfigServer,
) -> None:
    tls = stalled(server, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"")
    try:
        tls.settimeout(15)
        first = b""
        while b'"ok"' not in first:
            chunk = tls.recv(65536)
            assert chunk, "closed after %r" % first
            first += chunk
        started = time.monotonic()
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        answer = read_until_closed(tls, limit=READ_TIMEOUT + 15)
    finally:
        tls.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert READ_TIMEOUT * 0.9 <= time.monotonic() - started < READ_TIMEOUT + 15


def test_a_parked_long_poll_is_not_cut_by_the_read_deadline(http: httpx.Client) -> None:
    version = http.get("/v1/config", params={"namespace": "demo", "app": "shop"}).json()["version"]
    started = time.monotonic()
    params = {"namespace": "demo", "app": "shop", "version": version, "timeout": READ_TIMEOUT * 3}
    assert http.get("/v1/config", params=params).status_code == 304
    assert time.monotonic() - started >= READ_TIMEOUT * 3 * 0.9


def test_a_slow_but_steady_body_within_the_deadline_is_served(server: ConfigServer) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "slow", "namespace": "shop", "labels": {"app": "shop"}},
        "spec": {"containers": [{"name": "shop", "image": "shop:1"}]},
    }
    data = json.dumps(admission_review(pod, uid="u-slow")).encode()
    tls = stalled(server, request_head("POST", "/mutate", len(data)), data[:10])
    try:
        time.sleep(READ_TIMEOUT / 4)
        tls.sendall(data[10:])
        tls.settimeout(15)
        answer = b""
        while b"u-slow" not in answer:
            chunk = tls.recv(65536)
            assert chunk, "connection closed after %r" % answer
            answer += chunk
    finally:
        tls.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_an_oversize_config_api_body_is_refused_with_413(http: httpx.Client) -> None:
    answer = http.post("/v1/register", content=b"{" + b" " * (128 * 1024) + b"}")
    assert answer.status_code == 413 and "exceeds the limit" in answer.json()["error"]
