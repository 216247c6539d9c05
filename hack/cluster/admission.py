"""Admission through MutatingWebhookConfigurations, as the real API server calls webhooks.

For every Pod create (including the controllers' and dry runs), each webhook of each stored
configuration (configurations by name, webhooks in order) whose rules, namespaceSelector and
objectSelector match gets an AdmissionReview over HTTPS, verified against its ``caBundle``
with the Service's DNS name (``<svc>.<ns>.svc``) as the expected server name. A ``service``
reference is resolved to a ready endpoint of the Service (its EndpointSlices, targetPort by
name or number) and called directly at the pod address, as the API server's endpoint
routing does. The returned JSONPatch is applied; ``warnings`` go back to the client;
a failed call follows ``failurePolicy`` (Ignore: admitted unchanged; Fail: 500 with the
real message), within ``timeoutSeconds``.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import logging
import random
import socket
import ssl
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Tuple
from urllib.parse import urlsplit

import jsonpatch

from .apiserver.selectors import matches_label_selector
from .store import ApiError, Store

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("cluster.admission")

Obj = Dict[str, Any]


class WebhookFailed(Exception):
    pass


def install(cluster: Cluster) -> None:
    cluster.store.admission = WebhookAdmission(cluster.store)


class WebhookAdmission:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, resource: str, obj: Obj, dry_run: bool) -> Tuple[Obj, List[str]]:
        if resource != "pods":
            return obj, []
        warnings: List[str] = []
        namespace = (obj.get("metadata") or {}).get("namespace") or ""
        ns = self.store.get("namespaces", None, namespace) or {}
        ns_labels = (ns.get("metadata") or {}).get("labels") or {}
        configs = sorted(
            self.store.list("mutatingwebhookconfigurations"), key=lambda c: c["metadata"]["name"]
        )
        for config in configs:
            for hook in config.get("webhooks") or []:
                if not self._applies(hook, ns_labels, obj):
                    continue
                try:
                    response = self._call(hook, obj, namespace, dry_run)
                except WebhookFailed as exc:
                    message = 'failed calling webhook "%s": %s' % (hook.get("name"), exc)
                    if hook.get("failurePolicy", "Fail") == "Ignore":
                        log.warning("%s (failurePolicy Ignore: admitted unchanged)", message)
                        continue
                    raise ApiError(500, "InternalError", "Internal error occurred: " + message)
                warnings.extend(str(w) for w in response.get("warnings") or [])
                if not response.get("allowed", False):
                    result = response.get("status") or {}
                    raise ApiError(
                        int(result.get("code") or 400),
                        str(result.get("reason") or "BadRequest"),
                        'admission webhook "%s" denied the request: %s'
                        % (hook.get("name"), result.get("message", "")),
                    )
                obj = self._apply_patch(hook, obj, response)
        return obj, warnings

    def _applies(self, hook: Obj, ns_labels: Dict[str, str], pod: Obj) -> bool:
        rules_ok = False
        for rule in hook.get("rules") or []:
            ops = rule.get("operations") or []
            if not ("CREATE" in ops or "*" in ops):
                continue
            if not any(g in ("", "*") for g in rule.get("apiGroups") or []):
                continue
            if not any(v in ("v1", "*") for v in rule.get("apiVersions") or []):
                continue
            if not any(r in ("pods", "*", "*/*") for r in rule.get("resources") or []):
                continue
            rules_ok = True
        if not rules_ok:
            return False
        if not matches_label_selector(hook.get("namespaceSelector") or {}, ns_labels):
            return False
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return matches_label_selector(hook.get("objectSelector") or {}, labels)

    def _apply_patch(self, hook: Obj, pod: Obj, response: Obj) -> Obj:
        raw = response.get("patch")
        if not raw:
            return pod
        if response.get("patchType", "JSONPatch") != "JSONPatch":
            raise ApiError(
                500, "InternalError", 'webhook "%s" returned an unsupported patchType' % hook.get("name")
            )
        try:
            operations = json.loads(base64.b64decode(raw))
            patched: Dict[str, Any] = jsonpatch.JsonPatch(operations).apply(copy.deepcopy(pod))
            return patched
        except Exception as exc:
            message = 'Internal error occurred: webhook "%s" returned an unusable patch: %s' % (
                hook.get("name"),
                exc,
            )
            if hook.get("failurePolicy", "Fail") == "Ignore":
                log.warning(message)
                return pod
            raise ApiError(500, "InternalError", message)

    # ------------------------------------------------------------------ the call

    def _target(self, hook: Obj) -> Tuple[str, int, str, str]:
        """(address, port, server name for TLS, path)."""
        client = hook.get("clientConfig") or {}
        if client.get("url"):
            url = urlsplit(client["url"])
            return url.hostname or "", url.port or 443, url.hostname or "", url.path or "/"
        ref = client.get("service") or {}
        ns, name = ref.get("namespace", "default"), ref.get("name", "")
        port = int(ref.get("port") or 443)
        path = ref.get("path") or "/"
        service = self.store.get("services", ns, name)
        if service is None:
            raise WebhookFailed('service "%s/%s" not found' % (ns, name))
        service_port = next(
            (p for p in (service.get("spec") or {}).get("ports") or [] if p.get("port") == port), None
        )
        if service_port is None:
            raise WebhookFailed("service %s/%s has no port %d" % (ns, name, port))
        candidates: List[Tuple[str, int]] = []
        for eps in self.store.list("endpointslices", ns):
            if ((eps.get("metadata") or {}).get("labels") or {}).get("kubernetes.io/service-name") != name:
                continue
            slice_port = next(
                (p for p in eps.get("ports") or [] if p.get("name", "") == service_port.get("name", "")), None
            )
            if slice_port is None:
                continue
            for endpoint in eps.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready"):
                    candidates.extend((a, int(slice_port["port"])) for a in endpoint.get("addresses") or [])
        if not candidates:
            raise WebhookFailed('no endpoints available for service "%s"' % name)
        address, target = random.choice(candidates)
        return address, target, "%s.%s.svc" % (name, ns), path

    def _call(self, hook: Obj, pod: Obj, namespace: str, dry_run: bool) -> Obj:
        address, port, server_name, path = self._target(hook)
        timeout = float(hook.get("timeoutSeconds") or 10)
        bundle = (hook.get("clientConfig") or {}).get("caBundle")
        context = ssl.create_default_context()
        if bundle:
            context = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "name": (pod.get("metadata") or {}).get("name", ""),
                "namespace": namespace,
                "operation": "CREATE",
                "userInfo": {
                    "username": "system:admin",
                    "groups": ["system:masters", "system:authenticated"],
                },
                "object": pod,
                "oldObject": None,
                "dryRun": dry_run,
                "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }
        body = json.dumps(review).encode()
        try:
            raw = socket.create_connection((address, port), timeout=timeout)
            sock = context.wrap_socket(raw, server_hostname=server_name)
            conn = http.client.HTTPConnection(address, port, timeout=timeout)
            conn.sock = sock
            conn.request(
                "POST",
                path + "?timeout=%ds" % int(timeout),
                body=body,
                headers={"Content-Type": "application/json"},
            )
            answer = conn.getresponse()
            data = answer.read()
            conn.close()
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            raise WebhookFailed('Post "https://%s:%d%s": %s' % (server_name, port, path, exc))
        if answer.status != 200:
            raise WebhookFailed("the server responded with HTTP %d: %r" % (answer.status, data[:200]))
        try:
            response = json.loads(data).get("response")
        except ValueError as exc:
            raise WebhookFailed("the response is not JSON: %s" % exc)
        if not isinstance(response, dict):
            raise WebhookFailed("the AdmissionReview has no response")
        return response
