"""The process's routing state: the current table, the long-poll that refreshes it, and the pick.

What the client hooks (``pilotfish.integrations.routing_*``) call:

- :func:`find` ``(host) -> Service | None``: one ``dict.get`` on the table's host
  index. ``None`` (the usual case for a host that is not a Service we know)
  means: take exactly the path the app would take without the agent.
- :func:`choose` ``(service, port, exclude=None) -> Instance | None``: the
  per-request pick (lane, warm-up weight, offline, ejections) with the
  request's tag from :data:`pilotfish.tags.context.CURRENT_TAG`; counts the
  request; raises :class:`~.table.NoInstanceInLane` in strict lane mode.
- :func:`connect_failed` / :func:`offline_seen`: what the caller learnt from a
  refused connection or an ``X-Pilotfish-Offline: 1`` answer.

The table comes from ``GET /v1/routing`` of the config service, long-polled by
one daemon thread per process (started lazily on the first outbound call of a
process that serves, or at wake-up in the owner; restarted after a fork), and
kept when the service goes away: the last answer stays in force.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import PACKAGE, log, settings
from ..tags.context import CURRENT_TAG
from . import table as table_module
from .table import Instance, NoInstanceInLane, Service, Table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..central.transport import Transport

__all__ = ["NoInstanceInLane", "find", "choose", "connect_failed", "offline_seen"]

POLL_SECONDS = 30.0
EVICT_SECONDS = (
    60.0  # an instance that answered "offline" stays out this long (or until the registry drops it)
)
EJECT_BASE = 1.0
EJECT_CAP = 30.0
FIRST_ANSWER_WAIT = 5.0
"""A process's first outbound call waits this long, once, for its own first registry answer:
a worker forked with its parent's table (or started from the disk cache) may otherwise send
it by a stale table, or the ordinary way (kube-proxy: any lane)."""
CONSUMER_HEADER = "X-Pilotfish-Consumer"
OFFLINE_HEADER = "x-pilotfish-offline"

routed_hosts: Dict[str, Service] = {}
"""Every host spelling of every routed Service -> Service. Replaced whole, never mutated."""
current_table: Optional[Table] = None
"""The registry answer in force in this process (None: none yet)."""
strict_lanes = False
"""``lane_mode=strict``: a request whose lane has no instance fails instead of falling back."""
_enabled = True
started = False
"""This process's long-poll was started (or is not wanted): :func:`find` no longer checks."""
_poll_started = False
_start_lock = threading.Lock()
_poller: Optional[Poller] = None
_first_answer = threading.Event()
consumer_value = "1"
"""Value of the X-Pilotfish-Consumer header on routed requests (the caller's app name)."""
consumer_bytes = b"1"
consumer_line = b"X-Pilotfish-Consumer: 1"


# ------------------------------------------------------------------ the hot path


def find(host: str) -> Optional[Service]:
    """The Service ``host`` reaches, or None: the ordinary path."""
    if not started:
        _ensure_started(wait=FIRST_ANSWER_WAIT)
    return routed_hosts.get(host)


def choose(service: Service, port: int, exclude: Optional[Instance] = None) -> Optional[Instance]:
    """Pick an instance of ``service`` for a request to its ``port``; None = the ordinary path."""
    tag = CURRENT_TAG.get()
    now = time.monotonic()
    try:
        instance, outcome = service.pick(port, tag, strict_lanes, exclude, now)
    except NoInstanceInLane:
        service.count(tag or "", "", "strict-error")
        raise
    if instance is None:
        service.count(tag or "", "", outcome)
        return None
    if outcome == "anywhere":
        log.once(
            "routing-anywhere:" + service.name,
            "warning",
            "Service %s has only tagged instances (%s): untagged requests go to any of them"
            % (service.name, ", ".join(sorted(service.by_tag))),
        )
    service.count(tag or "", instance.tag, "retried" if exclude is not None else outcome, sent=instance)
    return instance


def connect_failed(service: Service, instance: Instance) -> None:
    """A connection to ``instance`` was refused / unreachable / timed out: eject it for a while."""
    service.count(CURRENT_TAG.get() or "", instance.tag, "connect-failed", sent=instance, failed=True)
    backoff = min(EJECT_CAP, EJECT_BASE * (2 ** min(instance.failures - 1, 8)))
    for same in _current(instance):
        same.ejected_until = time.monotonic() + backoff
    log.info(
        "routing: %s (%s:%s) of %s refused a connection; ejected for %gs"
        % (instance.pod, instance.ip, instance.ports, service.name, backoff)
    )


def connected(instance: Instance) -> None:
    instance.failures = 0


def _current(instance: Instance) -> List[Instance]:
    """``instance`` and the same pod in the current table (a newer answer may have replaced it
    while the request was in flight: what was learnt must reach the object picks now read)."""
    found = [instance]
    built = current_table
    for service in built.services if built is not None else ():
        for candidate in service.instances:
            if candidate.key == instance.key and candidate is not instance:
                found.append(candidate)
    return found


def offline_seen(instance: Instance) -> None:
    """The instance answered with ``X-Pilotfish-Offline: 1``: no new request goes there."""
    now = time.monotonic()
    if instance.evicted_until <= now:
        log.info("routing: %s (%s) is going offline; evicted" % (instance.pod, instance.ip))
    for same in _current(instance):
        same.evicted_until = max(same.evicted_until, now + EVICT_SECONDS)


def is_offline_marker(value: Any) -> bool:
    return value is not None and str(value).strip() == "1"


# ------------------------------------------------------------------ the table


def install_table(answer: Dict[str, Any], received_mono: Optional[float] = None) -> Table:
    """Make a registry answer the current table (also used by tests with a fake clock)."""
    global current_table
    current = settings.current()
    built = table_module.build(
        answer,
        current.pod_namespace or "default",
        time.monotonic() if received_mono is None else received_mono,
        current_table,
    )
    current_table = built
    _publish()
    return built


def _publish() -> None:
    global routed_hosts
    built = current_table
    if built is None or not _enabled:
        routed_hosts = {}
        return
    routed_hosts = {host: service for host, service in built.hosts.items() if service.enabled}


def _on_settings(old: settings.Settings, new: settings.Settings) -> None:
    _apply_settings(new)


def _apply_settings(current: settings.Settings) -> None:
    global strict_lanes, _enabled, consumer_value, consumer_bytes, consumer_line
    strict_lanes = current.lane_mode == "strict"
    consumer_value = current.app or "1"
    consumer_bytes = consumer_value.encode("latin-1", "replace")
    consumer_line = b"X-Pilotfish-Consumer: " + consumer_bytes
    if current.routing_enabled != _enabled:
        _enabled = bool(current.routing_enabled)
        _publish()


_apply_settings(settings.current())
settings.subscribe(_on_settings)


def reset(answer: Optional[Dict[str, Any]] = None) -> None:
    """Forget the table (tests); with ``answer``, install that one."""
    global current_table, routed_hosts
    current_table, routed_hosts = None, {}
    if answer is not None:
        install_table(answer)


# ------------------------------------------------------------------ the long-poll


class Poller:
    """Long-poll ``GET /v1/routing`` for the caller's namespace; each new answer becomes the table."""

    def __init__(self, transport: Transport, namespace: str, poll_seconds: float = POLL_SECONDS) -> None:
        self.transport = transport
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self.version = ""
        self.failures = 0
        self.last_error = ""
        self.last_ok: Optional[float] = None
        self.stopping = threading.Event()

    def poll_once(self) -> bool:
        # Imported here, not at the top: this module loads with the app's first HTTP client
        # import, in processes that may never serve (and never need ssl).
        from ..central import transport
        from ..central.transport import CallFailed

        query = {"namespace": self.namespace, "version": self.version, "timeout": "%g" % self.poll_seconds}
        status, data = self.transport.request(
            "GET", "/v1/routing", query, timeout=self.poll_seconds + transport.NETWORK_SLACK
        )
        if status == 304:
            return False
        if status != 200:
            raise CallFailed("HTTP %d %s" % (status, data[:200].decode("utf-8", "replace")))
        received = time.monotonic()
        answer = json.loads(data.decode("utf-8"))
        if not (isinstance(answer, dict) and isinstance(answer.get("services"), list)):
            raise CallFailed("unexpected answer %r" % data[:80])
        if answer.get("version") == self.version:
            return False
        install_table(answer, received)
        self.version = str(answer.get("version") or "")
        _first_answer.set()
        save_cache(answer)
        return True

    def run(self) -> None:
        from ..central import transport

        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                changed = self.poll_once()
                self.failures, self.last_error, self.last_ok = 0, "", time.time()
                if not changed and time.monotonic() - started < transport.MIN_POLL_SPACING:
                    self.stopping.wait(transport.MIN_POLL_SPACING)
            except Exception as problem:
                _first_answer.set()  # nobody waits for an answer that is not coming
                self.failures += 1
                self.last_error = "%s: %s" % (type(problem).__name__, problem)
                log.once(
                    "routing-poll:%s" % type(problem).__name__,
                    "warning",
                    "routing table unavailable (%s); keeping the last one and retrying" % self.last_error,
                )
                self.stopping.wait(transport.backoff(self.failures - 1))


def _ensure_started(wait: float = 0.0) -> None:
    """Start the long-poll in a process that serves (never in scripts, pip, migrations).

    With ``wait``, wait that long (once) for this process's first answer; never in the
    agent's own threads: the poll's own connection to the config service passes here too.
    """
    global started, _poll_started
    from .. import runtime

    if runtime.role() in (runtime.DORMANT, runtime.FAILED):  # FAILED: the app runs without us
        return
    with _start_lock:
        if not _poll_started:
            _poll_started = True
            _start_poller(runtime.role() == runtime.OWNER)
    if wait and _poller is not None and not threading.current_thread().name.startswith("pilotfish-"):
        _first_answer.wait(wait)  # a table inherited or cached may be stale: wait for ours
    started = True


def cache_path(current: settings.Settings) -> str:
    """Next to the config cache (``PILOTFISH_CACHE_DIR``, else ``PILOTFISH_STATE_DIR``, else the
    temp dir); ``OSError`` when there is no writable place (a read-only root without /tmp)."""
    from ..central import cache

    path = cache.path(current, "routing")
    if path is None:
        raise FileNotFoundError("no writable directory for the routing cache")
    return path


def save_cache(answer: Dict[str, Any]) -> None:
    """Keep the last answer on disk: workers forked or spawned later, and a restart while the
    config service is down, start routing from it at once instead of the ordinary path."""
    try:
        path = cache_path(settings.current())
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w") as handle:
            json.dump({"saved_at": time.time(), "answer": answer}, handle)
        os.replace(tmp, path)
    except OSError as problem:
        log.once("routing-cache-write", "info", "routing table not cached on disk (%s)" % problem)


def load_cache() -> bool:
    """Install the cached answer (aged by the wall-clock time since it was saved here)."""
    try:
        with open(cache_path(settings.current())) as handle:
            cached = json.load(handle)
        answer, saved_at = cached["answer"], float(cached["saved_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not isinstance(answer, dict) or not isinstance(answer.get("services"), list):
        return False
    install_table(answer, time.monotonic() - max(0.0, time.time() - saved_at))
    return True


def _start_poller(owner: bool) -> None:
    global _poller
    if current_table is None or not owner:  # the owner's last answer beats an inherited one
        try:
            load_cache()
        except Exception:
            log.exception_once("routing-cache-read", "cached routing table ignored")
    if not owner:
        try:
            from . import report

            report.start_writer(snapshot)
        except Exception:
            log.exception_once("routing-report-start", "workers' routing counts are not reported")
    try:
        from ..central import transport

        current = settings.current()
        found = transport.from_settings(current)
        if found is None:
            return  # no config service: nothing is routed, every call takes the ordinary path
        poller = Poller(found, current.pod_namespace or "default")
        threading.Thread(target=poller.run, name="pilotfish-routing", daemon=True).start()
        _poller = poller
    except Exception:
        log.exception_once("routing-start", "routing is off in this process")


def start() -> None:
    """Owner, at wake-up: start the long-poll and show the routing section in /status."""
    _ensure_started()
    try:
        import importlib

        status_server: Any = importlib.import_module(PACKAGE + ".status_server")
        status_server.add_status_section("routing", status)
        status_server.add_metrics(metrics)
    except Exception:
        log.exception_once("routing-status", "routing is not shown in /status")


def _after_fork_in_child() -> None:
    global started, _poll_started, _start_lock, _poller, _first_answer
    started, _poll_started, _start_lock, _poller = (
        False,
        False,
        threading.Lock(),
        None,
    )  # no poll thread here
    _first_answer = threading.Event()
    for service in current_table.services if current_table is not None else ():
        service.reset_counts()  # this process counts its own requests (the parent reports its)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------ seeing it


def snapshot() -> Dict[str, Any]:
    """This process's routing view: each Service followed, its instances and the requests sent."""
    built = current_table
    now = time.monotonic()
    services: Dict[str, Any] = {}
    for service in built.services if built is not None else ():
        lanes: Dict[str, int] = {}
        fallbacks = 0
        for (lane, _tag, outcome), count in service.stats.items():
            if outcome in ("lane", "baseline", "fallback", "anywhere", "retried"):
                lanes[lane or "baseline"] = lanes.get(lane or "baseline", 0) + count
            if outcome == "fallback":
                fallbacks += count
        services[service.name] = {
            "routed": service.enabled,
            "ports": sorted(service.ports),
            "cluster_ips": list(service.cluster_ips),
            "instances": [
                {
                    "pod": i.pod,
                    "ip": i.ip,
                    "ports": {str(k): v for k, v in i.ports.items()},
                    "tag": i.tag,
                    "state": i.state,
                    "ready": i.ready,
                    "weight": round(i.weight(now), 4),
                    "evicted": i.evicted_until > now,
                    "ejected": i.ejected_until > now,
                    "sent": i.sent,
                    "ejections": i.ejections,
                }
                for i in service.instances
            ],
            "requests_by_lane": lanes,
            "fallbacks": fallbacks,
            "outcomes": [
                {"lane": lane, "instance_tag": tag, "outcome": outcome, "requests": count}
                for (lane, tag, outcome), count in sorted(service.stats.items())
            ],
        }
    poller = _poller
    return {
        "enabled": _enabled,
        "lane_mode": "strict" if strict_lanes else "permissive",
        "namespace": built.namespace if built is not None else settings.current().pod_namespace or "default",
        "version": built.version if built is not None else "",
        "registry": {
            "following": poller is not None,
            "failures": poller.failures if poller is not None else 0,
            "last_error": poller.last_error if poller is not None else "",
            "last_ok": poller.last_ok if poller is not None else None,
        },
        "services": services,
    }


def status() -> Dict[str, Any]:
    """The ``routing`` section of /status: this process plus the workers' reports."""
    view = snapshot()
    try:
        from . import report

        report.merge_workers(view)
    except Exception:
        log.exception_once("routing-merge", "workers' routing counts are not shown")
    return view


def metrics() -> List[str]:
    """``pilotfish_routed_requests_total{service, lane, instance_tag, outcome}``."""
    view = status()
    lines = [
        "# HELP pilotfish_routed_requests_total Outbound requests routed by the agent, by lane and outcome.",
        "# TYPE pilotfish_routed_requests_total counter",
    ]
    totals: Dict[Tuple[str, str, str, str], int] = {}
    for name, service in view["services"].items():
        for row in service["outcomes"]:
            key = (name, row["lane"], row["instance_tag"], row["outcome"])
            totals[key] = totals.get(key, 0) + row["requests"]
    for (name, lane, tag, outcome), count in sorted(totals.items()):
        lines.append(
            'pilotfish_routed_requests_total{service="%s",lane="%s",instance_tag="%s",outcome="%s"} %d'
            % (name, lane, tag, outcome, count)
        )
    return lines
