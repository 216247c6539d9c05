"""The lifecycle state machine, driven by a fake clock: order, gates, registration, warm-up.

Warm-up is never started by kubelet probes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Optional, Tuple

import pytest
from pilotfish import lifecycle, owner, settings, warmup
from pilotfish.central.registration import Registrar
from pilotfish.lifecycle import DELAYING, DRAINED, OFFLINE, READY, REGISTERED, STARTING
from support.wait import eventually

from lifecycle.fakes import FakeClock, FakeProbe, FakeRegistrar


def make(
    delay: float = 5.0,
    registrar: Optional[FakeRegistrar] = None,
    probe: Optional[FakeProbe] = None,
    **env: Any,
) -> Tuple[lifecycle.Lifecycle, FakeClock]:
    values = {
        "delay_register_seconds": delay,
        "warmup_seconds": 60.0,
        "warmup_curve": 1.0,
        "warmup_min_weight_percent": 10.0,
    }
    values.update(env)
    current = settings.build(values, {})
    clock = FakeClock()
    machine = lifecycle.Lifecycle(
        lambda: current,
        registrar or FakeRegistrar(),
        probe or FakeProbe(),
        port_fn=lambda: 8080,
        clock=clock,
        wall=lambda: 1_700_000_000.0 + clock.now,
    )
    return machine, clock


def settle(machine: lifecycle.Lifecycle) -> None:
    machine.tick()
    if machine.register_thread is not None:
        machine.register_thread.join(5)
    machine.tick()


def test_it_starts_in_starting_and_waits_for_the_app_to_listen() -> None:
    machine, clock = make()
    assert machine.state == STARTING
    clock.now += 1000
    settle(machine)
    assert machine.state == STARTING, "no timer moves it: only the app's listen() does"
    assert machine.gate_registered() == (False, "the app does not listen yet")


def test_delaying_is_recorded_when_the_app_listened_not_when_the_wake_told_the_lifecycle() -> None:
    """The wake reaches the lifecycle a moment (tens of ms on a busy node) after the app's listen():
    /status must show the delay the machine applies, counted from the listen()."""
    registrar = FakeRegistrar()
    machine, clock = make(delay=2.0, registrar=registrar)
    listened = clock.now
    clock.now += 0.3  # the wake's own start-up
    machine.app_listening(listened)
    delaying = machine.transitions[-1]
    assert delaying["state"] == DELAYING and delaying["monotonic"] == listened
    assert delaying["at"] == pytest.approx(1_700_000_000.0 + listened)
    clock.now = listened + 2.0
    settle(machine)
    assert registrar.calls == [("register", 8080)]
    registered_at, delaying_at = machine.entered(REGISTERED), machine.entered(DELAYING)
    assert registered_at is not None and delaying_at is not None
    assert registered_at - delaying_at == pytest.approx(2.0)


def test_registration_waits_for_the_delay_after_listening() -> None:
    registrar = FakeRegistrar()
    machine, clock = make(delay=5.0, registrar=registrar)
    machine.app_listening()
    assert machine.state == DELAYING
    clock.now += 4.9
    settle(machine)
    assert machine.state == DELAYING and registrar.calls == []
    ok, reason = machine.gate_registered()
    assert not ok and reason == "registration delay: 0.1s left"
    clock.now += 0.1
    settle(machine)
    assert registrar.calls == [("register", 8080)]
    assert machine.state == READY
    assert [t["state"] for t in machine.transitions] == [STARTING, DELAYING, REGISTERED, READY]


def _waiting_for_config(wait: float = 5.0) -> Tuple[lifecycle.Lifecycle, FakeClock, FakeRegistrar, dict]:
    """A lifecycle whose config client has not had its first answer; ``config`` stands for it."""
    config: dict = {"pending": True, "settings": settings.build({}, {})}  # local default: no delay
    clock, registrar = FakeClock(), FakeRegistrar()
    machine = lifecycle.Lifecycle(
        lambda: config["settings"],
        registrar,
        FakeProbe(),
        port_fn=lambda: 8080,
        clock=clock,
        config_pending=lambda: config["pending"],
        config_wait=wait,
    )
    return machine, clock, registrar, config


def test_the_registration_delay_is_judged_only_once_the_central_config_has_answered() -> None:
    machine, clock, registrar, config = _waiting_for_config()
    machine.app_listening()
    clock.now += 2.0
    settle(machine)
    assert machine.state == DELAYING and registrar.calls == [], "registered with the local 0 s"
    ok, reason = machine.gate_registered()
    assert not ok and reason.startswith("waiting for the central config")
    config["settings"] = settings.build({}, {"delay_register_seconds": 4})
    config["pending"] = False  # the answer arrives 2 s after the app listened: delay 4 s
    settle(machine)
    assert machine.state == DELAYING and machine.gate_registered()[1] == "registration delay: 2.0s left"
    clock.now += 2.0
    settle(machine)
    assert registrar.calls == [("register", 8080)] and machine.state == READY
    assert machine.describe()["central_config_before_delay"] == "answered after 2.0s"


def test_a_config_service_that_never_answers_holds_the_registration_only_for_the_bound() -> None:
    machine, clock, registrar, _ = _waiting_for_config(wait=5.0)
    machine.app_listening()
    clock.now += 4.9
    settle(machine)
    assert registrar.calls == []
    clock.now += 0.1
    settle(machine)
    assert registrar.calls == [("register", 8080)], "the cached/env/default delay (0 s) decides now"
    assert machine.describe()["central_config_before_delay"] == "timed out after 5.0s"


def test_every_transition_is_recorded_with_its_time() -> None:
    machine, clock = make(delay=2.0)
    clock.now = 110.0
    machine.app_listening()
    clock.now = 112.0
    settle(machine)
    times = {t["state"]: t["monotonic"] for t in machine.transitions}
    assert times[DELAYING] == 110.0 and times[REGISTERED] == 112.0 and times[READY] == 112.0
    assert machine.entered(REGISTERED) == 1_700_000_112.0
    doc = machine.describe()
    assert [t["state"] for t in doc["transitions"]] == [STARTING, DELAYING, REGISTERED, READY]
    assert doc["transitions"][2]["at"].startswith("2023-11-14T22:15:")


def test_a_failing_app_probe_keeps_it_registered_but_not_ready() -> None:
    probe = FakeProbe(ok=False)
    machine, clock = make(delay=0.0, probe=probe)
    machine.app_listening()
    settle(machine)
    assert machine.state == REGISTERED
    assert probe.checked_now == 1, "the probe is re-checked at registration instead of a period later"
    probe.ok = True
    machine.tick()
    assert machine.state == READY
    probe.ok = False
    machine.tick()
    assert machine.state == REGISTERED
    assert "app-probe: probe fails: HTTP 503" in machine.transitions[-1]["why"]


def test_an_unreachable_config_service_fails_open() -> None:
    machine, _ = make(delay=0.0, registrar=FakeRegistrar(outcome="fail-open"))
    machine.app_listening()
    settle(machine)
    assert machine.state == READY
    assert machine.registration == "fail-open"
    assert machine.gate_registered()[0]


def test_registrar_without_a_config_url_is_a_local_no_op() -> None:
    registrar = Registrar(lambda: settings.build({}, {}), owner.registry())
    assert registrar.register(8080) == "local"
    assert "PILOTFISH_CONFIG_URL unset" in registrar.detail
    assert registrar.deregister() == "local"


def test_registrar_gives_up_waiting_after_its_bound_and_fails_open() -> None:
    import types

    gate = threading.Event()
    fake = types.SimpleNamespace()
    fake.register = lambda port=None: gate.wait(5)
    fake.deregister = lambda: True
    registrar = Registrar(
        lambda: settings.build({"config_url": "https://config.invalid"}, {}), fake, wait=0.3
    )
    assert registrar.register(8080) == "fail-open"
    assert "did not answer within 0.3s" in registrar.detail
    gate.set()
    fake.register = lambda port=None: True
    assert registrar.register(8080) == "registered"
    assert registrar.deregister() == "deregistered"


def test_warm_up_starts_at_registration_not_at_listening() -> None:
    machine, clock = make(delay=10.0)
    machine.app_listening()
    clock.now += 10
    settle(machine)
    clock.now += 30
    current = machine.settings_fn()
    assert machine.warmup.elapsed() == pytest.approx(30)
    assert machine.warmup.weight(current) == pytest.approx(0.5)
    assert machine.describe()["warmup"]["weight"] == pytest.approx(0.5)


def test_kube_probe_requests_before_registration_never_start_warm_up(tmp_path) -> None:
    """A case reported with Alibaba Cloud MSE: kubelet health checks counted as the first traffic
    and started warm-up early.

    Probes are classified by the inbound wrappers (User-Agent kube-probe/...) and never call
    warmup.on_marked_request(); even a consumer-marked request that arrives before registration
    cannot start the clock before registration.
    """
    machine, clock = make(delay=20.0, warmup_start="first-request")
    machine.marker_path = str(tmp_path / "marker")
    machine.app_listening()
    for _ in range(20):  # a kubelet probing every second during the delay: nothing to hear
        clock.now += 1
        machine.tick()
    settle(machine)
    assert machine.state == READY
    assert machine.warmup.started_at is None, "probes and the delay must not start warm-up"
    # A marked request stamped before registration counts from registration at the earliest.
    (tmp_path / "marker").write_text("%.6f\n" % (clock.now - 15))
    clock.now += 4
    machine.tick()
    assert machine.warmup.started_by == "first-request"
    assert machine.warmup.elapsed() == pytest.approx(4)


def test_warmup_before_ready_holds_readiness_until_warm_up_completes() -> None:
    machine, clock = make(delay=0.0, warmup_before_ready=True, warmup_seconds=30.0)
    machine.app_listening()
    settle(machine)
    assert machine.state == REGISTERED
    ok, reason = machine.gate_warmup()
    assert not ok and reason.startswith("warming up: 0.0 of 30s")
    clock.now += 30
    machine.tick()
    assert machine.state == READY


def test_offline_fails_readiness_at_once_and_ends_in_drained() -> None:
    machine, _ = make(delay=0.0)
    machine.app_listening()
    settle(machine)
    assert machine.gate_online()[0]
    assert machine.go_offline("graceful offline (/offline)")
    assert not machine.go_offline("again"), "offline happens once"
    assert machine.state == OFFLINE
    ok, reason = machine.gate_online()
    assert not ok and "graceful offline (/offline)" in reason
    machine.tick()
    assert machine.state == OFFLINE, "ticks never bring it back online"
    machine.drained("quiet", {"seconds": 3.0})
    assert machine.state == DRAINED and machine.describe()["drain"] == {"seconds": 3.0}


def test_going_offline_while_registering_deregisters_when_registration_lands() -> None:
    block = threading.Event()
    registrar = FakeRegistrar(block=block)
    machine, _ = make(delay=0.0, registrar=registrar)
    machine.app_listening()
    machine.tick()
    machine.go_offline("SIGTERM")
    block.set()
    assert machine.register_thread is not None
    machine.register_thread.join(5)
    assert registrar.calls == [("register", 8080), ("deregister", None)]
    assert machine.state == OFFLINE


def test_metrics_report_state_weight_and_transition_times() -> None:
    machine, clock = make(delay=0.0)
    machine.app_listening()
    settle(machine)
    clock.now += 30
    text = "\n".join(machine.metrics())
    assert 'pilotfish_lifecycle_state{state="ready"} 1' in text
    assert 'pilotfish_lifecycle_state{state="starting"} 0' in text
    assert 'pilotfish_lifecycle_transition_timestamp_seconds{state="registered"} 1700000100.000' in text
    assert "pilotfish_warmup_weight 0.5000" in text
    assert "# TYPE pilotfish_warmup_weight gauge" in text


def test_a_marked_request_in_the_owner_process_starts_opt_in_warm_up() -> None:
    machine, clock = make(delay=0.0, warmup_start="first-request")
    machine.app_listening()
    settle(machine)
    machine.on_marked_request(clock.now)
    clock.now += 6
    assert machine.warmup.elapsed() == pytest.approx(6)
    assert machine.warmup.started_by != warmup.REGISTRATION


def test_the_thread_ticks_fast_only_while_a_clock_moves_the_state() -> None:
    machine, _ = make(delay=5.0)
    periods = {}
    for state in (STARTING, DELAYING, REGISTERED, READY, OFFLINE, DRAINED):
        machine.state = state
        periods[state] = machine.tick_period()
    assert periods[DELAYING] == periods[REGISTERED] == lifecycle.TICK_SECONDS
    assert periods[READY] == lifecycle.READY_TICK_SECONDS > lifecycle.TICK_SECONDS
    assert periods[STARTING] is periods[OFFLINE] is periods[DRAINED] is None, (
        "no clock moves these states: the thread waits to be woken"
    )


def test_a_ready_pod_waiting_for_a_workers_marker_looks_for_it_every_second(tmp_path: Path) -> None:
    machine, clock = make(delay=0.0, warmup_start="first-request")
    machine.marker_path = str(tmp_path / "marker")
    machine.app_listening()
    settle(machine)
    assert machine.state == READY and machine.warmup.started_at is None
    assert machine.tick_period() == lifecycle.MARKER_TICK_SECONDS < lifecycle.READY_TICK_SECONDS
    (tmp_path / "marker").write_text("%.6f\n" % clock.now)
    machine.tick()
    assert machine.warmup.started_by == "first-request"
    assert machine.tick_period() == lifecycle.READY_TICK_SECONDS, "found: back to the backstop"


def test_any_evaluation_of_the_gates_records_a_fall_back_at_once() -> None:
    """The thread sleeps in ready; kubelet's /readiness (or /status, /metrics) records the change."""
    machine, _ = make(delay=0.0)
    machine.app_listening()
    settle(machine)
    assert machine.state == READY
    machine.observe(False, {"workers": {"ok": False, "reason": "no worker alive"}, "online": {"ok": True}})
    assert machine.state == REGISTERED
    assert machine.transitions[-1]["why"] == "a readiness gate failed: workers: no worker alive"
    recorded = len(machine.transitions)
    machine.observe(False, {})
    assert len(machine.transitions) == recorded, "a second look at the same answer records nothing"
    machine.observe(True, {})
    assert machine.state == READY
    machine.go_offline("SIGTERM")
    machine.observe(True, {})
    assert machine.state == OFFLINE, "an evaluation never brings an offline pod back"


class CountingLifecycle(lifecycle.Lifecycle):
    ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        super().tick()


def test_an_idle_ready_pod_is_not_woken_ten_times_a_second() -> None:
    # Real thread, real time, fake clock frozen: nothing can advance, so it should sleep.
    current = settings.build({"delay_register_seconds": 0.0}, {})
    machine = CountingLifecycle(lambda: current, FakeRegistrar(), FakeProbe(), clock=FakeClock())
    machine.start_thread()
    try:
        machine.app_listening()  # wakes the thread at once: delay 0 means register now
        eventually(lambda: machine.state == READY, 5, "ready", context=lambda: repr(machine.transitions))
        before = machine.ticks
        time.sleep(0.5)  # a window: at most one tick in it
        assert machine.ticks - before <= 1, "a ready pod's thread should sleep an idle period"
    finally:
        machine.stop_thread()
        thread = machine.thread
        assert thread is not None
        thread.join(2)
    assert not thread.is_alive(), "stop_thread ends an idle wait at once"
