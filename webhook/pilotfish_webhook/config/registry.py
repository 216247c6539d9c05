"""Instance registry: who serves a Service, since when, in which lane, in which state.

Two implementations behind one shape (``register`` / ``deregister`` / ``instances``):

- :class:`MemoryRegistry` (embedded mode, one server process): registrations
  are leases; an agent that stops renewing (crashed, partitioned) drops out
  after ``lease_seconds``.
- :class:`KubeRegistry` (in cluster): Kubernetes is the database. Membership
  comes from EndpointSlices + Pods (list+watch), and the state an agent
  reports is written onto its own Pod as the ``pilotfish.io/registration``
  annotation, so every replica of this server serves the same view and a
  restart loses nothing. The pod's lifetime is the lease.

Both publish a version per (namespace, service): a hash of the instance list,
so a long-poll wakes only when what a consumer would route to has changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from pilotfish_webhook.config.store import Changes

log = logging.getLogger("pilotfish_webhook.config")

ANNOTATION = "pilotfish.io/registration"
TAG_LABELS = ("pilotfish.io/tag", "alicloud.service.tag")
APP_LABELS = ("pilotfish.io/app", "app.kubernetes.io/name", "app")
STATES = ("registered", "offline")


class RegistrationError(ValueError):
    """A registration request that cannot be honoured; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Caller:
    """Who is calling: from a TokenReview in cluster, or unauthenticated (embedded)."""

    namespace: Optional[str] = None
    pod: Optional[str] = None
    username: str = ""

    @property
    def authenticated(self) -> bool:
        return self.namespace is not None


def listing_version(instances: List[Dict[str, Any]]) -> str:
    canonical = json.dumps(instances, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def _text(body: Dict[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise RegistrationError("%s: expected a string (got %r)" % (key, value))
    return str(value)


def _port(body: Dict[str, Any]) -> int:
    value = body.get("port", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise RegistrationError("port: expected a whole number 0-65535 (got %r)" % (value,))
    return value


def _state(body: Dict[str, Any]) -> str:
    state = _text(body, "state", "registered")
    if state not in STATES:
        raise RegistrationError("state: must be one of %s (got %r)" % ("|".join(STATES), state))
    return state


# ------------------------------------------------------------------ embedded


@dataclass
class _Lease:
    namespace: str
    service: str
    pod: str
    ip: str
    port: int
    app: str
    tag: str
    registered_at: float
    state: str
    expires: float

    def public(self) -> Dict[str, Any]:
        return {
            "pod": self.pod,
            "ip": self.ip,
            "port": self.port,
            "app": self.app,
            "tag": self.tag,
            "registered_at": self.registered_at,
            "state": self.state,
        }


class MemoryRegistry:
    mode = "memory"

    def __init__(self, lease_seconds: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self.changes = Changes()
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: Dict[Tuple[str, str], _Lease] = {}

    def register(self, caller: Caller, body: Dict[str, Any]) -> Dict[str, Any]:
        namespace = _text(body, "namespace", "default") or "default"
        pod = _text(body, "pod")
        if not pod:
            raise RegistrationError("pod: required")
        app = _text(body, "app")
        service = _text(body, "service") or app
        if not service:
            raise RegistrationError("service: required (or app)")
        state, port = _state(body), _port(body)
        now = self._clock()
        with self._lock:
            old = self._leases.get((namespace, pod))
            registered_at = old.registered_at if old is not None else time.time()
            lease = _Lease(
                namespace,
                service,
                pod,
                _text(body, "ip"),
                port,
                app,
                _text(body, "tag"),
                registered_at,
                state,
                now + self.lease_seconds,
            )
            self._leases[(namespace, pod)] = lease
            changed = old is None or old.public() != lease.public() or old.service != service
        if changed:
            self.changes.notify()
        return {"registered_at": registered_at, "state": state, "lease_seconds": self.lease_seconds}

    def deregister(self, caller: Caller, body: Dict[str, Any]) -> Dict[str, Any]:
        namespace = _text(body, "namespace", "default") or "default"
        pod = _text(body, "pod")
        with self._lock:
            removed = self._leases.pop((namespace, pod), None)
        if removed is not None:
            self.changes.notify()
        return {"deregistered": removed is not None}

    def expire(self) -> int:
        """Drop leases not renewed in time; returns how many went."""
        now = self._clock()
        with self._lock:
            dead = [key for key, lease in self._leases.items() if lease.expires <= now]
            for key in dead:
                lease = self._leases.pop(key)
                log.info("lease of %s/%s expired (no renewal)", lease.namespace, lease.pod)
        if dead:
            self.changes.notify()
        return len(dead)

    def instances(self, namespace: str, service: str) -> Tuple[str, List[Dict[str, Any]]]:
        with self._lock:
            found = [
                lease.public()
                for lease in self._leases.values()
                if lease.namespace == namespace and lease.service == service
            ]
        found.sort(key=lambda item: item["pod"])
        return listing_version(found), found

    def status(self) -> Dict[str, Any]:
        with self._lock:
            return {"mode": self.mode, "instances": len(self._leases), "lease_seconds": self.lease_seconds}


# ------------------------------------------------------------------ in cluster


def _meta(obj: Dict[str, Any]) -> Dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _first_label(labels: Dict[str, str], keys: Iterable[str]) -> str:
    for key in keys:
        if labels.get(key):
            return str(labels[key])
    return ""


def _same(old: Dict[str, Any], new: Dict[str, Any]) -> bool:
    """Equal apart from resourceVersion (which every write bumps)."""

    def strip(obj: Dict[str, Any]) -> Dict[str, Any]:
        return dict(obj, metadata={k: v for k, v in _meta(obj).items() if k != "resourceVersion"})

    return strip(old) == strip(new)


def registration_of(pod: Dict[str, Any]) -> Dict[str, Any]:
    """The agent-reported state stored on a Pod, or {} when absent or unreadable."""
    raw = (_meta(pod).get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class KubeRegistry:
    """Registry backed by Pods + EndpointSlices; feed it watch events with :meth:`apply`."""

    mode = "kubernetes"

    def __init__(self, api_client: Any = None) -> None:
        self.api_client = api_client
        self.changes = Changes()
        self._lock = threading.Lock()
        self._pods: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self._slices: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self._threads: List[threading.Thread] = []
        self._stop = threading.Event()

    # -- cache maintenance (watch events, recorded objects in tests)

    @staticmethod
    def slim(kind: str, obj: Dict[str, Any]) -> Dict[str, Any]:
        """Keep only what instance lists need: a cluster's Pods are many and mostly spec."""
        meta = _meta(obj)
        kept: Dict[str, Any] = {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": meta.get("labels") or {},
            "resourceVersion": meta.get("resourceVersion"),
        }
        if kind == "Pod":
            registration = (meta.get("annotations") or {}).get(ANNOTATION)
            kept["annotations"] = {ANNOTATION: registration} if registration else {}
            return {"metadata": kept}
        return {"metadata": kept, "endpoints": obj.get("endpoints") or [], "ports": obj.get("ports") or []}

    def apply(self, kind: str, event_type: str, obj: Dict[str, Any]) -> None:
        obj = self.slim(kind, obj)
        meta = _meta(obj)
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        table = self._pods if kind == "Pod" else self._slices
        with self._lock:
            old = table.get(key)
            if event_type == "DELETED":
                table.pop(key, None)
            else:
                table[key] = obj
        unchanged = old is not None and event_type != "DELETED" and _same(old, obj)
        if not unchanged:  # most Pod updates are status only: no instance list can change
            self.changes.notify()

    def replace(self, kind: str, objects: Iterable[Dict[str, Any]]) -> None:
        table: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for obj in objects:
            obj = self.slim(kind, obj)
            meta = _meta(obj)
            table[(str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = obj
        with self._lock:
            if kind == "Pod":
                self._pods = table
            else:
                self._slices = table
        self.changes.notify()

    # -- reads

    def instances(self, namespace: str, service: str) -> Tuple[str, List[Dict[str, Any]]]:
        found: List[Dict[str, Any]] = []
        with self._lock:
            slices = [
                s
                for (ns, _), s in self._slices.items()
                if ns == namespace
                and (_meta(s).get("labels") or {}).get("kubernetes.io/service-name") == service
            ]
            for endpoint_slice in slices:
                ports = endpoint_slice.get("ports") or [{}]
                port = int(ports[0].get("port") or 0)
                for endpoint in endpoint_slice.get("endpoints") or []:
                    ref = endpoint.get("targetRef") or {}
                    if ref.get("kind") != "Pod":
                        continue
                    pod = self._pods.get((namespace, str(ref.get("name"))), {})
                    labels = _meta(pod).get("labels") or {}
                    reg = registration_of(pod)
                    conditions = endpoint.get("conditions") or {}
                    found.append(
                        {
                            "pod": str(ref.get("name")),
                            "ip": (endpoint.get("addresses") or [""])[0],
                            "port": port,
                            "app": _first_label(labels, APP_LABELS),
                            "tag": _first_label(labels, TAG_LABELS),
                            "registered_at": reg.get("registeredAt"),
                            "state": reg.get("state") or "unregistered",
                            "ready": conditions.get("ready") is not False,
                            "terminating": bool(conditions.get("terminating")),
                        }
                    )
        found.sort(key=lambda item: (item["pod"], item["ip"]))
        return listing_version(found), found

    def status(self) -> Dict[str, Any]:
        with self._lock:
            return {"mode": self.mode, "pods": len(self._pods), "endpointslices": len(self._slices)}

    # -- writes: only the caller's own Pod

    def _check_caller(self, caller: Caller, body: Dict[str, Any]) -> Tuple[str, str]:
        if not caller.authenticated or not caller.pod:
            raise RegistrationError("a bound service-account token of a pod is required", 401)
        pod = _text(body, "pod") or caller.pod
        namespace = _text(body, "namespace") or caller.namespace or ""
        if pod != caller.pod or namespace != caller.namespace:
            raise RegistrationError(
                "pod %s/%s may only change its own registration (not %s/%s)"
                % (caller.namespace, caller.pod, namespace, pod),
                403,
            )
        return namespace, pod

    def register(self, caller: Caller, body: Dict[str, Any]) -> Dict[str, Any]:
        namespace, pod = self._check_caller(caller, body)
        state = _state(body)
        with self._lock:
            cached = self._pods.get((namespace, pod), {})
        old = registration_of(cached)
        if old.get("state") == state and old.get("registeredAt"):
            return {"registered_at": old["registeredAt"], "state": state, "lease_seconds": None}
        registered_at = old.get("registeredAt") or time.time()
        self._annotate(namespace, pod, {"state": state, "registeredAt": registered_at})
        return {"registered_at": registered_at, "state": state, "lease_seconds": None}

    def deregister(self, caller: Caller, body: Dict[str, Any]) -> Dict[str, Any]:
        namespace, pod = self._check_caller(caller, body)
        self._annotate(namespace, pod, None)
        return {"deregistered": True}

    def _annotate(self, namespace: str, pod: str, value: Optional[Dict[str, Any]]) -> None:
        from kubernetes import client

        raw = None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))
        patched = client.CoreV1Api(self.api_client).patch_namespaced_pod(
            pod, namespace, {"metadata": {"annotations": {ANNOTATION: raw}}}
        )
        # Apply our own write at once (the watch will confirm it) so the next renew is a no-op.
        obj = self.api_client.sanitize_for_serialization(patched) if patched is not None else None
        if isinstance(obj, dict) and obj.get("metadata"):
            self.apply("Pod", "MODIFIED", obj)

    # -- list + watch threads

    def start(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        discovery = client.DiscoveryV1Api(self.api_client)
        for kind, lister in (
            ("Pod", core.list_pod_for_all_namespaces),
            ("EndpointSlice", discovery.list_endpoint_slice_for_all_namespaces),
        ):
            thread = threading.Thread(
                target=self._reflect, args=(kind, lister), name="pilotfish-watch-" + kind, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _reflect(self, kind: str, lister: Callable[..., Any]) -> None:
        from kubernetes import watch

        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    listing = lister(_preload_content=False)
                    data = json.loads(listing.data)
                    self.replace(kind, data.get("items") or [])
                    resource_version = str((data.get("metadata") or {}).get("resourceVersion") or "")
                stream = watch.Watch()
                for event in stream.stream(lister, resource_version=resource_version, timeout_seconds=300):
                    obj = event.get("raw_object") or {}
                    if event.get("type") == "ERROR":
                        resource_version = ""
                        break
                    resource_version = str(_meta(obj).get("resourceVersion") or resource_version)
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        obj.setdefault("kind", kind)
                        self.apply(kind, str(event.get("type")), obj)
                    if self._stop.is_set():
                        break
            except Exception as problem:
                log.warning("watching %ss failed (%s); relisting in 1 s", kind, problem)
                resource_version = ""
                self._stop.wait(1.0)
