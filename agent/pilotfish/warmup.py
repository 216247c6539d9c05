"""The warm-up clock and the weight consumers give a freshly started instance.

``w = max(min%, (t/T)^curve)`` for ``0 <= t < T``, then 1: Sermant's curve with
Envoy's floor (``min_weight_percent``, 10 % by default there). The clock starts at
**registration** (the moment consumers can see the instance), never at "some
request arrived": in a case reported with Alibaba Cloud MSE, kubelet health
checks started the warm-up clock before the service was even registered, so
the ramp was over before real traffic came. Here nothing but the lifecycle (at registration) or a request
carrying the pilotfish consumer marker (opt-in ``warmup_start=first-request``)
can start it, and never earlier than registration.

The marker can arrive in any worker process, while the clock lives in the owner.
:func:`on_marked_request` therefore leaves a one-line file next to the
per-container shared memory (once per process, O_EXCL so the first writer
wins); the owner's lifecycle thread reads it. That keeps the request path to a
single flag check after the first marked request.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, Optional

from . import log, shared

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .settings import Settings

REGISTRATION = "registration"
FIRST_REQUEST = "first-request"
MARKER_SUFFIX = shared.MARKER_SUFFIX


def weight(
    elapsed: Optional[float], seconds: float, curve: float, min_percent: float, enabled: bool = True
) -> float:
    """The share (0..1) of a warm peer's traffic this instance should get ``elapsed`` s into warm-up.

    ``elapsed`` None means the clock has not started: the floor applies.
    """
    if not enabled or seconds <= 0:
        return 1.0
    floor = max(0.0, min(100.0, min_percent)) / 100.0
    if elapsed is None or elapsed <= 0:
        return floor
    if elapsed >= seconds:
        return 1.0
    return max(floor, float((elapsed / seconds) ** curve))


class WarmupClock:
    """When warm-up started in this container (owner process), and by what."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self.started_at: Optional[float] = None  # clock() seconds
        self.started_wall: Optional[float] = None  # epoch seconds, for /status and the registry
        self.started_by = ""
        self.registered_at: Optional[float] = None

    def registered(self, mode: str, at: Optional[float] = None) -> None:
        """Registration happened: in ``registration`` mode this starts the clock."""
        with self._lock:
            if self.registered_at is None:
                self.registered_at = self._clock() if at is None else at
        if mode == REGISTRATION:
            self._start(REGISTRATION, self.registered_at)

    def marked_request(self, mode: str, at: float) -> bool:
        """A request carrying the consumer marker arrived at ``at``; starts the clock in opt-in mode.

        A marked request seen before registration counts from registration: a
        consumer cannot really have picked us before we were visible, and warm-up
        must never start before registration (see the module docstring).
        """
        if mode != FIRST_REQUEST:
            return False
        with self._lock:
            registered_at = self.registered_at
        if registered_at is None:
            return False
        return self._start(FIRST_REQUEST, max(at, registered_at))

    def _start(self, by: str, at: Optional[float]) -> bool:
        with self._lock:
            if self.started_at is not None:
                return False
            now = self._clock()
            start = now if at is None else min(at, now)
            self.started_at = start
            self.started_wall = self._wall() - (now - start)
            self.started_by = by
            return True

    def elapsed(self) -> Optional[float]:
        started = self.started_at
        return None if started is None else max(0.0, self._clock() - started)

    def weight(self, current: Settings) -> float:
        return weight(
            self.elapsed(),
            current.warmup_seconds,
            current.warmup_curve,
            current.warmup_min_weight_percent,
            current.warmup_enabled,
        )

    def complete(self, current: Settings) -> bool:
        if not current.warmup_enabled or current.warmup_seconds <= 0:
            return True
        elapsed = self.elapsed()
        return elapsed is not None and elapsed >= current.warmup_seconds

    def describe(self, current: Settings) -> Dict[str, Any]:
        elapsed = self.elapsed()
        return {
            "enabled": bool(current.warmup_enabled),
            "start": current.warmup_start,
            "started": self.started_at is not None,
            "started_by": self.started_by or None,
            "started_at": iso_time(self.started_wall),
            "elapsed_seconds": None if elapsed is None else round(elapsed, 3),
            "seconds": current.warmup_seconds,
            "curve": current.warmup_curve,
            "min_weight_percent": current.warmup_min_weight_percent,
            "weight": round(self.weight(current), 4),
            "complete": self.complete(current),
        }


def iso_time(epoch: Optional[float]) -> Optional[str]:
    """``2026-01-02T03:04:05.678Z`` for an epoch time; None for None."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".%03dZ" % int((epoch % 1) * 1000)


# -- the consumer marker, from any process ----------------------------------------------

_marked_pid = 0  # the pid that already reported a marked request (0: none in this process)
_marker_path: Optional[str] = None  # set by the owner's lifecycle; inherited by forked workers
_owner_sink: Optional[Callable[[float], None]] = None
_owner_pid = 0


def marker_path() -> Optional[str]:
    """Where marked requests are reported: next to the per-container shared memory."""
    if _marker_path is not None:
        return _marker_path
    try:
        segment = shared.segment()
        if segment is not None and segment.path:  # no path: process-private memory, no marker
            return segment.path + MARKER_SUFFIX
    except Exception:
        pass
    return None


def set_owner_sink(sink: Optional[Callable[[float], None]], path: Optional[str]) -> None:
    """The owner's lifecycle: hear marked requests of this process directly; workers use ``path``."""
    global _owner_sink, _owner_pid, _marker_path
    _owner_sink = sink
    _owner_pid = os.getpid()
    _marker_path = path


def on_marked_request() -> None:
    """Called by the inbound wrappers for a TRAFFIC request carrying ``X-Pilotfish-Consumer``.

    Cheap after the first call in a process (one global compare). Never raises.
    Kubelet probes and ignored paths must not call it: they are not consumer traffic.
    """
    global _marked_pid
    pid = os.getpid()
    if _marked_pid == pid:
        return
    _marked_pid = pid
    now = time.monotonic()
    try:
        sink = _owner_sink
        if sink is not None and _owner_pid == pid:
            sink(now)
            return
        path = marker_path()
        if path is None:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, ("%.6f\n" % now).encode("ascii"))
        finally:
            os.close(fd)
    except FileExistsError:
        pass
    except Exception:
        log.exception_once("warmup-marker", "could not report a consumer-marked request to the warm-up clock")


def forget_marked_request() -> None:
    """This process may report a marked request again (tests; the clock itself never restarts)."""
    global _marked_pid
    _marked_pid = 0


def read_marker(path: Optional[str]) -> Optional[float]:
    """The monotonic time of the first marked request a worker reported, or None."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            text = handle.read(64).decode("ascii", "replace").strip()
    except OSError:
        return None
    try:
        return float(text)
    except ValueError:
        # The writer created the file but has not written yet: the request is now.
        return time.monotonic() if not text else None


def remove_marker(path: Optional[str]) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
