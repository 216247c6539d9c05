"""The warm-up weight and clock: w = max(min%, (t/T)^curve), started by registration only."""

from __future__ import annotations

import os

import pytest
from pilotfish import settings, warmup


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def snapshot(**values: object) -> settings.Settings:
    return settings.build(dict(values.items()), {})


def test_weight_follows_the_curve_between_floor_and_one() -> None:
    # Sermant's numbers (its default curve and 120 s warm-up): curve 2, T=120 s -> 6/25/56 % at 30/60/90 s.
    assert warmup.weight(30, 120, 2, 0) == pytest.approx(0.0625)
    assert warmup.weight(60, 120, 2, 0) == pytest.approx(0.25)
    assert warmup.weight(90, 120, 2, 0) == pytest.approx(0.5625)


def test_weight_never_drops_below_the_floor_and_reaches_one_at_t() -> None:
    assert warmup.weight(1, 120, 2, 10) == pytest.approx(0.10)
    assert warmup.weight(119.9, 120, 2, 10) < 1.0
    assert warmup.weight(120, 120, 2, 10) == 1.0
    assert warmup.weight(10_000, 120, 2, 10) == 1.0


def test_weight_before_the_clock_starts_is_the_floor() -> None:
    assert warmup.weight(None, 120, 2, 10) == pytest.approx(0.10)
    assert warmup.weight(None, 120, 2, 0) == 0.0


def test_weight_is_one_when_warm_up_is_disabled_or_has_no_duration() -> None:
    assert warmup.weight(None, 120, 2, 10, enabled=False) == 1.0
    assert warmup.weight(None, 0, 2, 10) == 1.0


def test_a_curve_of_one_is_linear_like_dubbo() -> None:
    assert warmup.weight(60, 600, 1, 0) == pytest.approx(0.10)


def test_clock_starts_at_registration_in_the_default_mode() -> None:
    clock = FakeClock()
    warm = warmup.WarmupClock(clock, wall=lambda: 5000.0)
    current = snapshot(warmup_seconds=100.0, warmup_curve=1.0, warmup_min_weight_percent=0.0)
    assert warm.elapsed() is None
    clock.now += 30
    warm.registered(warmup.REGISTRATION)
    clock.now += 25
    assert warm.elapsed() == pytest.approx(25)
    assert warm.weight(current) == pytest.approx(0.25)
    assert warm.describe(current)["started_by"] == "registration"


def test_first_request_mode_waits_for_a_marked_request() -> None:
    clock = FakeClock()
    warm = warmup.WarmupClock(clock)
    warm.registered(warmup.FIRST_REQUEST)
    clock.now += 50
    assert warm.elapsed() is None, "registration alone must not start the opt-in clock"
    assert warm.marked_request(warmup.FIRST_REQUEST, clock.now - 2)
    assert warm.elapsed() == pytest.approx(2)
    assert warm.started_by == "first-request"


def test_a_marked_request_before_registration_never_starts_warm_up_early() -> None:
    clock = FakeClock()
    warm = warmup.WarmupClock(clock)
    assert not warm.marked_request(warmup.FIRST_REQUEST, clock.now), "not registered yet"
    clock.now += 10
    warm.registered(warmup.FIRST_REQUEST)
    clock.now += 5
    assert warm.marked_request(warmup.FIRST_REQUEST, clock.now - 12)  # stamped before registration
    assert warm.elapsed() == pytest.approx(5), "counted from registration, not from the earlier request"


def test_marked_requests_are_ignored_in_registration_mode() -> None:
    warm = warmup.WarmupClock(FakeClock())
    assert not warm.marked_request(warmup.REGISTRATION, 1.0)


def test_the_clock_starts_once() -> None:
    clock = FakeClock()
    warm = warmup.WarmupClock(clock)
    warm.registered(warmup.REGISTRATION)
    first = warm.started_at
    clock.now += 10
    warm.registered(warmup.REGISTRATION)
    assert warm.started_at == first


def test_warm_up_is_complete_after_t_or_when_disabled() -> None:
    clock = FakeClock()
    warm = warmup.WarmupClock(clock)
    current = snapshot(warmup_seconds=10.0)
    assert not warm.complete(current)
    warm.registered(warmup.REGISTRATION)
    clock.now += 9.9
    assert not warm.complete(current)
    clock.now += 0.1
    assert warm.complete(current)
    assert warmup.WarmupClock(clock).complete(snapshot(warmup_enabled=False))


def test_a_marked_request_in_a_worker_process_reaches_the_owner_through_the_marker_file(tmp_path) -> None:
    path = str(tmp_path / "seg.shm.first-consumer")
    heard: list = []
    warmup.set_owner_sink(heard.append, path)
    try:
        pid = os.fork()
        if pid == 0:  # a forked worker, like gunicorn's
            try:
                warmup.on_marked_request()
                warmup.on_marked_request()  # cheap and harmless the second time
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        assert heard == [], "the worker must not call the owner's in-process sink"
        at = warmup.read_marker(path)
        assert at is not None and abs(at - __import__("time").monotonic()) < 5
        warmup.on_marked_request()  # the owner's own request goes straight to the sink
        assert len(heard) == 1
    finally:
        warmup.set_owner_sink(None, None)
        warmup.forget_marked_request()


def test_on_marked_request_never_raises_without_a_place_to_report() -> None:
    warmup.set_owner_sink(None, None)
    warmup.forget_marked_request()
    warmup.on_marked_request()
    warmup.on_marked_request()
    warmup.forget_marked_request()
