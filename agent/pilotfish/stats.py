"""The owner's view of the app's traffic, summed over every worker process.

Workers write their own counters into shared memory (:mod:`pilotfish.shared`);
this module reads all slots, notices workers that died (their slot is freed and
counted in ``worker_deaths``), and returns one :class:`Totals` snapshot. It runs
only on the status server and the drain loop, never on a request path.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, List, Tuple

from . import shared


class WorkerView:
    __slots__ = ("pid", "in_flight", "requests", "probes", "ignored", "started_at")

    def __init__(
        self,
        pid: int,
        in_flight: int,
        requests: int,
        probes: int,
        ignored: int,
        started_at: float,
    ) -> None:
        self.pid = pid
        self.in_flight = in_flight
        self.requests = requests
        self.probes = probes
        self.ignored = ignored
        self.started_at = started_at

    def as_dict(self) -> Dict[str, object]:
        now = time.monotonic()
        return {
            "pid": self.pid,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "probes": self.probes,
            "ignored": self.ignored,
            "uptime_seconds": round(now - self.started_at, 3),
        }


class Totals:
    """Traffic summed over all live workers (counts only: the drain watches them move)."""

    __slots__ = (
        "in_flight",
        "requests_total",
        "probes_total",
        "ignored_total",
        "by_tag",
        "workers",
        "worker_deaths",
    )

    def __init__(self) -> None:
        self.in_flight = 0
        self.requests_total = 0
        self.probes_total = 0
        self.ignored_total = 0
        self.by_tag: Dict[str, int] = {}
        self.workers: List[WorkerView] = []
        self.worker_deaths = 0


_lock = threading.Lock()
_deaths = 0
_departed_requests = 0
_departed_by_tag: Dict[str, int] = {}
# For the "workers" gate: whether a worker process other than the owner ever held a
# slot, and when one last did (time.monotonic()).
_had_workers = False
_worker_seen_at = 0.0

NO_WORKER_GRACE = 10.0  # seconds without any worker process before readiness fails


def totals() -> Totals:
    """Read every slot; free and count the slots of workers that are gone."""
    global _deaths, _departed_requests, _had_workers, _worker_seen_at
    result = Totals()
    segment = shared.segment()
    if segment is None:
        return result
    me = os.getpid()
    with _lock:
        for index, counters, tags in segment.read_slots():
            pid, in_flight, requests, probes, ignored, started = counters
            if pid != me and not shared.process_alive(pid):
                if segment.release_slot(index, pid):
                    _deaths += 1
                    _departed_requests += requests
                    for tag, count in tags.items():
                        _departed_by_tag[tag] = _departed_by_tag.get(tag, 0) + count
                else:
                    # The slot table is busy (a worker is claiming): free it on a later
                    # read, and meanwhile keep its requests in the totals.
                    result.requests_total += requests
                    for tag, count in tags.items():
                        result.by_tag[tag] = result.by_tag.get(tag, 0) + count
                continue
            result.in_flight += max(in_flight, 0)
            result.requests_total += requests
            result.probes_total += probes
            result.ignored_total += ignored
            for tag, count in tags.items():
                result.by_tag[tag] = result.by_tag.get(tag, 0) + count
            result.workers.append(WorkerView(pid, in_flight, requests, probes, ignored, started))
            if pid != me:
                _had_workers, _worker_seen_at = True, time.monotonic()
        result.worker_deaths = _deaths
        # Counters are totals since start: requests served by workers that have
        # since exited still count (Prometheus counters must not go down).
        result.requests_total += _departed_requests
        for tag, count in _departed_by_tag.items():
            result.by_tag[tag] = result.by_tag.get(tag, 0) + count
    return result


def workers_gate() -> Tuple[bool, str]:
    """Readiness gate: once worker processes served, at least one must still be there.

    A prefork server (gunicorn) whose workers have all exited and are not replaced
    (the master cannot fork, or new workers hang before they start) accepts
    connections that nobody serves. Replacements claim their slot at once, so
    ``NO_WORKER_GRACE`` seconds without any is no normal restart.
    """
    current = totals()
    segment = shared.segment()
    if segment is not None and not segment.shared:
        return True, "worker processes are not counted (%s)" % segment.unavailable
    me = os.getpid()
    workers = [worker.pid for worker in current.workers if worker.pid != me]
    if workers:
        return True, "%d worker process(es) report" % len(workers)
    if not _had_workers:
        return True, "no separate worker processes (this process serves, or none started yet)"
    gone_for = time.monotonic() - _worker_seen_at
    if gone_for < NO_WORKER_GRACE:
        return True, "no worker process for %.1fs (replacements are starting)" % gone_for
    return False, (
        "no worker process has reported for %.0fs (%d exited); nothing serves the app's requests"
        % (gone_for, current.worker_deaths)
    )
