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

Both also answer :meth:`services` for consumer-side routing: every Service of a
namespace (name, ClusterIPs, ports with their target ports) with its instances
(IP, the pod port behind each Service port, tag, state, readiness, the time
warm-up started and the instance's own warm-up settings when its agent reported
them). :mod:`pilotfish_webhook.config.routing` adds what policies say.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Protocol, Tuple

from pilotfish_webhook import kube
from pilotfish_webhook.config.store import Changes

if TYPE_CHECKING:
    from pilotfish_webhook.kube import ApiClient

log = logging.getLogger("pilotfish_webhook.config")

ANNOTATION = "pilotfish.io/registration"
TAG_LABELS = ("pilotfish.io/tag", "alicloud.service.tag")
APP_LABELS = ("pilotfish.io/app", "app.kubernetes.io/name", "app")
STATES = ("registered", "offline")
WARMUP_KEYS = ("enabled", "seconds", "curve", "min_weight_percent")


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


class Registry(Protocol):
    """Where instances are and what they registered: :class:`MemoryRegistry` or :class:`KubeRegistry`."""

    @property
    def changes(self) -> Changes: ...

    @property
    def mode(self) -> str: ...

    def register(self, caller: Caller, body: Dict[str, Any]) -> Dict[str, Any]: ...

    def deregister(self, caller: Caller, body: Dict[str, Any]) -> Dict[str, Any]: ...

    def instances(self, namespace: str, service: str) -> Tuple[str, List[Dict[str, Any]]]:
        """(version, instances) of one Service."""
        ...

    def services(self, namespace: str) -> List[Dict[str, Any]]: ...

    def status(self) -> Dict[str, Any]: ...


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


def _warmup(body: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The warm-up settings an agent reports for itself (its env may override policies), or None."""
    value = body.get("warmup")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RegistrationError("warmup: expected an object (got %r)" % (value,))
    found: Dict[str, Any] = {}
    for key in WARMUP_KEYS:
        item = value.get(key)
        if item is None:
            continue
        if key == "enabled":
            if not isinstance(item, bool):
                raise RegistrationError("warmup.enabled: expected true or false (got %r)" % (item,))
        elif isinstance(item, bool) or not isinstance(item, (int, float)) or item < 0:
            raise RegistrationError("warmup.%s: expected a number >= 0 (got %r)" % (key, item))
        found[key] = item
    return found or None


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
    warmup: Optional[Dict[str, Any]] = None

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
        self._declared: Dict[Tuple[str, str], Dict[str, Any]] = {}

    def declare_services(self, objects: Iterable[Dict[str, Any]]) -> None:
        """Services declared by hand (``kind: Service`` documents of the policies file).

        Embedded mode has no Service objects; a declared one gives callers a
        ClusterIP and a port to route (``port`` 80 -> the instances' own ports).
        Without a declaration, every Service named in a registration is still
        routed, on the ports its instances registered.
        """
        declared = {}
        for obj in objects:
            service = service_of(obj)
            if service["name"]:
                declared[(service["namespace"] or "default", service["name"])] = service
        with self._lock:
            changed = declared != self._declared
            self._declared = declared
        if changed:
            self.changes.notify()

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
                _warmup(body),
            )
            self._leases[(namespace, pod)] = lease
            changed = (
                old is None
                or old.public() != lease.public()
                or old.service != service
                or old.warmup != lease.warmup
            )
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

    def services(self, namespace: str) -> List[Dict[str, Any]]:
        """Every Service of ``namespace`` with its instances, for consumer-side routing.

        An instance listens on one port (the one it registered), so each port of
        its Service leads to that port.
        """
        with self._lock:
            leases = [lease for lease in self._leases.values() if lease.namespace == namespace]
            declared = {name: svc for (ns, name), svc in self._declared.items() if ns == namespace}
        by_service: Dict[str, List[_Lease]] = {}
        for lease in leases:
            by_service.setdefault(lease.service, []).append(lease)
        found: List[Dict[str, Any]] = []
        for name in sorted(set(by_service) | set(declared)):
            members = sorted(by_service.get(name, []), key=lambda lease: lease.pod)
            service = declared.get(name)
            if service is not None:
                ports = [dict(port) for port in service["ports"]]
                cluster_ips = list(service["cluster_ips"])
            else:
                numbers = sorted({lease.port for lease in members if lease.port})
                ports = [{"name": "", "port": n, "target_port": n, "protocol": "TCP"} for n in numbers]
                cluster_ips = []
            instances = []
            for lease in members:
                target = {}
                for port in ports:
                    fallback = port["target_port"] if isinstance(port["target_port"], int) else port["port"]
                    target[str(port["port"])] = lease.port or fallback
                instances.append(
                    {
                        "pod": lease.pod,
                        "ip": lease.ip,
                        "ports": target,
                        "app": lease.app,
                        "tag": lease.tag,
                        "state": lease.state,
                        "ready": lease.state == "registered",
                        "terminating": False,
                        "registered_at": lease.registered_at,
                        "ready_at": lease.registered_at,
                        "warmup": lease.warmup,
                    }
                )
            app = next((lease.app for lease in members if lease.app), name)
            found.append(
                {"name": name, "app": app, "cluster_ips": cluster_ips, "ports": ports, "instances": instances}
            )
        return found

    def status(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "mode": self.mode,
                "instances": len(self._leases),
                "lease_seconds": self.lease_seconds,
                "declared_services": len(self._declared),
            }


# ------------------------------------------------------------------ in cluster


def _meta(obj: Dict[str, Any]) -> Dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _first_label(labels: Dict[str, str], keys: Iterable[str]) -> str:
    for key in keys:
        if labels.get(key):
            return str(labels[key])
    return ""


def service_of(obj: Dict[str, Any]) -> Dict[str, Any]:
    """A v1 Service reduced to what routing needs: name, ClusterIPs, ports with target ports."""
    meta = _meta(obj)
    spec: Dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
    ports = []
    for port in spec.get("ports") or []:
        if not isinstance(port, dict) or not isinstance(port.get("port"), int):
            continue
        target = port.get("targetPort", port["port"])
        ports.append(
            {
                "name": str(port.get("name") or ""),
                "port": port["port"],
                "target_port": target if isinstance(target, (int, str)) else port["port"],
                "protocol": str(port.get("protocol") or "TCP"),
            }
        )
    return {
        "name": str(meta.get("name") or ""),
        "namespace": str(meta.get("namespace") or ""),
        "cluster_ips": [str(ip) for ip in ips],
        "ports": ports,
    }


def parse_time(value: Any) -> Optional[float]:
    """An RFC 3339 timestamp of the API (``2026-11-22T03:10:00Z``) as epoch seconds, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        import datetime

        text = value[:-1] + "+00:00" if value.endswith("Z") else value
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def ready_since(pod: Dict[str, Any]) -> Optional[float]:
    """When the Pod last became Ready (its Ready condition's lastTransitionTime), or None."""
    status: Dict[str, Any] = pod["status"] if isinstance(pod.get("status"), dict) else {}
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            if condition.get("status") != "True":
                return None
            return parse_time(condition.get("lastTransitionTime"))
    return None


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

    def __init__(self, api_client: Optional[ApiClient] = None) -> None:
        self.api_client = api_client
        self.changes = Changes()
        self._lock = threading.Lock()
        self._pods: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self._slices: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self._services: Dict[Tuple[str, str], Dict[str, Any]] = {}
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
            status: Dict[str, Any] = obj["status"] if isinstance(obj.get("status"), dict) else {}
            ready = [
                {k: c.get(k) for k in ("type", "status", "lastTransitionTime")}
                for c in status.get("conditions") or []
                if isinstance(c, dict) and c.get("type") == "Ready"
            ]
            # Only the Ready condition: when it flips, warm-up of a pod without the agent starts.
            return {"metadata": kept, "status": {"conditions": ready}} if ready else {"metadata": kept}
        if kind == "Service":
            return {"metadata": kept, "spec": obj.get("spec") or {}}
        return {"metadata": kept, "endpoints": obj.get("endpoints") or [], "ports": obj.get("ports") or []}

    def apply(self, kind: str, event_type: str, obj: Dict[str, Any]) -> None:
        obj = self.slim(kind, obj)
        meta = _meta(obj)
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        table = self._table(kind)
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
            elif kind == "Service":
                self._services = table
            else:
                self._slices = table
        self.changes.notify()

    def _table(self, kind: str) -> Dict[Tuple[str, str], Dict[str, Any]]:
        if kind == "Pod":
            return self._pods
        return self._services if kind == "Service" else self._slices

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

    def services(self, namespace: str) -> List[Dict[str, Any]]:
        """Every Service of ``namespace`` with its endpoints joined with their Pods, for routing.

        Pods without the agent are instances too: their tag is their label, and
        their warm-up starts when they became Ready. A Service port's target port
        on an instance is the EndpointSlice port of the same name (that is how
        Kubernetes resolves named and numbered ``targetPort`` alike).
        """
        found: List[Dict[str, Any]] = []
        with self._lock:
            services = sorted(
                (service_of(obj) for (ns, _), obj in self._services.items() if ns == namespace),
                key=lambda svc: svc["name"],
            )
            for service in services:
                instances: List[Dict[str, Any]] = []
                seen = set()
                for (ns, _), endpoint_slice in sorted(self._slices.items()):
                    labels = _meta(endpoint_slice).get("labels") or {}
                    if ns != namespace or labels.get("kubernetes.io/service-name") != service["name"]:
                        continue
                    slice_ports = {
                        str(p.get("name") or ""): p.get("port")
                        for p in endpoint_slice.get("ports") or []
                        if isinstance(p, dict) and isinstance(p.get("port"), int)
                    }
                    targets = {
                        str(port["port"]): slice_ports[port["name"]]
                        for port in service["ports"]
                        if port["name"] in slice_ports
                    }
                    for endpoint in endpoint_slice.get("endpoints") or []:
                        ref = endpoint.get("targetRef") or {}
                        address = (endpoint.get("addresses") or [""])[0]
                        if ref.get("kind") != "Pod" or not address or (ref.get("name"), address) in seen:
                            continue
                        seen.add((ref.get("name"), address))
                        instances.append(
                            self._instance(namespace, str(ref.get("name")), address, targets, endpoint)
                        )
                instances.sort(key=lambda item: (item["pod"], item["ip"]))
                app = next((i["app"] for i in instances if i["app"]), service["name"])
                found.append(
                    {
                        "name": service["name"],
                        "app": app,
                        "cluster_ips": service["cluster_ips"],
                        "ports": service["ports"],
                        "instances": instances,
                    }
                )
        return found

    def _instance(
        self, namespace: str, name: str, address: str, targets: Dict[str, Any], endpoint: Dict[str, Any]
    ) -> Dict[str, Any]:
        pod = self._pods.get((namespace, name), {})
        labels = _meta(pod).get("labels") or {}
        reg = registration_of(pod)
        conditions = endpoint.get("conditions") or {}
        registered_at = reg.get("registeredAt") if isinstance(reg.get("registeredAt"), (int, float)) else None
        warmup = reg.get("warmup") if isinstance(reg.get("warmup"), dict) else None
        return {
            "pod": name,
            "ip": address,
            "ports": dict(targets),
            "app": _first_label(labels, APP_LABELS),
            "tag": _first_label(labels, TAG_LABELS),
            "state": reg.get("state") or "unregistered",
            "ready": conditions.get("ready") is not False,
            "terminating": bool(conditions.get("terminating")),
            "registered_at": registered_at,
            # The agent's warm-up clock starts at registration; a pod without it at Ready.
            "ready_at": registered_at if registered_at is not None else ready_since(pod),
            "warmup": warmup,
        }

    def status(self) -> Dict[str, Any]:
        with self._lock:
            return {
                "mode": self.mode,
                "pods": len(self._pods),
                "endpointslices": len(self._slices),
                "services": len(self._services),
            }

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
        state, warmup = _state(body), _warmup(body)
        with self._lock:
            cached = self._pods.get((namespace, pod), {})
        old = registration_of(cached)
        if old.get("state") == state and old.get("registeredAt") and old.get("warmup") == warmup:
            return {"registered_at": old["registeredAt"], "state": state, "lease_seconds": None}
        registered_at = old.get("registeredAt") or time.time()
        value: Dict[str, Any] = {"state": state, "registeredAt": registered_at}
        if warmup is not None:
            value["warmup"] = warmup
        self._annotate(namespace, pod, value)
        return {"registered_at": registered_at, "state": state, "lease_seconds": None}

    def deregister(self, caller: Caller, body: Dict[str, Any]) -> Dict[str, Any]:
        namespace, pod = self._check_caller(caller, body)
        self._annotate(namespace, pod, None)
        return {"deregistered": True}

    def _annotate(self, namespace: str, pod: str, value: Optional[Dict[str, Any]]) -> None:
        raw = None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))
        obj = kube.patch_pod(
            self.api_client, namespace, pod, {"metadata": {"annotations": {ANNOTATION: raw}}}
        )
        # Apply our own write at once (the watch will confirm it) so the next renew is a no-op.
        if obj is not None and obj.get("metadata"):
            self.apply("Pod", "MODIFIED", obj)

    # -- list + watch threads

    def start(self) -> None:
        for kind in ("Pod", "EndpointSlice", "Service"):
            lister = kube.all_namespaces_lister(self.api_client, kind)
            thread = threading.Thread(
                target=self._reflect, args=(kind, lister), name="pilotfish-watch-" + kind, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _reflect(self, kind: str, lister: kube.Lister) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    data = kube.list_raw(lister)
                    self.replace(kind, data.get("items") or [])
                    resource_version = str((data.get("metadata") or {}).get("resourceVersion") or "")
                stream = kube.Watch()
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
