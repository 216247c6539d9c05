"""Counting: open-loop schedule, failure causes, percentiles, steady vs rollout split.

Pure functions over :class:`Record` lists; no clock is read here, so tests drive them with a
fake one.
"""

from __future__ import annotations

import errno
import math
import socket
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

CAUSES = ("refused", "reset", "5xx", "timeout", "other")


@dataclass
class Record:
    """One request: when it was due (``scheduled``), when it ended, and how."""

    scheduled: float  # wall-clock seconds the schedule said to send it
    done: float  # when the answer (or the error) came
    outcome: str  # "ok" or one of CAUSES
    pod: str = ""  # which provider pod answered (from the body)
    detail: str = ""

    @property
    def latency(self) -> float:
        """From the scheduled time, not the send time: queueing behind a slow request counts."""
        return self.done - self.scheduled

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Record:
        return cls(**data)


def schedule(start: float, rate: float, index: int) -> float:
    """The open-loop due time of request ``index``: fixed rate, independent of answers."""
    return start + index / rate


def due_indices(start: float, rate: float, sent: int, now: float) -> range:
    """Requests due by ``now`` that are not sent yet (all of them at once if the sender fell behind)."""
    if now < start:
        return range(sent, sent)
    last = int(math.floor((now - start) * rate + 1e-9))
    return range(sent, max(sent, last + 1))


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: List[int] = []
    todo: List[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.append(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)
        for arg in getattr(current, "args", ()):
            if isinstance(arg, BaseException):
                todo.append(arg)
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)


def classify_status(status: int) -> str:
    if status >= 500:
        return "5xx"
    if 200 <= status < 400:
        return "ok"
    return "other"


def classify_error(exc: BaseException) -> str:
    """A failed request's cause: refused, reset (incl. closed without an answer), timeout, other."""
    found = list(_chain(exc))
    names = " ".join(type(e).__name__ for e in found) + " " + " ".join(str(e) for e in found)
    for e in found:
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "refused"
    for e in found:
        if isinstance(e, (socket.timeout, TimeoutError)) or "Timeout" in type(e).__name__:
            return "timeout"
    for e in found:
        if isinstance(e, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return "reset"
        if type(e).__name__ in ("RemoteDisconnected", "IncompleteRead", "ProtocolError", "BadStatusLine"):
            return "reset"
    if "refused" in names.lower():
        return "refused"
    if "timed out" in names.lower():
        return "timeout"
    if "reset" in names.lower() or "aborted" in names.lower() or "RemoteDisconnected" in names:
        return "reset"
    return "other"


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(math.ceil(q / 100.0 * len(ordered))))
    return ordered[min(rank, len(ordered)) - 1]


def in_windows(t: float, windows: Sequence[Tuple[float, float]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def split(records: Sequence[Record], windows: Sequence[Tuple[float, float]]) -> Dict[str, List[Record]]:
    """Records by phase: ``rollout`` if scheduled inside a rollout window, else ``steady``."""
    out: Dict[str, List[Record]] = {"steady": [], "rollout": []}
    for r in records:
        out["rollout" if in_windows(r.scheduled, windows) else "steady"].append(r)
    return out


def summarize(records: Sequence[Record], windows: Sequence[Tuple[float, float]]) -> Dict[str, Any]:
    """Totals, failures by cause, and p50/p99 latency (ms, successful requests) per phase."""
    causes = dict.fromkeys(CAUSES, 0)
    for r in records:
        if r.outcome != "ok":
            causes[r.outcome if r.outcome in causes else "other"] += 1
    phases = split(records, windows)
    latency: Dict[str, Dict[str, Optional[float]]] = {}
    for phase, rs in phases.items():
        ok = [r.latency * 1000.0 for r in rs if r.outcome == "ok"]
        latency[phase] = {"p50": percentile(ok, 50), "p99": percentile(ok, 99), "count": float(len(rs))}
    return {
        "total": len(records),
        "failed": sum(causes.values()),
        "causes": causes,
        "latency_ms": latency,
    }


def per_second(
    records: Sequence[Record], start: float, end: float, step: float = 1.0
) -> List[Tuple[float, int, int]]:
    """(bin start relative to ``start``, answered ok, failed) per ``step`` of scheduled time."""
    bins = max(1, int(math.ceil((end - start) / step)))
    ok = [0] * bins
    bad = [0] * bins
    for r in records:
        i = int((r.scheduled - start) // step)
        if 0 <= i < bins:
            if r.outcome == "ok":
                ok[i] += 1
            else:
                bad[i] += 1
    return [(i * step, ok[i], bad[i]) for i in range(bins)]


def share(
    records: Sequence[Record], pod: str, start: float, end: float, step: float
) -> List[Tuple[float, float, int]]:
    """(seconds since ``start`` at the bin's middle, ``pod``'s share of ok answers, answers) per bin."""
    out: List[Tuple[float, float, int]] = []
    t = start
    while t < end - 1e-9:
        hi = min(end, t + step)
        rs = [r for r in records if t <= r.scheduled < hi and r.outcome == "ok"]
        if rs:
            out.append(((t + hi) / 2 - start, sum(1 for r in rs if r.pod == pod) / len(rs), len(rs)))
        t = hi
    return out
