"""SIGTERM: drain first, then hand the signal on to the app's own handler, in real processes.

These run a small script (tests/lifecycle/sigterm_script.py) that uses pilotfish.offline
directly, with a scripted traffic view: they pin down the signal hand-over itself. The
end-to-end tests under real gunicorn and uvicorn are in test_servers_lifecycle.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Tuple

import pytest

HERE = Path(__file__).resolve().parent
AGENT = HERE.parent.parent / "agent"


def start(mode: str, quiet: float = 0.6) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PILOTFISH_", "PYTHON"))}
    env["PYTHONPATH"] = str(AGENT)
    process = subprocess.Popen(
        [sys.executable, str(HERE / "sigterm_script.py"), mode, str(quiet)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return process


def read_until(process: subprocess.Popen, marker: str) -> List[str]:
    lines = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            break
        lines.append(line.strip())
        if line.strip() == marker:
            return lines
    raise AssertionError("never saw %r; got %r; stderr %r" % (marker, lines, process.stderr.read()))  # type: ignore[union-attr]


def finish(process: subprocess.Popen) -> Tuple[int, List[str], float]:
    sent = time.monotonic()
    out, _ = process.communicate(timeout=15)
    return process.returncode, [line for line in out.splitlines() if line], time.monotonic() - sent


def test_a_plain_script_drains_then_dies_of_sigterm_as_it_would_have() -> None:
    process = start("default")
    read_until(process, "READY")
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, lines, _ = finish(process)
    assert code == -signal.SIGTERM, "the default action still ends the process, by the signal"
    assert lines[:2] == ["OFFLINE graceful offline (SIGTERM)", "DRAINED"]
    assert time.monotonic() - sent >= 0.6, "not before the quiet period"


def test_the_apps_own_handler_runs_after_the_drain() -> None:
    process = start("handler-before")
    read_until(process, "READY")
    process.send_signal(signal.SIGTERM)
    code, lines, elapsed = finish(process)
    assert code == 0
    assert lines == ["OFFLINE graceful offline (SIGTERM)", "DRAINED", "APP-HANDLER", "EXIT"]
    assert elapsed < 3, "handed on promptly once drained, even with the main thread asleep"


def test_a_handler_the_app_installs_after_the_agent_woke_is_the_one_handed_on_to() -> None:
    process = start("handler-after")
    lines = read_until(process, "READY")
    assert "PREVIOUS-IS-DEFAULT True" in lines and "GETSIGNAL-IS-APP True" in lines
    process.send_signal(signal.SIGTERM)
    code, lines, _ = finish(process)
    assert code == 0 and lines == ["OFFLINE graceful offline (SIGTERM)", "DRAINED", "APP-HANDLER", "EXIT"]


def test_a_second_sigterm_during_the_drain_is_handed_on_at_once() -> None:
    process = start("second-sigterm", quiet=30)
    read_until(process, "READY")
    process.send_signal(signal.SIGTERM)
    read_until(process, "OFFLINE graceful offline (SIGTERM)")
    time.sleep(0.3)  # the second SIGTERM comes a moment into the drain: the scenario
    process.send_signal(signal.SIGTERM)
    code, lines, elapsed = finish(process)
    assert code == 0 and lines == ["APP-HANDLER", "EXIT"] and elapsed < 3


def test_sigterm_after_offline_already_drained_passes_straight_through() -> None:
    process = start("offline-first", quiet=0.3)
    read_until(process, "READY")
    process.send_signal(signal.SIGTERM)
    code, lines, elapsed = finish(process)
    assert code == 0 and lines == ["APP-HANDLER", "EXIT"] and elapsed < 1.5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_workers_handle_their_own_sigterm_untouched() -> None:
    process = start("fork")
    code, lines, _ = finish(process)
    assert code == 0
    assert "CHILD-HANDLER" in lines and "CHILD-GETSIGNAL-OWN True" in lines and "CHILD-EXIT 7" in lines


def test_an_asyncio_loop_signal_handler_is_left_alone_because_it_cannot_be_held_back() -> None:
    """asyncio hears signals through its wakeup fd; the relay steps aside and says so."""
    process = start("asyncio", quiet=5)
    lines = read_until(process, "READY")
    assert "INTERCEPTING False" in lines
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=5)
    assert process.returncode == 0 and out.split() == ["ASYNCIO-HANDLER", "EXIT"]
    assert "add_signal_handler" in err
