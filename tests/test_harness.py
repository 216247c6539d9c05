"""The test harness itself: eventually() and the port allocator (tests/support)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest
from support import ports
from support.wait import GiveUp, eventually

TESTS = Path(__file__).resolve().parent


def test_eventually_returns_the_first_true_value_retrying_falsy_values_and_exceptions() -> None:
    answers: List[object] = [None, ValueError("not yet"), 0, "done"]

    def check() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert eventually(check, 5, "the answer", interval=0) == "done"
    assert answers == []


def test_eventually_fails_naming_what_and_the_last_exception() -> None:
    def check() -> bool:
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(AssertionError) as failed:
        eventually(check, 0.1, "the server answering", context=lambda: "server output")
    message = str(failed.value)
    assert "the server answering never held within 0.1s" in message
    assert "ConnectionRefusedError('nobody listens')" in message and message.endswith("\nserver output")
    assert isinstance(failed.value.__cause__, ConnectionRefusedError)


def test_eventually_fails_naming_the_last_value() -> None:
    workers: List[int] = [4242]
    with pytest.raises(AssertionError, match=r"two workers never held within 0.05s; last value: False"):
        eventually(lambda: len(workers) >= 2, 0.05, "two workers")


def test_give_up_stops_waiting_at_once() -> None:
    started = time.monotonic()

    def check() -> bool:
        raise GiveUp("the server exited")

    with pytest.raises(GiveUp, match="the server exited"):
        eventually(check, 30, "the server answering")
    assert time.monotonic() - started < 1


def test_free_ports_are_distinct_bindable_and_outside_the_kernels_ephemeral_range() -> None:
    handed = [ports.free_port() for _ in range(50)]
    assert len(set(handed)) == 50
    assert all(20000 <= port < min(ports._ephemeral_start(), 30000) for port in handed)
    for port in handed[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_another_process_never_gets_a_port_this_one_holds() -> None:
    mine = {ports.free_port() for _ in range(20)}
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from support import ports\n"
        "print(' '.join(str(ports.free_port()) for _ in range(2000)))\n" % str(TESTS)
    )
    theirs = {int(port) for port in subprocess.check_output([sys.executable, "-c", code], text=True).split()}
    assert len(theirs) == 2000
    assert not mine & theirs
