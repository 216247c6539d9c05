"""The local cluster's object store: what etcd plus the API server's registry do for a real cluster.

Everything in the cluster (API server, controllers, kubelet, network) runs in one process and
shares one :class:`Store`. Objects are plain JSON-like dicts, deep-copied in and out, so nobody
can change a stored object behind the store's back. One lock guards everything; every change
gets the next ``resourceVersion`` (one counter for all resources, as etcd's revision) and is
appended to a bounded change log, from which watches resume (a version older than the log is
answered with 410 Gone, as a compacted etcd does).

In-process subscribers (controllers, kubelet) get their callbacks on one dispatch thread, in
the order the changes happened; a callback must be quick (queue work, don't do it), since the
next subscriber waits.
"""

from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import queue
import threading
import time
import uuid
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple

from . import defaults

log = logging.getLogger("cluster.store")

Obj = Dict[str, Any]
Callback = Callable[[str, Obj], None]
# Admission: (resource, object, dry_run) -> (possibly mutated object, warnings). Raises
# ApiError to reject.
Admission = Callable[[str, Obj, bool], Tuple[Obj, List[str]]]

CLUSTER_SCOPED = {
    "namespaces",
    "nodes",
    "customresourcedefinitions",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
    "clusterroles",
    "clusterrolebindings",
    "tokenreviews",
    "priorityclasses",
    "storageclasses",
    "persistentvolumes",
}
SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
LOG_SIZE = 20000
# Resource -> API group, for messages that name "deployments.apps" as the real server does.
GROUPS: Dict[str, str] = {}


class ApiError(Exception):
    """An error the API server returns as a ``Status`` object (code, reason, message, details)."""

    def __init__(self, code: int, reason: str, message: str, details: Optional[Obj] = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(resource: str, name: str) -> ApiError:
    group = GROUPS.get(resource, "")
    qualified = "%s.%s" % (resource, group) if group else resource
    return ApiError(
        404,
        "NotFound",
        '%s "%s" not found' % (qualified, name),
        {"name": name, "group": group, "kind": resource},
    )


def invalid(kind: str, name: str, field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        '%s "%s" is invalid: %s: %s' % (kind, name, field, message),
        {
            "name": name,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
        },
    )


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: Obj) -> Tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class Gone(ApiError):
    def __init__(self, version: int) -> None:
        super().__init__(410, "Expired", "too old resource version: %d" % version)


class Store:
    """Thread-safe object store with resourceVersions, a change log for watches, and subscribers."""

    def __init__(
        self,
        token_key: Optional[bytes] = None,
        service_cidr: str = str(SERVICE_CIDR),
        log_size: int = LOG_SIZE,
    ) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: Dict[str, Dict[Tuple[str, str], Obj]] = collections.defaultdict(dict)
        self._version = 0
        # The change log, as etcd's: bounded in total (``_versions``), compacted from the oldest;
        # kept per resource (newest last) so a watch reads only its own resource's changes.
        self._log_size = log_size
        self._versions: Deque[int] = collections.deque(maxlen=log_size)
        self._floor = 0
        self._logs: Dict[str, Deque[Tuple[int, str, Obj]]] = {}
        self._floors: Dict[str, int] = collections.defaultdict(int)
        self._subscribers: Dict[str, List[Callback]] = collections.defaultdict(list)
        self._dispatch: queue.Queue[Optional[Tuple[List[Callback], str, Obj]]] = queue.Queue()
        self._listeners: List[Callable[[], None]] = []
        self._token_key = token_key or os.urandom(32)
        self.service_net = ipaddress.ip_network(service_cidr)
        self.kubernetes_ip, self.dns_ip = str(self.service_net[1]), str(self.service_net[10])
        self._cluster_ips: Set[str] = {self.kubernetes_ip, self.dns_ip}
        self.admission: Optional[Admission] = None
        self._thread = threading.Thread(target=self._run_dispatch, name="store-dispatch", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ reads

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._version

    def get(self, resource: str, namespace: Optional[str], name: str) -> Optional[Obj]:
        with self._lock:
            found = self._objects[resource].get((namespace or "", name))
            return copy.deepcopy(found) if found is not None else None

    def list(self, resource: str, namespace: Optional[str] = None) -> List[Obj]:
        with self._lock:
            return [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._objects[resource].items())
                if namespace is None or ns == namespace
            ]

    def list_with_version(self, resource: str, namespace: Optional[str] = None) -> Tuple[List[Obj], int]:
        with self._lock:
            return self.list(resource, namespace), self._version

    def resources(self) -> List[str]:
        with self._lock:
            return [name for name, objects in self._objects.items() if objects]

    # ------------------------------------------------------------------ writes

    def create(self, resource: str, obj: Obj) -> Obj:
        """Store a new object (admission first for pods); 409 AlreadyExists if the name is taken."""
        return self.create_admitted(resource, obj)[0]

    def create_admitted(self, resource: str, obj: Obj, dry_run: bool = False) -> Tuple[Obj, List[str]]:
        """:meth:`create` that also returns the admission warnings and can stop before storing."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if resource in CLUSTER_SCOPED:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if not meta.get("name"):
            raise invalid(
                obj.get("kind", resource),
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        namespace = meta.get("namespace")
        if resource not in CLUSTER_SCOPED:
            if not namespace:
                raise invalid(obj.get("kind", resource), meta["name"], "metadata.namespace", "Required value")
            ns = self.get("namespaces", None, namespace)
            if ns is None and resource != "events":
                raise ApiError(
                    404,
                    "NotFound",
                    'namespaces "%s" not found' % namespace,
                    {"name": namespace, "kind": "namespaces"},
                )
            if ns is not None and (ns.get("metadata") or {}).get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    '%s "%s" is forbidden: unable to create new content in namespace %s '
                    "because it is being terminated" % (resource, meta["name"], namespace),
                )
        defaults.apply(resource, obj)
        warnings: List[str] = []
        if self.admission is not None:
            obj, warnings = self.admission(resource, obj, dry_run)
            meta = obj.setdefault("metadata", {})
        with self._lock:
            key = key_of(obj)
            if key in self._objects[resource]:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    '%s "%s" already exists' % (resource, key[1]),
                    {"name": key[1], "kind": resource},
                )
            if resource == "services":
                self._allocate_cluster_ip(obj)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta.pop("deletionTimestamp", None)
            if "generation" in meta or resource in defaults.GENERATED:
                meta["generation"] = 1
            if dry_run:
                meta["resourceVersion"] = str(self._version)
                return copy.deepcopy(obj), warnings
            self._commit(resource, "ADDED", obj)
            return copy.deepcopy(obj), warnings

    def update(self, resource: str, obj: Obj, dry_run: bool = False, status: bool = False) -> Obj:
        """Replace an object; 409 Conflict if ``metadata.resourceVersion`` is set and stale.

        ``status=True`` replaces only ``.status`` (the /status subresource); otherwise
        ``.status`` is kept (except for kinds without a status subresource) and
        ``metadata.generation`` moves when anything outside metadata and status changed.
        """
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if resource in CLUSTER_SCOPED:
            meta.pop("namespace", None)
        with self._lock:
            key = key_of(obj)
            current = self._objects[resource].get(key)
            if current is None:
                raise not_found(resource, key[1])
            cur_meta = current["metadata"]
            wanted = meta.get("resourceVersion")
            if wanted and wanted != cur_meta.get("resourceVersion"):
                raise ApiError(
                    409,
                    "Conflict",
                    'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    "please apply your changes to the latest version and try again" % (resource, key[1]),
                    {"name": key[1], "kind": resource},
                )
            if status:
                new = copy.deepcopy(current)
                new["status"] = obj.get("status") or {}
            else:
                new = obj
                for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                    if field in cur_meta:
                        meta[field] = cur_meta[field]
                    else:
                        meta.pop(field, None)
                if resource in defaults.HAS_STATUS:
                    if "status" in current:
                        new["status"] = current["status"]
                    else:
                        new.pop("status", None)
                defaults.apply(resource, new)
                if resource == "services":
                    spec = new.setdefault("spec", {})
                    old_ip = (current.get("spec") or {}).get("clusterIP")
                    if old_ip and spec.get("clusterIP") not in (None, "", old_ip):
                        raise invalid(
                            "Service",
                            key[1],
                            "spec.clusterIP",
                            "Invalid value: %r: field is immutable" % spec.get("clusterIP"),
                        )
                    if old_ip:
                        spec["clusterIP"] = old_ip
                        spec["clusterIPs"] = [old_ip]
                if "generation" in cur_meta:
                    changed = _without_meta_status(current) != _without_meta_status(new)
                    meta["generation"] = cur_meta["generation"] + (1 if changed else 0)
            if _same(current, new):
                return copy.deepcopy(current)
            if dry_run:
                return copy.deepcopy(new)
            if (
                new["metadata"].get("deletionTimestamp")
                and not new["metadata"].get("finalizers")
                and resource != "pods"
            ):
                self._remove(resource, key)
                return copy.deepcopy(new)
            self._commit(resource, "MODIFIED", new)
            return copy.deepcopy(new)

    def update_status(self, resource: str, namespace: Optional[str], name: str, status: Obj) -> Optional[Obj]:
        """Replace ``.status`` (kubelet, controllers); None when the object is gone."""
        with self._lock:
            current = self._objects[resource].get((namespace or "", name))
            if current is None:
                return None
            if current.get("status") == status:
                return copy.deepcopy(current)
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(status)
            self._commit(resource, "MODIFIED", new)
            return copy.deepcopy(new)

    def mutate(
        self, resource: str, namespace: Optional[str], name: str, fn: Callable[[Obj], None]
    ) -> Optional[Obj]:
        """Read-modify-write under the lock (controllers); ``fn`` edits the copy in place."""
        with self._lock:
            current = self._objects[resource].get((namespace or "", name))
            if current is None:
                return None
            new = copy.deepcopy(current)
            fn(new)
            new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.update(resource, new, status=False) if new != current else copy.deepcopy(current)

    def delete(
        self,
        resource: str,
        namespace: Optional[str],
        name: str,
        grace_seconds: Optional[int] = None,
        dry_run: bool = False,
    ) -> Optional[Obj]:
        """Delete; pods and namespaces (and objects with finalizers) only get ``deletionTimestamp``.

        Pods are really removed by :meth:`finalize_delete` once the kubelet stopped them (or at
        once when grace is 0 and the pod never ran); namespaces by the namespace controller.
        Returns the object as it is after the call (404 if it did not exist).
        """
        with self._lock:
            key = (namespace or "", name)
            current = self._objects[resource].get(key)
            if current is None:
                raise not_found(resource, name)
            new = copy.deepcopy(current)
            meta = new["metadata"]
            if dry_run:
                return new
            graceful = resource in ("pods", "namespaces") or bool(meta.get("finalizers"))
            if not graceful:
                self._remove(resource, key)
                return new
            if meta.get("deletionTimestamp"):
                if (
                    resource == "pods"
                    and grace_seconds is not None
                    and grace_seconds < meta.get("deletionGracePeriodSeconds", 30)
                ):
                    meta["deletionGracePeriodSeconds"] = grace_seconds
                    self._commit(resource, "MODIFIED", new)
                return copy.deepcopy(new)
            meta["deletionTimestamp"] = now_rfc3339()
            if resource == "pods":
                spec_grace = (new.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                grace = spec_grace if grace_seconds is None else grace_seconds
                meta["deletionGracePeriodSeconds"] = grace
                if grace == 0:  # --grace-period=0 --force: gone at once, the kubelet kills on DELETED
                    self._remove(resource, key)
                    return new
            if resource == "namespaces":
                new.setdefault("status", {})["phase"] = "Terminating"
            self._commit(resource, "MODIFIED", new)
            return copy.deepcopy(new)

    def finalize_delete(self, resource: str, namespace: Optional[str], name: str) -> None:
        """Really remove an object (the kubelet after a pod's containers exited)."""
        with self._lock:
            key = (namespace or "", name)
            if key in self._objects[resource]:
                self._remove(resource, key)

    # ------------------------------------------------------------------ watching

    def subscribe(self, resource: str, callback: Callback) -> Callable[[], None]:
        """``callback(type, obj)`` for every change of ``resource``, after ADDED for what exists."""
        with self._lock:
            self._subscribers[resource].append(callback)
            for obj in self._objects[resource].values():
                self._dispatch.put(([callback], "ADDED", copy.deepcopy(obj)))

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers[resource]:
                    self._subscribers[resource].remove(callback)

        return unsubscribe

    def add_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` after every change, under the lock (must not block): wakes async watches."""
        with self._lock:
            self._listeners.append(listener)

    def events_since(self, resource: str, version: int) -> List[Tuple[int, str, Obj]]:
        """Changes of ``resource`` after ``version``, oldest first; 410 Gone when compacted away."""
        with self._lock:
            if version < max(self._floor, self._floors[resource]):
                raise Gone(version)
            found = []
            for v, t, o in reversed(self._logs.get(resource) or ()):  # newest first: stop at ``version``
                if v <= version:
                    break
                found.append((v, t, copy.deepcopy(o)))
            found.reverse()
            return found

    def wait(self, version: int, timeout: float) -> int:
        """Block until the store's version passes ``version`` (or timeout); returns the version."""
        with self._changed:
            if self._version <= version:
                self._changed.wait(timeout)
            return self._version

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every queued subscriber callback ran (tests)."""
        done = threading.Event()
        self._dispatch.put(([lambda _t, _o: done.set()], "SYNC", {}))
        done.wait(timeout)

    def stop(self) -> None:
        self._dispatch.put(None)

    # ------------------------------------------------------------------ events, tokens

    def record_event(self, involved: Obj, reason: str, message: str, type: str = "Normal") -> None:
        """A core/v1 Event about ``involved`` (``kubectl describe`` lists them)."""
        meta = involved.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        stamp = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": "%s.%x" % (meta.get("name", "object"), time.time_ns()),
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "v1"),
                "kind": involved.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type,
            "source": {"component": "local-cluster"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "reportingComponent": "local-cluster",
        }
        try:
            self.create("events", event)
        except ApiError:
            log.debug("event not recorded: %s %s", reason, message)

    def issue_token(
        self, namespace: str, service_account: str, audience: Optional[str], expiration_seconds: int, pod: Obj
    ) -> str:
        """A signed JWT (HS256 with the store's key) that :meth:`review_token` accepts."""
        now = int(time.time())
        pod_meta = pod.get("metadata") or {}
        claims = {
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": "system:serviceaccount:%s:%s" % (namespace, service_account),
            "aud": [audience] if audience else ["https://kubernetes.default.svc.cluster.local"],
            "iat": now,
            "nbf": now,
            "exp": now + int(expiration_seconds),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": service_account},
                "pod": {"name": pod_meta.get("name", ""), "uid": pod_meta.get("uid", "")},
            },
        }
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._token_key, ("%s.%s" % (header, body)).encode(), hashlib.sha256).digest()
        return "%s.%s.%s" % (header, body, _b64url(signature))

    def review_token(self, token: str, audiences: Iterable[str] = ()) -> Obj:
        """The ``status`` of a TokenReview: authenticated + user, or an error."""
        try:
            header, body, signature = token.split(".")
            expected = hmac.new(self._token_key, ("%s.%s" % (header, body)).encode(), hashlib.sha256).digest()
            if not hmac.compare_digest(expected, _unb64url(signature)):
                return {"authenticated": False, "error": "invalid signature"}
            claims = json.loads(_unb64url(body))
        except (ValueError, TypeError):
            return {"authenticated": False, "error": "malformed token"}
        if claims.get("exp", 0) < time.time():
            return {"authenticated": False, "error": "token has expired"}
        wanted = list(audiences)
        token_audiences = list(claims.get("aud") or [])
        if wanted and not set(wanted) & set(token_audiences):
            return {
                "authenticated": False,
                "error": "token audiences %s do not match %s" % (token_audiences, wanted),
            }
        info = claims.get("kubernetes.io") or {}
        namespace = info.get("namespace", "")
        pod = info.get("pod") or {}
        with self._lock:
            found = self._objects["pods"].get((namespace, pod.get("name", "")))
            if pod.get("name") and (found is None or found["metadata"].get("uid") != pod.get("uid")):
                return {"authenticated": False, "error": "the pod this token was issued for no longer exists"}
        return {
            "authenticated": True,
            "user": {
                "username": claims.get("sub", ""),
                "uid": "",
                "groups": [
                    "system:serviceaccounts",
                    "system:serviceaccounts:%s" % namespace,
                    "system:authenticated",
                ],
                "extra": {
                    "authentication.kubernetes.io/pod-name": [pod.get("name", "")],
                    "authentication.kubernetes.io/pod-uid": [pod.get("uid", "")],
                },
            },
            "audiences": wanted or token_audiences,
        }

    # ------------------------------------------------------------------ internals

    def _allocate_cluster_ip(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        wanted = spec.get("clusterIP")
        if wanted == "None":
            spec["clusterIPs"] = ["None"]
            return
        if wanted:
            if wanted in self._cluster_ips and not (
                wanted == self.kubernetes_ip and key_of(obj) == ("default", "kubernetes")
            ):
                raise invalid(
                    "Service",
                    key_of(obj)[1],
                    "spec.clusterIP",
                    "Invalid value: %r: provided IP is already allocated" % wanted,
                )
            self._cluster_ips.add(wanted)
            spec["clusterIPs"] = [wanted]
            return
        for host in self.service_net.hosts():
            ip = str(host)
            if int(host) - int(self.service_net.network_address) < 11 or ip in self._cluster_ips:
                continue
            self._cluster_ips.add(ip)
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
            return
        raise ApiError(500, "InternalError", "no free ClusterIP")

    def _commit(self, resource: str, kind: str, obj: Obj) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        if kind == "DELETED":
            self._objects[resource].pop(key_of(obj), None)
        else:
            self._objects[resource][key_of(obj)] = obj
        log_ = self._logs.get(resource)
        if log_ is None:
            log_ = self._logs[resource] = collections.deque(maxlen=self._log_size)
        if len(log_) == log_.maxlen:
            self._floors[resource] = log_[0][0]
        if len(self._versions) == self._versions.maxlen:
            self._floor = self._versions[0]
        self._versions.append(self._version)
        while log_ and log_[0][0] < self._floor:
            log_.popleft()
        frozen = copy.deepcopy(obj)
        log_.append((self._version, kind, frozen))
        callbacks = list(self._subscribers.get(resource, ()))
        if callbacks:
            self._dispatch.put((callbacks, kind, copy.deepcopy(obj)))
        self._changed.notify_all()
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("store listener failed")

    def _remove(self, resource: str, key: Tuple[str, str]) -> None:
        obj = copy.deepcopy(self._objects[resource][key])
        if resource == "services":
            self._cluster_ips.discard((obj.get("spec") or {}).get("clusterIP", ""))
        self._commit(resource, "DELETED", obj)
        self._collect_dependents(obj["metadata"].get("uid"))

    def _collect_dependents(self, uid: Optional[str]) -> None:
        """Background cascading deletion: objects owned by ``uid`` go too (the garbage collector)."""
        if not uid:
            return
        for resource, objects in list(self._objects.items()):
            for key, obj in list(objects.items()):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in owners):
                    try:
                        self.delete(resource, key[0] or None, key[1])
                    except ApiError:
                        pass

    def _run_dispatch(self) -> None:
        while True:
            item = self._dispatch.get()
            if item is None:
                return
            callbacks, kind, obj = item
            for callback in callbacks:
                try:
                    callback(kind, obj)
                except Exception:
                    log.exception("store subscriber %r failed on %s", callback, kind)


def _without_meta_status(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _same(a: Obj, b: Obj) -> bool:
    strip = ("resourceVersion", "managedFields")
    am = {k: v for k, v in (a.get("metadata") or {}).items() if k not in strip}
    bm = {k: v for k, v in (b.get("metadata") or {}).items() if k not in strip}
    return am == bm and {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"
    }


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
