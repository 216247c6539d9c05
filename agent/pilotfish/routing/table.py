"""The Services and instances of one registry answer, and the per-request pick.

Built once per answer of ``GET /v1/routing`` (never per call); a pick then
reads only what it needs:

1. **Lane.** A tagged request goes to the instances with its tag. With none
   (or none usable), ``permissive`` falls back to the baseline (untagged)
   instances and ``strict`` raises :class:`NoInstanceInLane`, a
   ``ConnectionError`` whose message names the lane and the Service. An
   untagged request never goes to a tagged instance, unless the Service has
   only tagged ones: then anywhere, and the core warns once.
2. **Warm-up weight**, with the *provider's* settings from the registry:
   ``max(min%, (t/T)^curve)`` where ``t`` is the instance's age by the config
   service's clock: ``server_now - ready_at`` at the answer, plus this
   process's monotonic time since. When more than half of a Service's
   instances are warming (a full rollout), no weights apply: nobody starves.
3. **Never** an instance that is not ready, offline in the registry, evicted
   by an ``X-Pilotfish-Offline`` answer, or ejected after a connect failure
   (unless every candidate is ejected: then ejections are ignored, a guess beats
   a certain failure).
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

from . import hosts

# Counts are bumped from every thread of the app: ``d[k] = d.get(k, 0) + 1`` and
# ``x += 1`` lose updates when the GIL switches between the read and the write. An
# ``itertools.count`` advances in one C call, so ``next()`` never loses one, costs less
# than a lock, and leaves nothing for a fork to inherit held. Its value is in its repr.
Counter = Iterator[int]


def counted(counter: Counter) -> int:
    """How many times ``next()`` was called on a counter made by ``itertools.count()``."""
    return int(repr(counter)[6:-1])


NEVER = float("-inf")


class NoInstanceInLane(ConnectionError):
    """``strict`` lane mode and no instance of the request's lane: the call fails, saying why."""


class Instance:
    """One pod behind a Service, as a caller sees it."""

    __slots__ = (
        "pod",
        "ip",
        "ports",
        "tag",
        "state",
        "ready",
        "ready_mono",
        "warmup_enabled",
        "seconds",
        "curve",
        "floor",
        "evicted_until",
        "ejected_until",
        "failures",
        "_ejections",
        "_sent",
        "key",
    )

    def __init__(self, raw: Dict[str, Any], ready_mono: float) -> None:
        self.pod = str(raw.get("pod") or "")
        self.ip = str(raw.get("ip") or "")
        self.ports: Dict[int, int] = {}
        for port, target in (raw.get("ports") or {}).items():
            try:
                self.ports[int(port)] = int(target)
            except (TypeError, ValueError):
                continue
        self.tag = str(raw.get("tag") or "")
        self.state = str(raw.get("state") or "")
        self.ready = bool(raw.get("ready", True)) and self.state != "offline" and not raw.get("terminating")
        self.ready_mono = ready_mono
        warmup = raw.get("warmup") or {}
        self.warmup_enabled = bool(warmup.get("enabled", True))
        self.seconds = _number(warmup.get("seconds"), 120.0)
        self.curve = _number(warmup.get("curve"), 2.0)
        self.floor = max(0.0, min(100.0, _number(warmup.get("min_weight_percent"), 10.0))) / 100.0
        self.evicted_until = NEVER  # an X-Pilotfish-Offline answer was seen
        self.ejected_until = NEVER  # a connect failure
        self.failures = 0  # in a row; a successful connect resets it
        self._ejections: Counter = itertools.count()
        self._sent: Counter = itertools.count()
        self.key = (self.ip, self.pod)

    def warm_at(self) -> float:
        """Monotonic time at which warm-up is over (NEVER when it does not apply)."""
        if not self.warmup_enabled or self.seconds <= 0 or self.ready_mono == NEVER:
            return NEVER
        return self.ready_mono + self.seconds

    def weight(self, now: float) -> float:
        """The warm-up weight (0..1] at monotonic time ``now``."""
        if not self.warmup_enabled or self.seconds <= 0 or self.ready_mono == NEVER:
            return 1.0
        age = now - self.ready_mono
        if age >= self.seconds:
            return 1.0
        if age <= 0:
            return self.floor
        weight: float = (age / self.seconds) ** self.curve
        return max(self.floor, weight)

    def usable(self, now: float) -> bool:
        return self.ready and self.evicted_until <= now and self.ejected_until <= now

    def take_over(self, old: Instance) -> None:
        """Keep what this caller learnt about the same pod from the previous answer."""
        self.evicted_until, self.ejected_until = old.evicted_until, old.ejected_until
        self.failures = old.failures
        # The same counters, not copies: a request that picked the old object still counts.
        self._sent, self._ejections = old._sent, old._ejections

    @property
    def sent(self) -> int:
        return counted(self._sent)

    @sent.setter
    def sent(self, value: int) -> None:
        self._sent = itertools.count(value)

    @property
    def ejections(self) -> int:
        return counted(self._ejections)

    @ejections.setter
    def ejections(self, value: int) -> None:
        self._ejections = itertools.count(value)


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value)


class Service:
    """One Service of the registry answer: its ports, instances by lane, and the pick."""

    __slots__ = (
        "name",
        "namespace",
        "ports",
        "cluster_ips",
        "enabled",
        "instances",
        "by_tag",
        "baseline",
        "warm_after",
        "counters",
    )

    def __init__(self, raw: Dict[str, Any], namespace: str, instances: List[Instance]) -> None:
        self.name = str(raw.get("name") or "")
        self.namespace = namespace
        self.ports = frozenset(
            p["port"]
            for p in raw.get("ports") or ()
            if isinstance(p, dict) and isinstance(p.get("port"), int)
        )
        self.cluster_ips = [ip for ip in raw.get("cluster_ips") or () if isinstance(ip, str) and ip]
        self.enabled = bool(raw.get("routing_enabled", True))
        self.instances = instances
        self.by_tag: Dict[str, List[Instance]] = {}
        self.baseline: List[Instance] = []
        for instance in instances:
            if instance.tag:
                self.by_tag.setdefault(instance.tag, []).append(instance)
            else:
                self.baseline.append(instance)
        self.warm_after = max([i.warm_at() for i in instances if i.ready] or [NEVER])
        # (lane, instance tag, outcome) -> requests; shared with the next answer's Service
        self.counters: Dict[Tuple[str, str, str], Counter] = {}

    @property
    def stats(self) -> Dict[Tuple[str, str, str], int]:
        """Requests by (lane, instance tag, outcome) so far."""
        return {key: counted(counter) for key, counter in list(self.counters.items())}

    def reset_counts(self) -> None:
        """A forked child counts its own requests from zero (its parent reports its own)."""
        self.counters = {}
        for instance in self.instances:
            instance.sent = instance.ejections = 0

    def count(
        self,
        lane: str,
        instance_tag: str,
        outcome: str,
        sent: Optional[Instance] = None,
        failed: bool = False,
    ) -> None:
        """Count one request by (lane, instance tag, outcome); ``sent`` also counts it on that instance.

        ``failed``: the connection to ``sent`` failed (counts a failure and an ejection instead).
        """
        key = (lane, instance_tag, outcome)
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters.setdefault(key, itertools.count())
        next(counter)
        if sent is not None:
            if failed:
                sent.failures += 1
                next(sent._ejections)
            else:
                next(sent._sent)

    def pick(
        self,
        port: int,
        tag: Optional[str],
        strict: bool,
        exclude: Optional[Instance] = None,
        now: Optional[float] = None,
    ) -> Tuple[Optional[Instance], str]:
        """(instance, outcome) for a request to ``port``; (None, why) = take the ordinary path.

        Outcomes: ``lane`` (same tag), ``baseline`` (untagged to baseline),
        ``fallback`` (tagged, no instance of its lane, sent to baseline),
        ``anywhere`` (untagged, only tagged instances exist).
        Raises :class:`NoInstanceInLane` in strict mode.
        """
        if now is None:
            now = time.monotonic()
        if tag:
            found = self._candidates(self.by_tag.get(tag), port, now, exclude)
            if found:
                return self._choose(found, now), "lane"
            if strict:
                raise NoInstanceInLane(
                    "pilotfish: no instance of lane %r is available for Service %s.%s (lane mode strict)"
                    % (tag, self.name, self.namespace)
                )
            outcome = "fallback"
        else:
            outcome = "baseline"
        found = self._candidates(self.baseline, port, now, exclude)
        if found:
            return self._choose(found, now), outcome
        if not self.baseline and self.by_tag and not tag:
            found = self._candidates(self.instances, port, now, exclude)
            if found:
                return self._choose(found, now), "anywhere"
        return None, "no-instance"

    def fits(self, instance: Instance, port: int, tag: Optional[str], strict: bool) -> bool:
        """Whether a connection already open to ``instance`` may carry a request with ``tag``."""
        now = time.monotonic()
        if not (instance.usable(now) and port in instance.ports):
            return False
        if tag:
            if instance.tag == tag:
                return True
            lane = self._candidates(self.by_tag.get(tag), port, now, None)
            return not instance.tag and not strict and not lane
        return not instance.tag or not self.baseline

    def _candidates(
        self, pool: Optional[List[Instance]], port: int, now: float, exclude: Optional[Instance]
    ) -> List[Instance]:
        if not pool:
            return []
        found = [i for i in pool if i.ready and port in i.ports and i is not exclude]
        usable = [i for i in found if i.evicted_until <= now and i.ejected_until <= now]
        if usable or not found:
            return usable
        # Every candidate is ejected after connect failures: trying one beats failing for sure.
        # Instances evicted by an offline answer stay out.
        return [i for i in found if i.evicted_until <= now]

    def _choose(self, found: List[Instance], now: float) -> Instance:
        if len(found) == 1:
            return found[0]
        if now >= self.warm_after:
            return random.choice(found)
        ready = [i for i in self.instances if i.ready]
        warming = sum(1 for i in ready if now < i.warm_at())
        if warming * 2 > len(ready):
            return random.choice(found)  # a full rollout: weights would starve everyone
        weights = [i.weight(now) for i in found]
        point = random.random() * sum(weights)
        for instance, weight in zip(found, weights):
            point -= weight
            if point < 0:
                return instance
        return found[-1]


class Table:
    """One registry answer: Services by every host spelling that reaches them."""

    __slots__ = ("version", "namespace", "services", "hosts", "received_mono", "server_now")

    def __init__(
        self, version: str, namespace: str, services: List[Service], received_mono: float, server_now: float
    ):
        self.version = version
        self.namespace = namespace
        self.services = services
        self.received_mono = received_mono
        self.server_now = server_now
        self.hosts: Dict[str, Service] = {}


def build(
    answer: Dict[str, Any],
    caller_namespace: str,
    received_mono: float,
    previous: Optional[Table] = None,
) -> Table:
    """A :class:`Table` from a ``/v1/routing`` answer received at ``received_mono``.

    Ages use the server's clock only: an instance that became ready at
    ``ready_at`` (server epoch) was ``server_now - ready_at`` seconds old when
    the answer left the server, so its warm-up started at monotonic
    ``received_mono - (server_now - ready_at)`` here.
    """
    server_now = _number(answer.get("now"), 0.0)
    namespace = str(answer.get("namespace") or caller_namespace)
    old: Dict[Tuple[str, Tuple[str, str]], Instance] = {}
    old_counters: Dict[str, Dict[Tuple[str, str, str], Counter]] = {}
    if previous is not None:
        for service in previous.services:
            old_counters[service.name] = service.counters
            for instance in service.instances:
                old[(service.name, instance.key)] = instance
    services = []
    for raw in answer.get("services") or ():
        if not isinstance(raw, dict) or not raw.get("name"):
            continue
        instances = []
        for item in raw.get("instances") or ():
            if not isinstance(item, dict) or not item.get("ip"):
                continue
            ready_at = item.get("ready_at")
            if isinstance(ready_at, (int, float)) and not isinstance(ready_at, bool) and server_now:
                ready_mono = received_mono - (server_now - float(ready_at))
            else:
                ready_mono = NEVER  # unknown: treat as warm, never as new
            instance = Instance(item, ready_mono)
            before = old.get((str(raw["name"]), instance.key))
            if before is not None:
                instance.take_over(before)
            instances.append(instance)
        service = Service(raw, namespace, instances)
        # The same dict, not a copy: a request that picked from the old table while this one
        # was built still counts, and /status never goes back when a new answer arrives.
        service.counters = old_counters.get(service.name, service.counters)
        services.append(service)
    table = Table(str(answer.get("version") or ""), namespace, services, received_mono, server_now)
    for service in services:
        for name in hosts.names(service.name, namespace, caller_namespace):
            table.hosts[name] = service
        for ip in service.cluster_ips:  # a call to the ClusterIP is a call to the Service
            table.hosts[ip] = service
    return table
