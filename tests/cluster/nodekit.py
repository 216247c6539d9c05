"""A node (network + kubelet) on the real store, for the node tests; skips where it cannot run.

Pods are created straight in the store (no API server, no controllers): the tests write the
EndpointSlices themselves, so what they measure is the node's own behaviour.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest
from support.wait import eventually

from hack.cluster.kubelet import Kubelet
from hack.cluster.network import Network, missing_requirements
from hack.cluster.store import Store

Obj = Dict[str, Any]

# An HTTP/1.1 server (keep-alive) naming its pod: GET / -> "<pod name> <pid>"; /healthz is 200
# while /ctl/healthy exists (when /ctl is mounted), else 500. Port: $PORT (8000).
ECHO = r"""
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/healthz":
            ok = not os.path.isdir("/ctl") or os.path.exists("/ctl/healthy")
            code, body = (200, b"ok") if ok else (500, b"sick")
        else:
            code, body = 200, ("%s %d" % (os.environ.get("POD_NAME", "?"), os.getpid())).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
print("listening", flush=True)
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), H).serve_forever()
"""

POD_NAME_ENV = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}


def require_node() -> None:
    missing = missing_requirements()
    if missing:
        pytest.skip("the local cluster's node cannot run here: " + "; ".join(missing))


def echo_container(name: str = "app", **extra: Any) -> Obj:
    container: Obj = {
        "name": name,
        "image": "python:3.11",
        "command": ["python3", "-c", ECHO],
        "env": [POD_NAME_ENV],
    }
    container.update(extra)
    return container


class Node:
    """Network + kubelet of one test; :meth:`stop` removes everything."""

    def __init__(self, state_dir: Path, propagation_delay: float = 0.0, backoff_base: float = 0.2) -> None:
        require_node()
        self.network = Network(state_dir, propagation_delay=propagation_delay)
        self.network.start()
        self.store = Store(service_cidr=self.network.service_cidr)
        self.store.create("namespaces", {"metadata": {"name": "default"}})
        self.cluster = SimpleNamespace(
            store=self.store,
            state_dir=state_dir,
            ca_pem=b"-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n",
            api_url_for_pods="https://%s:6443" % self.network.host_address,
        )
        self.kubelet = Kubelet(self.cluster, self.network, backoff_base=backoff_base, stop_grace=3.0)
        self.kubelet.start()

    def stop(self) -> None:
        try:
            self.kubelet.stop()
        finally:
            self.network.stop()
            self.store.stop()

    # -- objects -------------------------------------------------------------------------------
    def pod(self, name: str, containers: List[Obj], namespace: str = "default", labels: Optional[Obj] = None,
            **spec: Any) -> Obj:  # fmt: skip
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"containers": containers, **spec},
        }
        return self.store.create("pods", body)

    def service(self, name: str, port: int, namespace: str = "default", target_port: int = 8000) -> str:
        svc = self.store.create(
            "services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "ports": [{"name": "http", "port": port, "targetPort": target_port, "protocol": "TCP"}]
                },
            },
        )
        return str(svc["spec"]["clusterIP"])

    def endpoints(self, service: str, addresses: Sequence[str], namespace: str = "default", port: int = 8000,
                  ready: bool = True) -> None:  # fmt: skip
        """Write the Service's one EndpointSlice (what the EndpointSlice controller would)."""
        body: Obj = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": service + "-slice",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": ready}} for a in addresses],
        }
        current = self.store.get("endpointslices", namespace, service + "-slice")
        if current is None:
            self.store.create("endpointslices", body)
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.store.update("endpointslices", body)

    # -- waiting -------------------------------------------------------------------------------
    def wait_pod(self, name: str, predicate: Callable[[Obj], bool], namespace: str = "default",
                 timeout: float = 30.0, what: str = "condition") -> Obj:  # fmt: skip
        last: Dict[str, Optional[Obj]] = {"pod": None}

        def reached() -> Optional[Obj]:
            last["pod"] = pod = self.store.get("pods", namespace, name)
            return pod if pod is not None and predicate(pod) else None

        return eventually(
            reached,
            timeout,
            "pod %s/%s: %s" % (namespace, name, what),
            context=lambda: "last: %s" % last["pod"],
        )

    def wait_ready(self, name: str, namespace: str = "default", timeout: float = 30.0) -> Obj:
        return self.wait_pod(name, is_ready, namespace, timeout, "Ready")

    def wait_gone(self, name: str, namespace: str = "default", timeout: float = 30.0) -> float:
        """Seconds until the pod left the store."""
        start = time.monotonic()
        eventually(
            lambda: self.store.get("pods", namespace, name) is None,
            timeout,
            "pod %s/%s gone" % (namespace, name),
            interval=0.01,  # the caller measures how long it took
        )
        return time.monotonic() - start

    def log(
        self, pod: str, container: str = "app", namespace: str = "default", previous: bool = False
    ) -> str:
        path = self.kubelet.log_path(namespace, pod, container, previous)
        return path.read_text() if path else ""

    def wait_log(self, pod: str, text: str, container: str = "app", namespace: str = "default",
                 timeout: float = 30.0) -> str:  # fmt: skip
        def logged() -> Optional[str]:
            out = self.log(pod, container, namespace)
            return out if text in out else None

        return eventually(
            logged,
            timeout,
            "%r in the log of %s/%s" % (text, pod, container),
            context=lambda: repr(self.log(pod, container, namespace)),
        )

    def exec(self, pod: str, argv: List[str], namespace: str = "default", container: str = "app",
             timeout: float = 20.0) -> subprocess.CompletedProcess:  # fmt: skip
        return self.kubelet.exec_in(namespace, pod, container, argv, timeout)

    def events(self, pod: str, reason: str, namespace: str = "default") -> List[Obj]:
        return [
            e
            for e in self.store.list("events", namespace)
            if e["involvedObject"]["name"] == pod and e["reason"] == reason
        ]


def is_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def status_of(pod: Obj, container: str = "app") -> Obj:
    for s in (pod.get("status") or {}).get("containerStatuses") or []:
        if s["name"] == container:
            return dict(s)
    return {}


def pod_ip(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("podIP") or "")


def http_get(host: str, port: int, path: str = "/", timeout: float = 5.0) -> Tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()
