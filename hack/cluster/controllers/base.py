"""A work queue of object keys, fed by store subscriptions, drained by one worker thread.

Callbacks only enqueue (the store's dispatch thread must stay quick); the worker reconciles
each key against the store's current state, so repeated events collapse into one pass.
``requeue_after`` covers what no event announces (minReadySeconds elapsing).
"""

from __future__ import annotations

import calendar
import heapq
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..store import Store

log = logging.getLogger("cluster.controllers")

Obj = Dict[str, Any]
Key = Tuple[str, str]


class Controller:
    name = "controller"

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cv = threading.Condition()
        self._ready: List[Key] = []
        self._queued: Set[Key] = set()
        self._later: List[Tuple[float, Key]] = []
        self._stopping = False
        self._unsubscribe: List[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def watch(self, resource: str, keys: Callable[[str, Obj], List[Key]]) -> None:
        def callback(kind: str, obj: Obj) -> None:
            for key in keys(kind, obj):
                self.enqueue(key)

        self._unsubscribe.append(self.store.subscribe(resource, callback))

    def enqueue(self, key: Key) -> None:
        with self._cv:
            if key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)
                self._cv.notify()

    def requeue_after(self, key: Key, seconds: float) -> None:
        with self._cv:
            heapq.heappush(self._later, (time.monotonic() + max(0.0, seconds), key))
            self._cv.notify()

    def start(self) -> Controller:
        self._thread.start()
        return self

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def reconcile(self, namespace: str, name: str) -> None:
        raise NotImplementedError

    def _next(self) -> Optional[Key]:
        with self._cv:
            while not self._stopping:
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    _, key = heapq.heappop(self._later)
                    if key not in self._queued:
                        self._queued.add(key)
                        self._ready.append(key)
                if self._ready:
                    key = self._ready.pop(0)
                    self._queued.discard(key)
                    return key
                wait = self._later[0][0] - now if self._later else None
                self._cv.wait(wait)
            return None

    def _run(self) -> None:
        while True:
            key = self._next()
            if key is None:
                return
            try:
                self.reconcile(*key)
            except Exception:
                log.exception("%s: reconciling %s/%s failed; retrying in 1 s", self.name, *key)
                self.requeue_after(key, 1.0)


def owner_key(obj: Obj, kind: str) -> List[Key]:
    meta = obj.get("metadata") or {}
    return [
        (meta.get("namespace") or "", ref.get("name", ""))
        for ref in meta.get("ownerReferences") or []
        if ref.get("kind") == kind and ref.get("controller")
    ]


def own_key(obj: Obj) -> List[Key]:
    meta = obj.get("metadata") or {}
    return [(meta.get("namespace") or "", meta.get("name") or "")]


def owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def condition(obj: Obj, kind: str) -> Optional[Obj]:
    conditions: List[Obj] = (obj.get("status") or {}).get("conditions") or []
    for cond in conditions:
        if cond.get("type") == kind:
            return cond
    return None


def is_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def ready_since(pod: Obj) -> Optional[float]:
    """Epoch seconds since which the pod is Ready (its condition's lastTransitionTime)."""
    cond = condition(pod, "Ready")
    if not cond or cond.get("status") != "True":
        return None
    stamp = cond.get("lastTransitionTime")
    if not stamp:
        return 0.0
    try:
        return float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return 0.0


def terminating(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))
