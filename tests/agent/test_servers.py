"""The agent inside every supported server, observed from outside over HTTP.

Spec (docs/agent.md): exactly one process per container serves the status
port, whatever the server's process model; workers report in-flight counts and
liveness to it; kubelet probes are not traffic; in-flight holds for streamed
responses until their last byte; the app answers exactly as without the agent.
"""

from __future__ import annotations

import os
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.interpreters import matrix_versions, require_app_python
from support.servers import SERVERS, SERVING_PROCESSES, RunningServer, stream_holds_in_flight

HTTP_KINDS = [kind for kind in SERVERS if kind != "grpc"]
PROBE = {"User-Agent": "kube-probe/1.31"}


def _ready(kind: str):
    """Ready, with every worker process of a prefork server attached.

    A process that serves by itself claims its slot with its first counted request, and the
    harness's own first request may arrive before the agent's wake (which, on an event loop,
    runs beside the loop): only separate workers are waited for here.
    """
    expected = SERVING_PROCESSES.get(kind, 1)
    if expected <= 1:
        return lambda s: s["ready"]
    return lambda s: s["ready"] and len(s["workers"]) >= expected


@pytest.mark.parametrize("minor", matrix_versions())
@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_one_status_server_counts_traffic_from_every_worker_and_keeps_probes_out(
    kind: str, minor: str
) -> None:
    python = require_app_python(minor)
    with RunningServer(kind, python) as server:
        before = server.wait_status(_ready(kind), timeout=20)
        for _ in range(8):
            assert server.get("/").status == 200
        for _ in range(3):
            assert server.get("/", headers=PROBE).status == 200
        after = server.wait_status(
            lambda s: s["requests_total"] >= before["requests_total"] + 8 and s["in_flight"] == 0
        )
        assert after["requests_total"] == before["requests_total"] + 8
        assert after["probes_total"] == before["probes_total"] + 3
        assert after["in_flight"] == 0
        assert after["runtime"]["role"] == "owner"
        pids = {w["pid"] for w in after["workers"]}
        assert len(pids) >= SERVING_PROCESSES.get(kind, 1)
        readiness = server.status_get("/readiness")
        assert readiness.status == 200
        families = {
            f.name: f for f in text_string_to_metric_families(server.status_get("/metrics").body.decode())
        }
        assert families["pilotfish_in_flight_requests"].samples[0].value == 0
        assert sum(s.value for s in families["pilotfish_requests"].samples if s.name.endswith("_total")) >= 8
        assert families["pilotfish_probe_requests"].samples[0].value == after["probes_total"]


@pytest.mark.parametrize("minor", matrix_versions())
@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_in_flight_holds_until_a_streamed_response_has_sent_its_last_chunk(kind: str, minor: str) -> None:
    python = require_app_python(minor)
    with RunningServer(kind, python) as server:
        server.wait_status(_ready(kind), timeout=20)
        done = stream_holds_in_flight(server)
        assert done["requests_by_tag"]


@pytest.mark.parametrize("kind", HTTP_KINDS)
def test_responses_are_the_same_with_and_without_the_agent(kind: str) -> None:
    python = require_app_python("3.11")
    answers = []
    for agent in (False, True):
        with RunningServer(kind, python, agent=agent) as server:
            response = server.get("/headers", headers={"X-Custom": "1", "User-Agent": "test"})
            headers = {k: v for k, v in response.headers.items() if k not in ("date", "content-length")}
            echoed = {k: v for k, v in response.json().items() if k != "host"}  # the port differs
            answers.append((response.status, headers, echoed))
    assert answers[0] == answers[1]


def test_a_gunicorn_worker_that_dies_is_noticed_and_its_replacement_reports() -> None:
    python = require_app_python("3.11")
    with RunningServer("gunicorn-sync", python) as server:
        status = server.wait_status(_ready("gunicorn-sync"), timeout=20)
        victim = next(w["pid"] for w in status["workers"] if w["pid"] != status["pid"])
        os.kill(victim, signal.SIGKILL)
        after = server.wait_status(
            lambda s: (
                s["worker_deaths"] >= 1
                and victim not in {w["pid"] for w in s["workers"]}
                and len(s["workers"]) >= 2
            ),
            timeout=15,
        )
        assert after["ready"]
        assert server.get("/").status == 200


@pytest.mark.parametrize("minor", matrix_versions())
def test_grpc_server_calls_are_counted_and_wake_the_agent(minor: str) -> None:
    python = require_app_python(minor)
    import grpc

    with RunningServer("grpc", python) as server:
        server.wait_status(lambda s: s["ready"], timeout=20)
        with grpc.insecure_channel("127.0.0.1:%d" % server.port) as channel:
            echo = channel.unary_unary("/demo.Demo/Echo")
            count = channel.unary_stream("/demo.Demo/Count")
            assert echo(b"hi", timeout=5) == b"hi"
            assert [bytes(x) for x in count(b"3", timeout=5)] == [b"0", b"1", b"2"]
        status = server.wait_status(lambda s: s["requests_total"] >= 2 and s["in_flight"] == 0)
        assert status["requests_total"] == 2 and status["in_flight"] == 0


@pytest.mark.parametrize("kind", ["gunicorn-gthread", "uvicorn", "hypercorn"])
def test_configured_ignored_paths_are_counted_apart_from_traffic(kind: str) -> None:
    python = require_app_python("3.11")
    with RunningServer(kind, python, env={"PILOTFISH_IGNORE_PATHS": "/healthz"}) as server:
        before = server.wait_status(_ready(kind), timeout=20)
        for path in ("/healthz", "/healthz", "/healthz/deep", "/healthzx"):
            server.get(path)
        after = server.wait_status(lambda s: s["ignored_total"] >= before.get("ignored_total", 0) + 3)
        assert after["ignored_total"] == 3
        assert after["requests_total"] == before["requests_total"] + 1  # only /healthzx is traffic
