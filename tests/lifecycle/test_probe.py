"""The app's original readiness probe, checked with the kubelet's semantics against real servers."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Iterator, List, Tuple

import pytest
from pilotfish import probe
from support.ports import free_port


class AppStub:
    """A real HTTP server on loopback whose /healthz status the test sets; it records requests."""

    def __init__(self, tls_paths: Tuple[str, str] = ("", "")) -> None:
        self.status = 200
        self.delay = 0.0
        self.seen: List[Dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.seen.append(dict(self.headers.items(), path=self.path))
                if stub.delay:
                    threading.Event().wait(stub.delay)
                self.send_response(stub.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls_paths[0]:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls_paths)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app() -> Iterator[AppStub]:
    stub = AppStub()
    yield stub
    stub.close()


def spec_for(port: int, **extra: object) -> probe.ProbeSpec:
    raw = {"httpGet": {"path": "/healthz", "port": port, "scheme": "HTTP", "host": ""}, "timeoutSeconds": 1}
    raw.update(extra)
    return probe.parse(json.dumps(raw))


def test_parse_reads_the_probe_object_the_webhook_passes() -> None:
    spec = probe.parse(
        json.dumps(
            {
                "httpGet": {
                    "path": "/healthz",
                    "port": 8080,
                    "scheme": "HTTP",
                    "host": "",
                    "httpHeaders": [{"name": "X", "value": "y"}],
                },
                "periodSeconds": 10,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 3,
            }
        )
    )
    assert (spec.kind, spec.port, spec.path, spec.scheme, spec.headers) == (
        "httpGet",
        8080,
        "/healthz",
        "HTTP",
        [("X", "y")],
    )
    assert (spec.period, spec.timeout, spec.success_threshold, spec.failure_threshold) == (10, 1, 1, 3)


def test_parse_applies_kubernetes_defaults() -> None:
    spec = probe.parse('{"tcpSocket": {"port": 8080}}')
    assert (
        spec.kind,
        spec.port,
        spec.period,
        spec.timeout,
        spec.success_threshold,
        spec.failure_threshold,
    ) == ("tcpSocket", 8080, 10, 1, 1, 3)


@pytest.mark.parametrize(
    "raw, field",
    [
        ("{nope", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"httpGet": {"port": "http"}}', "PILOTFISH_APP_PROBE.httpGet.port"),
        ('{"httpGet": {"port": 8080, "scheme": "FTP"}}', "PILOTFISH_APP_PROBE.httpGet.scheme"),
        ('{"httpGet": {"port": 8080, "httpHeaders": [{"value": "x"}]}}', "httpHeaders[0].name"),
        ('{"tcpSocket": {"port": 70000}}', "PILOTFISH_APP_PROBE.tcpSocket.port"),
        ('{"tcpSocket": {"port": 80}, "periodSeconds": "10"}', "PILOTFISH_APP_PROBE.periodSeconds"),
        ('{"tcpSocket": {"port": 80}, "failureThreshold": 0}', "PILOTFISH_APP_PROBE.failureThreshold"),
        ('{"exec": {"command": ["true"]}}', "PILOTFISH_APP_PROBE.exec"),
        ("{}", "expected one of httpGet, tcpSocket or grpc"),
    ],
)
def test_bad_probe_json_is_rejected_with_a_message_naming_the_field(raw: str, field: str) -> None:
    with pytest.raises(probe.ProbeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        probe.parse(raw)


def test_a_bad_probe_fails_open_and_says_why_in_the_gate() -> None:
    runner = probe.from_settings('{"httpGet": {"port": "http"}}', "127.0.0.1")
    ok, reason = runner.gate()
    assert ok and "PILOTFISH_APP_PROBE.httpGet.port" in reason


def test_no_probe_means_the_gate_passes_and_says_so() -> None:
    ok, reason = probe.from_settings("", "127.0.0.1").gate()
    assert ok and "no original readiness probe" in reason


@pytest.mark.parametrize(
    "status, ok",
    [
        (200, True),
        (204, True),
        (302, True),
        (399, True),
        (400, False),
        (404, False),
        (500, False),
        (503, False),
    ],
)
def test_http_status_200_to_399_is_success(app: AppStub, status: int, ok: bool) -> None:
    app.status = status
    assert probe.check_once(spec_for(app.port))[0] is ok


def test_http_probe_sends_path_headers_and_a_kube_probe_user_agent(app: AppStub) -> None:
    spec = spec_for(app.port)
    spec.headers = [("X-Custom", "yes"), ("Host", "example.internal"), ("User-Agent", "app-wants-this")]
    assert probe.check_once(spec)[0]
    seen = app.seen[-1]
    assert seen["path"] == "/healthz"
    assert seen["X-Custom"] == "yes"
    assert seen["Host"] == "example.internal"
    assert seen["User-Agent"] == "kube-probe/pilotfish", "a probe must never be counted as traffic"


def test_http_probe_times_out_at_timeout_seconds(app: AppStub) -> None:
    app.delay = 2.5
    ok, reason = probe.check_once(spec_for(app.port))
    assert not ok and "timed out" in reason


def test_http_probe_to_a_closed_port_fails() -> None:
    port = free_port()  # reserved for this process and not listened on: connections are refused
    ok, reason = probe.check_once(spec_for(port))
    assert not ok and "refused" in reason.lower()


def test_https_probe_does_not_verify_the_certificate_like_the_kubelet(tmp_path) -> None:
    from pilotfish_webhook import tls

    ca_pem, ca_key = tls.make_ca()
    cert, key = tls.make_serving_cert(ca_pem, ca_key, ["not-this-host.example"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    stub = AppStub((str(tmp_path / "c.pem"), str(tmp_path / "k.pem")))
    try:
        spec = spec_for(stub.port)
        spec.scheme = "HTTPS"
        ok, reason = probe.check_once(spec)
        assert ok, reason
        spec.scheme = "HTTP"  # plain HTTP to a TLS port is a failure
        assert not probe.check_once(spec)[0]
    finally:
        stub.close()


def test_tcp_probe_passes_while_a_socket_listens_and_fails_after() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    spec = probe.parse(json.dumps({"tcpSocket": {"port": listener.getsockname()[1]}}))
    assert probe.check_once(spec)[0]
    listener.close()
    assert not probe.check_once(spec)[0]


def test_thresholds_need_success_threshold_passes_to_open_and_failure_threshold_to_close() -> None:
    spec = probe.parse('{"tcpSocket": {"port": 1}, "successThreshold": 2, "failureThreshold": 3}')
    runner = probe.ProbeRunner(spec)
    assert runner.gate() == (False, "app probe tcp <pod>:1 not checked yet")
    runner.record(True, "ok")
    assert not runner.gate()[0], "one success of two needed"
    assert "1 of 2" in runner.gate()[1]
    runner.record(True, "ok")
    assert runner.gate()[0]
    runner.record(False, "down")
    runner.record(False, "down")
    assert runner.gate()[0], "two failures of three allowed keep it passing"
    runner.record(True, "ok")  # a success resets the failure streak
    runner.record(False, "down")
    runner.record(False, "down")
    assert runner.gate()[0]
    runner.record(False, "down")
    ok, reason = runner.gate()
    assert not ok and reason == "app probe fails: down"


def test_runner_checks_at_the_probe_period_on_its_own_thread(app: AppStub) -> None:
    spec = spec_for(app.port, periodSeconds=1)
    runner = probe.ProbeRunner(spec).start()
    try:
        threading.Event().wait(2.5)
        assert 2 <= runner.checks <= 4, runner.checks
        assert runner.gate()[0]
        app.status = 500
        threading.Event().wait(3.6)
        assert not runner.gate()[0], "three failures at a 1 s period close the gate"
    finally:
        runner.stop()
