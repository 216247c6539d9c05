"""Lossless online and offline under real gunicorn (sync, gthread; 2 workers) and uvicorn.

Everything is observed from outside over HTTP, as the kubelet and clients would see it:
the app port, the status port's /readiness, /status and /offline, and the process exit.
Each test records a timeline, printed when an assertion fails.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Dict, List

import pytest
from support.interpreters import matrix_versions, require_app_python
from support.wait import eventually

from lifecycle.harness import Load, Reply, Server, Timeline, get

KINDS = ["gunicorn-sync", "gunicorn-gthread", "uvicorn"]
CURRENT = "%d.%d" % sys.version_info[:2]


def probe_env(port_of: Server, period: int = 2) -> Dict[str, str]:
    return {
        "PILOTFISH_APP_PROBE": json.dumps(
            {
                "httpGet": {
                    "path": "/healthz",
                    "port": port_of.port,
                    "scheme": "HTTP",
                    "host": "",
                    "httpHeaders": [{"name": "X-From", "value": "kubelet"}],
                },
                "periodSeconds": period,
                "timeoutSeconds": 1,
                "successThreshold": 1,
                "failureThreshold": 1,
            }
        )
    }


def make(kind: str, minor: str = CURRENT, **env: str) -> Server:
    python = require_app_python(minor)
    server = Server(kind, python)
    server.env.update(probe_env(server))
    server.env.update(env)
    return server


def transitions(server: Server) -> Dict[str, float]:
    return {t["state"]: t["at_epoch"] for t in server.status()["lifecycle"]["transitions"]}


@pytest.mark.parametrize("kind", KINDS)
def test_readiness_is_503_until_the_app_listens_plus_the_delay_then_flips_within_one_probe_period(
    kind: str,
) -> None:
    timeline = Timeline()
    polls: List[tuple] = []
    first_listen = None
    with make(kind, PILOTFISH_DELAY_REGISTER_SECONDS="2") as server:
        timeline.add("process started")
        deadline = time.time() + 30
        while time.time() < deadline:
            at = time.time()
            if first_listen is None and server.app_listening():
                first_listen = at
                timeline.add("app port accepts connections", at)
            status = server.readiness()
            polls.append((at, status))
            if status == 200:
                break
            time.sleep(0.05)  # the sampling interval of the timeline, not a wait
        timeline.add("readiness 200", polls[-1][0])
        eventually(
            lambda: server.status()["lifecycle"]["state"] == "ready", 2, "state ready", context=server.output
        )
        moments = transitions(server)
        for state, at in moments.items():
            timeline.add("agent: " + state, at)
        report = "timeline:\n%s\n%s" % (timeline, server.output()[-3000:])
        assert polls[-1][1] == 200, report
        assert list(moments) == ["starting", "delaying", "registered", "ready"], report
        listening = moments["delaying"]
        assert first_listen is not None and abs(listening - first_listen) < 1.0, (
            "the agent learned 'listening' from the app's own listen()\n" + report
        )
        early = [(at, s) for at, s in polls if at < listening + 2.0 - 0.05 and s == 200]
        assert not early, "ready before listening + delay\n" + report
        assert polls[-1][0] <= listening + 2.0 + 2.0 + 0.5, "not ready within one probe period\n" + report
        assert any(s == 503 for _, s in polls), report


@pytest.mark.parametrize("kind", ["gunicorn-sync", "uvicorn"])
def test_a_failing_original_probe_keeps_readiness_503_and_names_the_gate(kind: str) -> None:
    server = make(kind)
    server.env.update(probe_env(server, period=1))
    with open(server.probe_fail_file, "w"):
        pass
    with server:
        eventually(lambda: server.readiness() == 503, 20, "readiness 503", context=server.output)
        states = []
        for _ in range(30):  # 3 s: three probe periods
            states.append(server.readiness())
            time.sleep(0.1)  # sampling: readiness must stay 503 all along
        assert set(states) == {503}, states
        body = get(server.status_port, "/readiness").json()
        assert "HTTP 503" in body["failing"]["app-probe"], body
        assert server.status()["lifecycle"]["state"] == "registered"
        os.unlink(server.probe_fail_file)
        recovered = time.time()
        eventually(
            lambda: server.readiness() == 200,
            5,
            "readiness 200 after the probe recovers",
            context=server.output,
        )
        assert time.time() - recovered <= 1.0 + 0.6, "within one probe period"


@pytest.mark.parametrize("kind", ["gunicorn-sync", "uvicorn"])
def test_status_records_the_fall_back_kubelet_saw_without_waiting_for_a_tick(kind: str) -> None:
    """The lifecycle thread sleeps in ready: the first /readiness that fails records the fall-back."""
    server = make(kind)
    server.env.update(probe_env(server, period=1))
    with server:
        server.wait_status(lambda s: s["lifecycle"]["state"] == "ready")
        with open(server.probe_fail_file, "w"):
            pass
        eventually(lambda: server.readiness() == 503, 20, "readiness 503", context=server.output)
        lifecycle = server.status()["lifecycle"]
        assert lifecycle["state"] == "registered", lifecycle
        assert "app-probe" in lifecycle["transitions"][-1]["why"], lifecycle
        os.unlink(server.probe_fail_file)
        eventually(lambda: server.readiness() == 200, 5, "readiness 200", context=server.output)
        assert server.status()["lifecycle"]["state"] == "ready"


def _fetch(server: Server, path: str, into: Dict[str, Any], timeline: Timeline) -> threading.Thread:
    def run() -> None:
        try:
            timeline.add("start " + path)
            into["reply"] = server.app(path, timeout=60)
            timeline.add("end %s -> %d" % (path, into["reply"].status))
        except Exception as problem:
            into["error"] = repr(problem)
            timeline.add("error %s: %r" % (path, problem))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _assert_offline_replies(replies: List[Reply], report: str) -> None:
    assert replies, "no request reached the app during the offline window\n" + report
    for reply in replies:
        assert reply.status == 200, report
        assert reply.headers.get("connection", "").lower() == "close", (reply.headers, report)
        assert reply.headers.get("x-pilotfish-offline") == "1", (reply.headers, report)


@pytest.mark.parametrize("kind", KINDS)
def test_offline_serves_everything_until_drained_and_returns_a_quiet_period_after_the_last_request(
    kind: str,
) -> None:
    timeline = Timeline()
    with make(kind, PILOTFISH_OFFLINE_QUIET_SECONDS="2", PILOTFISH_OFFLINE_MAX_WAIT_SECONDS="40") as server:
        server.wait_ready()
        slow: Dict[str, Any] = {}
        stream: Dict[str, Any] = {}
        slow_thread = _fetch(server, "/slow?seconds=10", slow, timeline)
        stream_thread = _fetch(server, "/stream?chunks=10&delay=0.2", stream, timeline)
        eventually(lambda: server.status()["in_flight"] >= 2, 10, "both requests in flight")
        offline: Dict[str, Any] = {}

        def call_offline() -> None:
            timeline.add("preStop: GET /offline")
            offline["reply"] = server.offline(wait=True)
            timeline.add("/offline returned %d" % offline["reply"].status)

        offline_thread = threading.Thread(target=call_offline, daemon=True)
        offline_thread.start()
        eventually(lambda: server.status()["offline"], 5, "the agent took /offline")
        assert server.readiness() == 503, "readiness fails at once"
        timeline.add("readiness 503")
        load = Load(server.port, interval=0.1).start()  # late arrivals: endpoints have not caught up yet
        time.sleep(3)  # how long the late arrivals go on: the behaviour under test
        load.stop()
        last_sent = max(r.started for r in load.replies) if load.replies else time.time()
        timeline.add("last late request sent", last_sent)
        slow_thread.join(30)
        stream_thread.join(30)
        offline_thread.join(60)
        report = "timeline:\n%s\n%s" % (timeline, server.output()[-3000:])
        assert not load.errors, "requests lost during offline: %s\n%s" % (load.errors, report)
        _assert_offline_replies(load.replies, report)
        assert slow.get("reply") is not None and slow["reply"].status == 200, report
        assert stream["reply"].status == 200 and stream["reply"].body.count(b"chunk") == 10, report
        reply = offline["reply"]
        body = reply.json()
        assert reply.status == 200 and body["drained"] and body["reason"] == "quiet", (body, report)
        assert reply.ended >= slow["reply"].ended - 0.3, (
            "never before the in-flight request finished\n" + report
        )
        last_request = max(last_sent, slow["reply"].ended)
        assert reply.ended <= max(last_sent + 2.0, slow["reply"].ended) + 0.5, (
            "/offline returned %.2fs after the last request\n%s" % (reply.ended - last_request, report)
        )
        status = server.status()
        assert status["lifecycle"]["state"] == "drained"
        assert [t["state"] for t in status["lifecycle"]["transitions"]][-2:] == ["offline", "drained"]
        # Then the kubelet sends SIGTERM: already drained, so it goes straight to the app.
        assert server.proc is not None
        sent = time.time()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(20)
        assert time.time() - sent < 5, "SIGTERM after a drained /offline is not delayed"
        if kind.startswith("gunicorn"):
            assert code == 0 and "Shutting down: Master" in server.output()


@pytest.mark.parametrize(
    "kind, minor",
    [("gunicorn-sync", minor) for minor in matrix_versions()]
    + [("gunicorn-gthread", CURRENT), ("uvicorn", CURRENT), ("uvicorn-workers", CURRENT)],
)
def test_sigterm_drains_the_same_way_and_the_apps_own_shutdown_still_runs(kind: str, minor: str) -> None:
    timeline = Timeline()
    with make(
        kind, minor, PILOTFISH_OFFLINE_QUIET_SECONDS="2", PILOTFISH_OFFLINE_MAX_WAIT_SECONDS="40"
    ) as server:
        server.wait_ready()
        slow: Dict[str, Any] = {}
        slow_thread = _fetch(server, "/slow?seconds=4", slow, timeline)
        eventually(lambda: server.status()["in_flight"] >= 1, 10, "the slow request in flight")
        assert server.proc is not None
        timeline.add("SIGTERM (no preStop)")
        server.proc.send_signal(signal.SIGTERM)
        eventually(lambda: server.status()["offline"], 5, "the agent took SIGTERM")
        assert server.readiness() == 503
        load = Load(server.port, interval=0.1).start()  # endpoint removal takes ~1.5 s to propagate
        time.sleep(1.5)  # how long the late arrivals go on: the behaviour under test
        load.stop()
        timeline.add("load stopped (endpoint removed)")
        code = server.proc.wait(40)
        exited = time.time()
        timeline.add("process exited %s" % code, exited)
        slow_thread.join(10)
        output = server.output()
        report = "timeline:\n%s\n%s" % (timeline, output[-4000:])
        assert not load.errors, "requests lost: %s\n%s" % (load.errors, report)
        _assert_offline_replies(load.replies, report)
        assert slow["reply"].status == 200, report
        last_sent = max(r.started for r in load.replies)
        assert exited >= last_sent + 2.0 - 0.2, "the app shut down before the quiet period\n" + report
        assert "handing SIGTERM on to the app" in output, report
        if kind.startswith("gunicorn"):
            assert code == 0 and "Shutting down: Master" in output, report
        else:
            # uvicorn re-raises the signal it caught once it has shut down, as it does without the agent.
            assert code in (0, -signal.SIGTERM), report
            assert "Finished server process" in output and "lifespan shutdown ran" in output, report


def test_kubelet_probes_before_registration_never_start_the_warm_up_clock() -> None:
    """A case reported with Alibaba Cloud MSE: warm-up started at the first health check, before
    the service registered.

    Here a kubelet probes the app itself (User-Agent kube-probe/...) from the moment it
    listens, through the whole registration delay: warm-up must start exactly at registration.
    """
    probes: List[float] = []
    with make("gunicorn-sync", PILOTFISH_DELAY_REGISTER_SECONDS="2", PILOTFISH_WARMUP_SECONDS="60") as server:
        stop = threading.Event()

        def kubelet() -> None:
            while not stop.is_set():
                try:
                    at = time.time()
                    if get(
                        server.port, "/healthz", headers={"User-Agent": "kube-probe/1.31"}, timeout=2
                    ).status:
                        probes.append(at)
                except OSError:
                    pass
                stop.wait(0.1)

        thread = threading.Thread(target=kubelet, daemon=True)
        thread.start()
        server.wait_ready()
        time.sleep(0.5)  # the kubelet goes on probing after registration, as it does
        stop.set()
        thread.join(5)
        status = server.status()
        lifecycle = status["lifecycle"]
        report = "status: %s\n%s" % (json.dumps(status, indent=1)[-3000:], server.output()[-3000:])
        moments = {t["state"]: t["at_epoch"] for t in lifecycle["transitions"]}
        assert "registered" in moments, report
        registered = moments["registered"]
        assert probes and probes[0] < registered - 1.5, (
            "the kubelet probed well before registration\n" + report
        )
        assert status["probes_total"] >= len(probes) - 2 and status["requests_total"] == 0, report
        warm = lifecycle["warmup"]
        assert warm["started_by"] == "registration", report
        started = datetime.strptime(warm["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs(started.timestamp() - registered) < 0.05, (warm, registered)
        assert 0.0 < warm["weight"] < 0.2, "early in a 60 s warm-up"


def test_a_grpc_server_keeps_answering_calls_through_a_sigterm_drain() -> None:
    """A plain-script gRPC server (default SIGTERM action): drained first, then the signal acts.

    The agent learns that the app serves from ``Server.start()``; SIGTERM starts the drain,
    calls that still arrive are answered, and only then does the default action end the process.
    """
    import grpc

    timeline = Timeline()
    server = Server(
        "grpc",
        require_app_python(CURRENT),
        {"PILOTFISH_OFFLINE_QUIET_SECONDS": "2", "PILOTFISH_OFFLINE_MAX_WAIT_SECONDS": "30"},
    )
    with server:
        server.wait_ready()
        channel = grpc.insecure_channel("127.0.0.1:%d" % server.port)
        echo = channel.unary_unary("/demo.Demo/Echo")
        assert echo(b"hi", timeout=5) == b"hi"
        slow: Dict[str, Any] = {}

        def slow_call() -> None:
            try:
                slow["reply"] = echo(b"slow", metadata=(("x-delay", "3"),), timeout=20)
            except Exception as problem:
                slow["error"] = repr(problem)
            timeline.add("slow call ended")

        slow_thread = threading.Thread(target=slow_call, daemon=True)
        slow_thread.start()
        eventually(lambda: server.status()["in_flight"] >= 1, 10, "the slow call in flight")
        assert server.proc is not None
        timeline.add("SIGTERM")
        server.proc.send_signal(signal.SIGTERM)
        answered, failed = 0, []
        last_call = time.time()
        until = time.time() + 1.5
        while time.time() < until:
            last_call = time.time()
            try:
                assert echo(b"late", timeout=5) == b"late"
                answered += 1
            except Exception as problem:
                failed.append(repr(problem))
            time.sleep(0.05)  # a client's pace during the drain: the behaviour under test
        code = server.proc.wait(30)
        exited = time.time()
        timeline.add("exited %s" % code, exited)
        slow_thread.join(10)
        channel.close()
        report = "timeline:\n%s\n%s" % (timeline, server.output()[-3000:])
        assert not failed and answered > 5, (failed, report)
        assert slow.get("reply") == b"slow", (slow, report)
        assert exited >= last_call + 2.0 - 0.2, report
        assert code == -signal.SIGTERM, "the default action still ends it, as without the agent\n" + report


@pytest.mark.parametrize("kind", ["gunicorn-gthread", "uvicorn"])
def test_first_request_mode_starts_warm_up_at_the_first_consumer_marked_request_only(kind: str) -> None:
    """``warmup_start=first-request``: probes and unmarked requests never start the clock."""
    with make(kind, PILOTFISH_WARMUP_START="first-request", PILOTFISH_WARMUP_SECONDS="60") as server:
        server.wait_ready()
        for _ in range(3):
            get(server.port, "/healthz", headers={"User-Agent": "kube-probe/1.31"}, timeout=5)
            get(server.port, "/", timeout=5)

        def all_counted() -> Dict[str, Any]:
            status = server.status()
            assert status["probes_total"] >= 3 and status["requests_total"] >= 3, status
            return status

        counted = eventually(all_counted, 5, "the probes and requests counted")
        assert counted["lifecycle"]["warmup"]["started"] is False
        marked_at = time.time()
        assert get(server.port, "/", headers={"X-Pilotfish-Consumer": "shop"}, timeout=5).status == 200

        def warm_up_started() -> Dict[str, Any]:
            warm: Dict[str, Any] = server.status()["lifecycle"]["warmup"]
            assert warm["started"], warm
            return warm

        warm = eventually(warm_up_started, 5, "warm-up started")
        assert warm["started"] and warm["started_by"] == "first-request", warm
        started = datetime.strptime(warm["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs(started.timestamp() - marked_at) < 1.0, (warm, marked_at)
