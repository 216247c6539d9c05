"""The one polling loop (hack/cluster/wait.py) and the tests' ``eventually`` built on it."""

from __future__ import annotations

import time
from typing import Iterator, List, Optional

import pytest
from support.wait import GiveUp, eventually

from hack.cluster import wait


def _answers(*values: object) -> Iterator[object]:
    yield from values
    while True:
        yield values[-1]


def test_the_first_true_value_is_returned_and_nothing_after_it_is_asked() -> None:
    asked: List[int] = []

    def check() -> Optional[str]:
        asked.append(1)
        return "up" if len(asked) == 3 else None

    assert wait.wait_for(check, 5, "up", interval=0.001) == "up"
    assert len(asked) == 3


def test_an_exception_ends_the_wait_unless_its_type_is_retried() -> None:
    with pytest.raises(KeyError):
        wait.wait_for(lambda: {}["missing"], 5, "a key")  # type: ignore[index]
    values = _answers(KeyError("not yet"), KeyError("not yet"), "there")

    def check() -> object:
        value = next(values)
        if isinstance(value, Exception):
            raise value
        return value

    assert wait.wait_for(check, 5, "a key", interval=0.001, retry=(KeyError,)) == "there"


def test_past_the_timeout_the_failure_names_what_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError) as failed:
        wait.wait_for(lambda: 0, 0.05, "the answer", interval=0.01, context=lambda: "server log")
    assert time.monotonic() - started >= 0.05
    assert str(failed.value) == "the answer never held within 0.05s; last value: 0\nserver log"


def test_the_last_retried_exception_is_reported_and_chained() -> None:
    def check() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises(AssertionError) as failed:
        wait.wait_for(check, 0.02, "the port", interval=0.005, retry=(OSError,), failure=AssertionError)
    assert "the port never held within 0.02s; last exception: ConnectionRefusedError('refused')" in str(
        failed.value
    )
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


def test_give_up_stops_at_once_even_when_everything_is_retried() -> None:
    def check() -> None:
        raise GiveUp("exited")

    started = time.monotonic()
    with pytest.raises(GiveUp):
        eventually(check, timeout=30, what="never")
    assert time.monotonic() - started < 5


def test_eventually_retries_failed_assertions_and_fails_as_an_assertion() -> None:
    values = _answers(False, False, True)

    def check() -> bool:
        value = next(values)
        assert value, "not yet"
        return bool(value)

    assert eventually(check, timeout=5, interval=0.001) is True
    with pytest.raises(AssertionError, match="condition never held within 0.02s; last exception"):
        eventually(lambda: 1 / 0, timeout=0.02)
