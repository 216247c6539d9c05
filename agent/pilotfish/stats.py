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
from typing import Dict, List

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


def totals() -> Totals:
    """Read every slot; free and count the slots of workers that are gone."""
    global _deaths, _departed_requests
    result = Totals()
    segment = shared.segment()
    if segment is None:
        return result
    with _lock:
        for index, counters, tags in segment.read_slots():
            pid, in_flight, requests, probes, ignored, started = counters
            if pid != os.getpid() and not shared.process_alive(pid):
                segment.release_slot(index, pid)
                _deaths += 1
                _departed_requests += requests
                for tag, count in tags.items():
                    _departed_by_tag[tag] = _departed_by_tag.get(tag, 0) + count
                continue
            result.in_flight += max(in_flight, 0)
            result.requests_total += requests
            result.probes_total += probes
            result.ignored_total += ignored
            for tag, count in tags.items():
                result.by_tag[tag] = result.by_tag.get(tag, 0) + count
            result.workers.append(WorkerView(pid, in_flight, requests, probes, ignored, started))
        result.worker_deaths = _deaths
        # Counters are totals since start: requests served by workers that have
        # since exited still count (Prometheus counters must not go down).
        result.requests_total += _departed_requests
        for tag, count in _departed_by_tag.items():
            result.by_tag[tag] = result.by_tag.get(tag, 0) + count
    return result
