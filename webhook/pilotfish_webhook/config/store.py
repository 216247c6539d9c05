"""The policies in force, the problems with the rest, and a wake-up for long-polls.

Sources (the watched file, the in-cluster watch) feed objects in; the store keeps
every valid one, and for an invalid one keeps the last good version of the same
object in force while recording the error (logged once per distinct message,
listed in ``GET /v1/status``). Each change publishes a new immutable
:class:`~pilotfish_webhook.config.merge.PolicySet` and wakes every waiting
long-poll through :class:`Changes`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple

from pilotfish_webhook.config.merge import (
    InvalidPolicy,
    Policy,
    PolicySet,
    describe,
    name_label,
    parse_policy,
)

log = logging.getLogger("pilotfish_webhook.config")


class Changes:
    """A generation counter that async waiters can sleep on; :meth:`notify` is thread-safe.

    A waiter reads :attr:`generation` *before* reading the state it watches, then calls
    :meth:`wait` with it: a change announced in between (even from another thread, whose
    wake-up is still on its way to the loop) returns at once, so no change is ever missed.
    A change wakes every waiter from one callback (each waiter is a bare future, with a
    loop timer for its timeout): with a thousand parked long-polls that is the push.
    """

    def __init__(self) -> None:
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._waiters: Dict[asyncio.Future[bool], None] = {}
        self.generation = 0
        self._followers: List[Changes] = []

    def forward_to(self, follower: Changes) -> None:
        """Every change here is also a change of ``follower`` (a view built from several sources)."""
        self._followers.append(follower)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def wait(self, generation: int, seconds: float) -> bool:
        """Until a change after ``generation``: True, or False when ``seconds`` passed first."""
        if self.generation != generation:
            return True
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters[waiter] = None
        timer = loop.call_later(seconds, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiters.pop(waiter, None)

    def notify(self) -> None:
        self.generation += 1
        for follower in self._followers:
            follower.notify()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._fire()
        else:
            loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class PolicyStore:
    def __init__(self, system_namespace: str, changes: Optional[Changes] = None) -> None:
        self.system_namespace = system_namespace
        self.changes = changes or Changes()
        self._lock = threading.Lock()
        self._good: Dict[str, Policy] = {}
        self.errors: Dict[str, Dict[str, Any]] = {}
        self.source_error: Optional[Dict[str, Any]] = None
        self.snapshot = PolicySet((), system_namespace)
        self.loaded_at: Optional[float] = None
        self.updates = 0

    # -- feeding

    def replace_all(self, objects: Iterable[Tuple[Any, str]]) -> None:
        """A full state (the file): objects absent from it are removed."""
        with self._lock:
            good: Dict[str, Policy] = {}
            errors: Dict[str, Dict[str, Any]] = {}
            for obj, origin in objects:
                key = _key_of(obj, self._default_namespace())
                try:
                    policy = parse_policy(obj, origin, self._default_namespace())
                except InvalidPolicy as problem:
                    errors[key] = self._reject(key, str(problem))
                    if key in self._good and key not in good:
                        good[key] = self._good[key]
                    continue
                if policy.key in good and policy.key not in errors:
                    errors[policy.key] = self._reject(
                        policy.key, "%s: defined twice; the first one is used" % describe(obj, origin)
                    )
                    continue
                good[policy.key] = policy
            self._good, self.errors, self.source_error = good, errors, None
            self._publish()

    def upsert(self, obj: Any, origin: str) -> None:
        """One object added or modified (the in-cluster watch)."""
        with self._lock:
            key = _key_of(obj, self._default_namespace())
            try:
                policy = parse_policy(obj, origin, self._default_namespace())
            except InvalidPolicy as problem:
                self.errors[key] = self._reject(key, str(problem))
                return  # the last good version of this object (if any) stays in force
            self.errors.pop(key, None)
            self._good[policy.key] = policy
            self._publish()

    def delete(self, obj: Any) -> None:
        with self._lock:
            key = _key_of(obj, self._default_namespace())
            self.errors.pop(key, None)
            if self._good.pop(key, None) is not None:
                self._publish()

    def replace_from_list(self, objects: Iterable[Tuple[Any, str]]) -> None:
        """A relist: same as :meth:`replace_all`, named for the watch code's readers."""
        self.replace_all(objects)

    def set_source_error(self, message: str) -> None:
        """The source itself is broken (unreadable file, bad YAML): keep everything, say why."""
        with self._lock:
            if self.source_error is None or self.source_error["message"] != message:
                log.warning("policies not reloaded: %s; the last good policies stay in force", message)
            self.source_error = {"message": message, "at": time.time()}

    # -- reading

    def status(self) -> Dict[str, Any]:
        snapshot = self.snapshot
        return {
            "policies": [
                {
                    "object": p.key,
                    "scope": _scope(p, snapshot.system_namespace),
                    "apps": list(p.apps or []),
                    "resourceVersion": p.resource_version,
                }
                for p in sorted(snapshot.policies.values(), key=lambda p: p.key)
            ],
            "errors": sorted(self.errors.values(), key=lambda e: e["object"]),
            "source_error": self.source_error,
            "loaded_at": self.loaded_at,
            "updates": self.updates,
        }

    # -- internals

    def _default_namespace(self) -> str:
        return "default"

    def _reject(self, key: str, message: str) -> Dict[str, Any]:
        previous = self.errors.get(key)
        if previous is None or previous["message"] != message:
            kept = " (its last good version stays in force)" if key in self._good else ""
            log.warning("policy rejected: %s%s", message, kept)
        return {"object": key, "message": message, "at": time.time()}

    def _publish(self) -> None:
        self.snapshot = PolicySet(self._good.values(), self.system_namespace)
        self.loaded_at = time.time()
        self.updates += 1
        self.changes.notify()


def _scope(policy: Policy, system_namespace: str) -> str:
    if policy.namespace == system_namespace:
        return "cluster" if policy.apps is None else "cluster/app"
    return "namespace" if policy.apps is None else "app"


def _key_of(obj: Any, default_namespace: str) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return "%s/<unnamed>" % default_namespace
    return "%s/%s" % (
        name_label(meta.get("namespace"), default_namespace),
        name_label(meta.get("name"), "<unnamed>"),
    )
