"""The HTTPS API server: routing, verbs, watch streams, errors as ``Status`` objects.

A threaded stdlib HTTP/1.1 server (one thread per connection) over TLS: watches are plain
blocking loops over the store's change log, which keeps the code short and the store
synchronous. kubectl and the ``kubernetes`` client both speak HTTP/1.1 when the server
offers no HTTP/2.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from ..store import CLUSTER_SCOPED, ApiError, Gone, Store, not_found
from . import openapi, patch, protobuf, tables, validate
from .resources import Registry, Resource
from .selectors import parse_field_selector, parse_label_selector

log = logging.getLogger("cluster.apiserver")

Obj = Dict[str, Any]
LogLocator = Callable[[str, str, str, bool], Optional[Path]]


class ApiServer:
    """Serves the store over HTTPS on ``host:port`` (port 0 picks one; see :attr:`port`)."""

    def __init__(self, store: Store, host: str, port: int, cert: Path, key: Path, token: str) -> None:
        self.store = store
        self.token = token
        self.logs: Optional[LogLocator] = None
        self._registry: Optional[Registry] = None
        self._openapi: Optional[Dict[str, bytes]] = None
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.api = self
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        context.set_alpn_protocols(["http/1.1"])
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="apiserver", daemon=True)
        self.stopping = threading.Event()
        store.subscribe("customresourcedefinitions", self._crds_changed)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # ------------------------------------------------------------------ tables

    def registry(self) -> Registry:
        with self._lock:
            if self._registry is None:
                self._registry = Registry.from_store(self.store)
                for r in self._registry.resources:
                    if r.schema is not None and not r.namespaced:
                        CLUSTER_SCOPED.add(r.store_name)
            return self._registry

    def openapi_documents(self) -> Dict[str, bytes]:
        registry = self.registry()
        with self._lock:
            if self._openapi is None:
                self._openapi = openapi.all_documents(registry)
            return self._openapi

    def _crds_changed(self, kind: str, crd: Obj) -> None:
        with self._lock:
            self._registry = None
            self._openapi = None
        if kind != "DELETED":
            self._mark_established(crd)

    def _mark_established(self, crd: Obj) -> None:
        status = crd.get("status") or {}
        if any(c.get("type") == "Established" for c in status.get("conditions") or []):
            return
        names = (crd.get("spec") or {}).get("names") or {}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "acceptedNames": names,
            "storedVersions": [
                v.get("name") for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")
            ],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "lastTransitionTime": stamp,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "lastTransitionTime": stamp,
                },
            ],
        }
        self.store.update_status("customresourcedefinitions", None, crd["metadata"]["name"], status)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: ApiServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


_PREFIX = re.compile(r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))(?P<rest>/.*)?$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # every verb goes through one dispatcher
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing

    @property
    def api(self) -> ApiServer:
        return self.server.api

    def _read_body(self) -> bytes:
        """Read the whole body before anything can fail: an unread body would be parsed as the
        next request on this keep-alive connection."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> Any:
        raw = self._raw_body
        if not raw:
            return {}
        content_type = self.headers.get("Content-Type") or ""
        if "protobuf" in content_type:
            try:
                obj = protobuf.decode(raw)
            except protobuf.Undecodable as exc:
                raise ApiError(400, "BadRequest", "the protobuf body could not be decoded: %s" % exc)
            if obj is None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the local cluster reads protobuf only for Namespace, ConfigMap, Secret, ServiceAccount "
                    "and TokenRequest: write the object as YAML and kubectl apply -f it",
                )
            return obj
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", "the body of the request could not be decoded: %s" % exc)

    def _send(self, code: int, body: Any, warnings: Optional[List[str]] = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for warning in warnings or []:
            self.send_header("Warning", '299 - "%s"' % warning.replace('"', "'"))
        self.end_headers()
        self.wfile.write(data)

    _raw_body = b""

    def _dispatch(self, method: str) -> None:
        self._raw_body = self._read_body()
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._route(method, url.path.rstrip("/") or "/", query)
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        except Exception as exc:  # a bug here must not kill the connection thread silently
            log.exception("%s %s failed", method, self.path)
            self._send(500, ApiError(500, "InternalError", "internal error: %s" % exc).status())

    # ------------------------------------------------------------------ routing

    def _route(self, method: str, path: str, query: Dict[str, str]) -> None:
        api = self.api
        if path in ("/healthz", "/readyz", "/livez"):
            return self._send(200, b"ok")
        if path == "/version":
            return self._send(200, version_info())
        if path == "/openapi/v3":
            return self._send(200, openapi.index(api.registry(), api.openapi_documents()))
        if path.startswith("/openapi/v3/"):
            doc = api.openapi_documents().get(path[len("/openapi/v3/") :])
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._send(200, doc)
        if path == "/api":
            return self._send(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        if path == "/apis":
            return self._send(200, api_group_list(api.registry()))
        match = _PREFIX.match(path)
        if path.startswith("/apis/") and path.count("/") == 2:
            group = path.split("/")[2]
            for g in api_group_list(api.registry())["groups"]:
                if g["name"] == group:
                    return self._send(200, dict(g, kind="APIGroup", apiVersion="v1"))
        if not match:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        group = match.group("g") or ""
        version = match.group("cv") or match.group("v")
        rest = [p for p in (match.group("rest") or "").split("/") if p]
        registry = api.registry()
        if not rest:
            if not registry.in_group_version(group, version):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._send(200, resource_list(registry, group, version))
        namespace: Optional[str] = None
        if rest[0] == "namespaces" and len(rest) >= 3 and registry.find(group, version, rest[2]) is not None:
            namespace, rest = rest[1], rest[2:]
        resource = registry.find(group, version, rest[0])
        if resource is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        Verbs(self, resource, namespace, name, sub, query).run(method)


class Verbs:
    """One request against one resource: the verb handlers."""

    def __init__(
        self,
        handler: _Handler,
        resource: Resource,
        namespace: Optional[str],
        name: Optional[str],
        sub: Optional[str],
        query: Dict[str, str],
    ) -> None:
        self.h, self.r, self.ns, self.name, self.sub, self.q = handler, resource, namespace, name, sub, query
        self.store = handler.api.store
        self.dry_run = query.get("dryRun") == "All"
        self._table = tables.wants_table(handler.headers.get("Accept") or "")
        if not resource.namespaced:
            self.ns = None

    def run(self, method: str) -> None:
        if self.name is None:
            handlers = {"GET": self.list_or_watch, "POST": self.create, "DELETE": self.delete_collection}
        elif self.sub is None:
            handlers = {"GET": self.get, "PUT": self.replace, "PATCH": self.patch, "DELETE": self.delete}
        elif self.sub == "status":
            handlers = {"GET": self.get, "PUT": self.replace_status, "PATCH": self.patch_status}
        elif self.sub == "scale":
            handlers = {"GET": self.get_scale, "PUT": self.replace_scale, "PATCH": self.patch_scale}
        elif self.sub == "log" and self.r.plural == "pods":
            handlers = {"GET": self.pod_log}
        elif self.sub == "token" and self.r.plural == "serviceaccounts":
            handlers = {"POST": self.token_request}
        else:
            handlers = {}
        fn = handlers.get(method)
        if fn is None:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        fn()

    # ------------------------------------------------------------------ helpers

    def _need_namespace(self) -> None:
        if self.r.namespaced and not self.ns:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _current(self) -> Obj:
        assert self.name is not None
        found = self.store.get(self.r.store_name, self.ns, self.name)
        if found is None:
            raise not_found(self.r.store_name if self.r.schema is not None else self.r.plural, self.name)
        return found

    def _typed(self, obj: Obj) -> Obj:
        obj["apiVersion"] = self.r.group_version
        obj["kind"] = self.r.kind
        return obj

    def _check_body(self, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        kind = body.get("kind")
        if kind and kind != self.r.kind:
            raise ApiError(
                400, "BadRequest", "the kind %s does not match the resource %s" % (kind, self.r.plural)
            )
        meta = body.setdefault("metadata", {})
        if self.r.namespaced:
            if meta.get("namespace") and self.ns and meta["namespace"] != self.ns:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = self.ns or meta.get("namespace")
        return self._typed(body)

    # ------------------------------------------------------------------ verbs

    def list_or_watch(self) -> None:
        if self.q.get("watch") in ("true", "1"):
            return self.watch()
        label_ok = parse_label_selector(self.q.get("labelSelector"))
        field_ok = parse_field_selector(self.q.get("fieldSelector"))
        objects, version = self.store.list_with_version(self.r.store_name, self.ns)
        items = [
            self._typed(o)
            for o in objects
            if label_ok((o.get("metadata") or {}).get("labels") or {}) and field_ok(o)
        ]
        if self._table:
            return self.h._send(200, tables.table(self.r.plural, items, str(version)))
        self.h._send(
            200,
            {
                "kind": self.r.kind + "List",
                "apiVersion": self.r.group_version,
                "metadata": {"resourceVersion": str(version)},
                "items": items,
            },
        )

    def watch(self) -> None:
        label_ok = parse_label_selector(self.q.get("labelSelector"))
        field_ok = parse_field_selector(self.q.get("fieldSelector"))
        timeout = float(self.q.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        start = self.q.get("resourceVersion") or "0"

        def wanted(obj: Obj) -> bool:
            meta = obj.get("metadata") or {}
            if self.ns and meta.get("namespace") != self.ns:
                return False
            return label_ok(meta.get("labels") or {}) and field_ok(obj)

        h = self.h
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()

        def emit(kind: str, obj: Any) -> None:
            if self._table and kind != "ERROR":
                obj = tables.table(self.r.plural, [obj])
            line = json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            h.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            h.wfile.flush()

        try:
            if start == "0":
                objects, version = self.store.list_with_version(self.r.store_name, self.ns)
                for obj in objects:
                    if wanted(obj):
                        emit("ADDED", self._typed(obj))
            else:
                try:
                    version = int(start)
                except ValueError:
                    version = self.store.resource_version
            while time.monotonic() < deadline and not self.h.api.stopping.is_set():
                checked = self.store.resource_version  # read first: a change after this wakes the wait
                try:
                    events = self.store.events_since(self.r.store_name, version)
                except Gone as gone:
                    emit("ERROR", gone.status())
                    break
                for event_version, kind, obj in events:
                    version = event_version
                    if wanted(obj):
                        emit(kind, self._typed(obj))
                if not events:
                    version = max(version, checked)  # nothing of ours up to ``checked``: skip it next time
                    self.store.wait(checked, min(1.0, max(0.0, deadline - time.monotonic())))
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        h.close_connection = True

    def get(self) -> None:
        obj = self._typed(self._current())
        self.h._send(200, tables.table(self.r.plural, [obj]) if self._table else obj)

    def create(self) -> None:
        self._need_namespace()
        body = self._json_body()
        if self.r.plural == "tokenreviews":
            return self.token_review(body)
        obj = self._check_body(body)
        validate.check(self.r, obj, self.h.api.registry())
        created, warnings = self.store.create_admitted(self.r.store_name, obj, dry_run=self.dry_run)
        self.h._send(201, self._typed(created), warnings)

    _cached_body: Any = None

    def _json_body(self) -> Any:
        """The request body, parsed once (a patch retried after a conflict reads it again)."""
        if self._cached_body is None:
            self._cached_body = self.h._json_body()
        return self._cached_body

    def replace(self) -> None:
        obj = self._check_body(self._json_body())
        if obj["metadata"].get("name") and obj["metadata"]["name"] != self.name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        obj["metadata"]["name"] = self.name
        validate.check(self.r, obj, self.h.api.registry())
        if self.store.get(self.r.store_name, self.ns, self.name or "") is None:
            created, warnings = self.store.create_admitted(self.r.store_name, obj, dry_run=self.dry_run)
            return self.h._send(201, self._typed(created), warnings)
        self.h._send(200, self._typed(self.store.update(self.r.store_name, obj, dry_run=self.dry_run)))

    def replace_status(self) -> None:
        obj = self._check_body(self._json_body())
        obj["metadata"]["name"] = self.name
        self.h._send(
            200, self._typed(self.store.update(self.r.store_name, obj, dry_run=self.dry_run, status=True))
        )

    def _patched(self, current: Obj) -> Obj:
        content_type = (self.h.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self._json_body()
        if content_type == "application/json-patch+json":
            return patch.json_patch(current, body)
        if content_type == "application/merge-patch+json":
            merged: Obj = patch.merge_patch(current, body)
            return merged
        if content_type == "application/strategic-merge-patch+json":
            if self.r.schema is not None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources: use a merge patch",
                )
            schema = openapi._schema_name(self.r)
            return patch.strategic_merge_patch(current, body, schema)
        if content_type == "application/apply-patch+yaml":
            raise ApiError(
                415, "UnsupportedMediaType", "server-side apply is not supported here: use client-side apply"
            )
        raise ApiError(
            415, "UnsupportedMediaType", "the body of the request was in an unknown format: %s" % content_type
        )

    def patch(self) -> None:
        """Apply the patch to the current object; re-read and re-apply when a writer got in between."""
        for attempt in range(5):
            current = self._current()
            new = self._typed(self._patched(current))
            meta = new.setdefault("metadata", {})
            meta["name"] = self.name
            if self.r.namespaced:
                meta["namespace"] = self.ns
            explicit = meta.get("resourceVersion") != current["metadata"].get("resourceVersion")
            if not explicit:
                meta["resourceVersion"] = current["metadata"].get("resourceVersion")
            validate.check(self.r, new, self.h.api.registry())
            try:
                updated = self.store.update(self.r.store_name, new, dry_run=self.dry_run)
            except ApiError as exc:
                if exc.reason == "Conflict" and not explicit and attempt < 4:
                    continue
                raise
            return self.h._send(200, self._typed(updated))

    def patch_status(self) -> None:
        current = self._current()
        new = self._patched(current)
        self.h._send(
            200,
            self._typed(
                self.store.update(
                    self.r.store_name,
                    dict(new, metadata=dict(new.get("metadata") or {}, resourceVersion=None)),
                    dry_run=self.dry_run,
                    status=True,
                )
            ),
        )

    def _grace(self, body: Any) -> Optional[int]:
        grace: Any = self.q.get("gracePeriodSeconds")
        if isinstance(body, dict) and body.get("gracePeriodSeconds") is not None:
            grace = body["gracePeriodSeconds"]
        return int(grace) if grace is not None else None

    def delete(self) -> None:
        body = self._json_body()
        assert self.name is not None
        result = self.store.delete(
            self.r.store_name, self.ns, self.name, self._grace(body), dry_run=self.dry_run
        )
        still = self.store.get(self.r.store_name, self.ns, self.name)
        if still is not None and (still.get("metadata") or {}).get("deletionTimestamp"):
            return self.h._send(200, self._typed(still))  # graceful: the object, marked
        self.h._send(
            200,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": self.name,
                    "kind": self.r.plural,
                    "uid": (result or {}).get("metadata", {}).get("uid"),
                },
            },
        )

    def delete_collection(self) -> None:
        body = self._json_body()
        label_ok = parse_label_selector(self.q.get("labelSelector"))
        field_ok = parse_field_selector(self.q.get("fieldSelector"))
        deleted = []
        for obj in self.store.list(self.r.store_name, self.ns):
            meta = obj.get("metadata") or {}
            if label_ok(meta.get("labels") or {}) and field_ok(obj):
                try:
                    self.store.delete(
                        self.r.store_name,
                        meta.get("namespace"),
                        meta["name"],
                        self._grace(body),
                        self.dry_run,
                    )
                    deleted.append(self._typed(obj))
                except ApiError:
                    pass
        self.h._send(
            200,
            {
                "kind": self.r.kind + "List",
                "apiVersion": self.r.group_version,
                "metadata": {},
                "items": deleted,
            },
        )

    # ------------------------------------------------------------------ subresources

    def _scale(self, obj: Obj) -> Obj:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        meta = obj["metadata"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {
                "replicas": status.get("replicas", 0),
                "selector": ",".join("%s=%s" % kv for kv in sorted(selector.items())),
            },
        }

    def get_scale(self) -> None:
        self.h._send(200, self._scale(self._current()))

    def _set_replicas(self, current: Obj, replicas: Any) -> None:
        if not isinstance(replicas, int) or replicas < 0:
            raise validate.invalid_field(
                self.r, current, "spec.replicas", "Invalid value: %r: must be >= 0" % replicas
            )
        current.setdefault("spec", {})["replicas"] = replicas
        updated = self.store.update(self.r.store_name, current, dry_run=self.dry_run)
        self.h._send(200, self._scale(updated))

    def replace_scale(self) -> None:
        body = self._json_body()
        current = self._current()
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted:
            current["metadata"]["resourceVersion"] = wanted
        self._set_replicas(current, (body.get("spec") or {}).get("replicas"))

    def patch_scale(self) -> None:
        current = self._current()
        scale = self._scale(current)
        patched = self._patched_scale(scale)
        self._set_replicas(current, (patched.get("spec") or {}).get("replicas"))

    def _patched_scale(self, scale: Obj) -> Obj:
        content_type = (self.h.headers.get("Content-Type") or "").split(";")[0].strip()
        body = self._json_body()
        if content_type == "application/json-patch+json":
            return patch.json_patch(scale, body)
        merged: Obj = patch.merge_patch(scale, body)
        return merged

    def pod_log(self) -> None:
        pod = self._current()
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        container = self.q.get("container") or (containers[0] if len(containers) == 1 else None)
        if container is None:
            raise ApiError(
                400,
                "BadRequest",
                "a container name must be specified for pod %s, choose one of: %s" % (self.name, containers),
            )
        locate = self.h.api.logs
        path = (
            locate(self.ns or "", self.name or "", container, self.q.get("previous") == "true")
            if locate
            else None
        )
        if path is None or not path.exists():
            raise ApiError(
                400,
                "BadRequest",
                'container "%s" in pod "%s" is waiting to start: no logs yet' % (container, self.name),
            )
        data = path.read_bytes()
        tail = self.q.get("tailLines")
        if tail is not None:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail) :]) if int(tail) > 0 else b""
        if self.q.get("follow") != "true":
            h = self.h
            h.send_response(200)
            h.send_header("Content-Type", "text/plain")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            return
        self._follow(path, data)

    def _follow(self, path: Path, first: bytes) -> None:
        h = self.h
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        offset = path.stat().st_size
        try:
            if first:
                h.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
                h.wfile.flush()
            while (
                not h.api.stopping.is_set() and self.store.get("pods", self.ns, self.name or "") is not None
            ):
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                if chunk:
                    offset += len(chunk)
                    h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    h.wfile.flush()
                else:
                    time.sleep(0.2)
            h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        h.close_connection = True

    def token_review(self, body: Obj) -> None:
        spec = body.get("spec") or {}
        status = self.store.review_token(str(spec.get("token") or ""), spec.get("audiences") or [])
        self.h._send(
            201,
            {
                "kind": "TokenReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {},
                "spec": spec,
                "status": status,
            },
        )

    def token_request(self) -> None:
        body = self._json_body()
        self._current()
        spec = body.get("spec") or {}
        audiences = spec.get("audiences") or []
        seconds = int(spec.get("expirationSeconds") or 3600)
        bound = spec.get("boundObjectRef") or {}
        pod = self.store.get("pods", self.ns, bound.get("name", "")) if bound.get("kind") == "Pod" else None
        token = self.store.issue_token(
            self.ns or "", self.name or "", audiences[0] if audiences else None, seconds, pod or {}
        )
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
        self.h._send(
            201,
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": self.name, "namespace": self.ns},
                "spec": spec,
                "status": {"token": token, "expirationTimestamp": expires},
            },
        )


# ---------------------------------------------------------------------- discovery documents


def version_info() -> Obj:
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-pilotfish-local",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_group_list(registry: Registry) -> Obj:
    groups = []
    for group, versions in registry.group_versions().items():
        if not group:
            continue
        entries = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(registry: Registry, group: str, version: str) -> Obj:
    resources: List[Obj] = []
    for r in registry.in_group_version(group, version):
        verbs = ["create"] if r.plural == "tokenreviews" else list(_verbs(r))
        resources.append(
            {
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": verbs,
                "shortNames": list(r.short_names),
                "categories": ["all"]
                if r.plural in ("pods", "services", "deployments", "replicasets")
                else [],
            }
        )
        for sub in r.subresources:
            sub_kind = {"scale": "Scale", "log": "Pod", "token": "TokenRequest"}.get(sub, r.kind)
            sub_verbs = {"log": ["get"], "token": ["create"], "scale": ["get", "patch", "update"]}.get(
                sub, ["get", "patch", "update"]
            )
            entry: Obj = {"name": "%s/%s" % (r.plural, sub), "singularName": "", "namespaced": r.namespaced}
            entry.update({"kind": sub_kind, "verbs": sub_verbs})
            if sub == "scale":
                entry.update({"group": "autoscaling", "version": "v1"})
            resources.append(entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "%s/%s" % (group, version) if group else version,
        "resources": resources,
    }


def _verbs(r: Resource) -> Tuple[str, ...]:
    return ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
