"""Open-loop load: request ``i`` is due at ``start + i / rate`` whatever earlier answers did.

A scheduler hands due requests to a pool of sender threads (each with its own keep-alive
session, as a real client pool); latency is taken from the due time, so a sender that falls
behind shows up as latency, never as fewer requests (no coordinated omission).
With ``workers=0`` requests run inline on the caller's thread (tests, with a fake clock).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, List, Optional, Tuple

# Imported as hack.bench_rollout.loadgen on the host, as bench_rollout.loadgen in the pod.
from .stats import Record, classify_error, classify_status, due_indices, schedule

Sender = Callable[[], Tuple[int, str]]  # returns (HTTP status, body); raises on a failed request


class OpenLoop:
    def __init__(
        self,
        make_sender: Callable[[], Sender],
        rate: float,
        workers: int = 32,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.make_sender = make_sender
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.records: List[Record] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[Optional[float]] = queue.Queue()
        self._stop = threading.Event()
        self.workers = workers
        self._threads: List[threading.Thread] = []
        self.start_time = 0.0
        self.sent = 0

    def _one(self, send: Sender, due: float) -> None:
        try:
            status, body = send()
            outcome, pod, detail = classify_status(status), body.strip()[:80], str(status)
        except Exception as exc:  # every failure is counted by cause, none retried
            outcome, pod, detail = classify_error(exc), "", "%s: %s" % (type(exc).__name__, exc)
        record = Record(due, self.clock(), outcome, pod if outcome == "ok" else "", detail[:200])
        with self._lock:
            self.records.append(record)

    def _worker(self) -> None:
        send = self.make_sender()
        while True:
            due = self._queue.get()
            if due is None:
                return
            self._one(send, due)

    def run(self, until: Optional[float] = None) -> None:
        """Schedule from now until ``until`` (or :meth:`stop`); blocks the caller."""
        self.start_time = self.clock()
        inline = self.make_sender() if self.workers == 0 else None
        for _ in range(self.workers):
            thread = threading.Thread(target=self._worker, daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            while not self._stop.is_set():
                now = self.clock()
                if until is not None and now >= until:
                    break
                for index in due_indices(self.start_time, self.rate, self.sent, now):
                    due = schedule(self.start_time, self.rate, index)
                    self.sent = index + 1
                    if inline is not None:
                        self._one(inline, due)
                    else:
                        self._queue.put(due)
                next_due = schedule(self.start_time, self.rate, self.sent)
                self.sleep(max(0.0, min(next_due - self.clock(), 0.05)))
        finally:
            for _ in self._threads:
                self._queue.put(None)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self, wait: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(wait)

    def snapshot(self, since: int = 0) -> List[Record]:
        with self._lock:
            return list(self.records[since:])


def requests_sender(url: str, timeout: float) -> Callable[[], Sender]:
    """One ``requests.Session`` (keep-alive) per sender thread, no retries."""

    def make() -> Sender:
        import requests

        session = requests.Session()

        def send() -> Tuple[int, str]:
            answer = session.get(url, timeout=timeout)
            return answer.status_code, answer.text

        return send

    return make
