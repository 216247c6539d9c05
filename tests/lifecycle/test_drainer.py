"""Graceful offline's drain rule, with a scripted traffic view and real threads and time."""

from __future__ import annotations

import threading
import time
from typing import Any, List

import pytest
from pilotfish import lifecycle, offline, settings

from lifecycle.fakes import FakeProbe, FakeRegistrar


class Traffic:
    """Stands in for stats.totals(): what the workers' shared memory would say."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests_total = 0

    def request(self) -> None:
        self.requests_total += 1

    def __call__(self) -> Traffic:
        return self


def make(quiet: float = 0.3, max_wait: float = 5.0, **env: Any):
    values = {
        "offline_quiet_seconds": quiet,
        "offline_max_wait_seconds": max_wait,
        "delay_register_seconds": 0.0,
    }
    values.update(env)
    current = settings.build(values, {})
    registrar = FakeRegistrar()
    machine = lifecycle.Lifecycle(lambda: current, registrar, FakeProbe())
    machine.app_listening()
    machine.tick()
    machine.register_thread.join(5)  # type: ignore[union-attr]
    traffic = Traffic()
    flags: List[bool] = []
    drainer = offline.Drainer(machine, traffic, flags.append, lambda: current, poll=0.01)
    return drainer, machine, traffic, flags, registrar


def test_offline_sets_the_flag_deregisters_and_fails_readiness_at_once() -> None:
    drainer, machine, _, flags, registrar = make()
    assert drainer.start("/offline")
    assert flags == [True]
    assert not machine.gate_online()[0]
    assert drainer.wait(3)
    assert ("deregister", None) in registrar.calls
    assert machine.state == lifecycle.DRAINED


def test_an_old_last_request_does_not_shorten_the_quiet_window() -> None:
    drainer, _, traffic, _, _ = make(quiet=0.5)
    traffic.request()
    time.sleep(0.6)  # the last request is older than the quiet period already
    started = time.monotonic()
    drainer.start("/offline")
    assert drainer.wait(3)
    assert time.monotonic() - started >= 0.5, (
        "late requests still arrive after offline starts (endpoints lag)"
    )


def test_drained_waits_for_in_flight_requests_to_finish() -> None:
    drainer, _, traffic, _, _ = make(quiet=0.2)
    traffic.request()
    traffic.in_flight = 1
    drainer.start("/offline")
    assert not drainer.wait(1.0), "a request is still in flight"
    traffic.in_flight = 0
    finished = time.monotonic()
    assert drainer.wait(2)
    assert time.monotonic() - finished < 0.5
    assert drainer.result["reason"] == "quiet"


def test_each_request_during_offline_restarts_the_quiet_window() -> None:
    drainer, _, traffic, _, _ = make(quiet=0.4)
    drainer.start("/offline")
    for _ in range(5):
        time.sleep(0.2)
        traffic.request()
    last = time.monotonic()
    assert drainer.wait(3)
    elapsed = time.monotonic() - last
    assert 0.35 <= elapsed <= 0.9
    assert drainer.result["requests_during_offline"] == 5


def test_max_wait_ends_the_drain_even_with_requests_in_flight() -> None:
    drainer, machine, traffic, _, _ = make(quiet=0.2, max_wait=0.6)
    traffic.in_flight = 3
    started = time.monotonic()
    drainer.start("SIGTERM")
    assert drainer.wait(3)
    assert 0.55 <= time.monotonic() - started <= 1.5
    assert drainer.result["reason"] == "max-wait" and drainer.result["in_flight_left"] == 3
    assert machine.transitions[-1]["why"] == "offline_max_wait_seconds reached"


def test_the_offline_handler_blocks_until_drained_when_asked_to_wait() -> None:
    drainer, _, _, _, _ = make(quiet=0.3)
    started = time.monotonic()
    status, body = drainer.handle(True)
    assert status == 200 and body["drained"] and body["reason"] == "quiet" and body["trigger"] == "/offline"
    assert 0.3 <= time.monotonic() - started < 1.5
    again = drainer.handle(True)  # a retried preStop returns at once with the same result
    assert again[0] == 200 and again[1]["drained"]


def test_the_offline_handler_returns_at_once_without_wait() -> None:
    drainer, _, _, flags, _ = make(quiet=2)
    started = time.monotonic()
    status, body = drainer.handle(False)
    assert status == 202 and body == {"offline": True, "drained": False, "trigger": "/offline"}
    assert time.monotonic() - started < 0.5 and flags == [True]


def test_offline_can_be_disabled() -> None:
    drainer, _, _, flags, _ = make(offline_enabled=False)
    status, body = drainer.handle(True)
    assert status == 200 and body["offline"] is False and flags == []


class FakeGrpcServer:
    def __init__(self) -> None:
        self.stopped_with: List[float] = []
        self.stopped_at = 0.0

    def stop(self, grace: float) -> threading.Event:
        self.stopped_with.append(grace)
        self.stopped_at = time.monotonic()
        event = threading.Event()
        event.set()
        return event


def test_grpc_servers_stop_accepting_only_after_the_quiet_period() -> None:
    drainer, _, _, _, _ = make(quiet=0.4, max_wait=10)
    server = FakeGrpcServer()
    drainer.add_grpc_server(server)
    started = time.monotonic()
    drainer.start("/offline")
    assert drainer.wait(3)
    assert len(server.stopped_with) == 1
    assert server.stopped_at - started >= 0.4
    assert server.stopped_with[0] == pytest.approx(10 - 0.4, abs=0.3)


def test_grpc_servers_that_start_before_the_owners_drainer_are_handed_to_it() -> None:
    """The gRPC integration reports a server at ``start()``, which may come before the owner's
    start-up has built its drainer: the server waits in ``offline`` until ``use_drainer``."""
    import importlib.util

    spec = importlib.util.find_spec("pilotfish.offline")
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)  # this module's state, not the one other tests left
    spec.loader.exec_module(fresh)
    early, late = FakeGrpcServer(), FakeGrpcServer()
    fresh.add_grpc_server(early)
    drainer, _, _, _, _ = make()
    assert drainer.grpc_servers == []
    fresh.use_drainer(drainer)
    fresh.add_grpc_server(late)
    fresh.add_grpc_server(late)
    assert drainer.grpc_servers == [early, late]


def test_after_a_sigterm_drain_grpc_servers_are_left_to_the_signal() -> None:
    """The handed-on SIGTERM does what it does without the agent; a stop first would change it."""
    drainer, _, _, _, _ = make(quiet=0.2, max_wait=10)
    server = FakeGrpcServer()
    drainer.add_grpc_server(server)
    drainer.start("SIGTERM")
    assert drainer.wait(3)
    assert server.stopped_with == []


def test_a_broken_traffic_view_still_ends_in_drained() -> None:
    drainer, machine, _, _, _ = make()

    def broken() -> Any:
        raise RuntimeError("shared memory gone")

    drainer.totals_fn = broken
    drainer.start("/offline")
    assert drainer.wait(3)
    assert drainer.result["reason"] == "error" and machine.state == lifecycle.DRAINED


def test_a_real_grpc_server_is_stopped_after_the_quiet_period_and_its_last_call_completes() -> None:
    """grpcio's own server: serving until drained, then stop(grace) lets a late call finish."""
    from concurrent import futures

    grpc = pytest.importorskip("grpc")

    def echo(request: bytes, context: Any) -> bytes:
        time.sleep(float(dict(context.invocation_metadata()).get("x-delay", "0")))
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "demo.Demo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel("127.0.0.1:%d" % port)
    call = channel.unary_unary("/demo.Demo/Echo")
    drainer, _, traffic, _, _ = make(quiet=0.5, max_wait=10)
    drainer.add_grpc_server(server)
    try:
        drainer.start("/offline")
        time.sleep(0.2)
        assert call(b"during quiet", timeout=5) == b"during quiet", "still accepting calls while draining"
        traffic.request()
        # A call that starts right before the quiet period ends is still running at stop(grace).
        late = futures.ThreadPoolExecutor(1).submit(call, b"late", metadata=(("x-delay", "1"),), timeout=10)
        assert drainer.wait(5)
        assert late.result(5) == b"late", "stop(grace) lets an active call finish"
        with pytest.raises(grpc.RpcError) as refused:
            call(b"after", timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
        server.stop(None)
