"""Deployment rollouts on the local cluster's controllers, with a stand-in node that makes pods Ready.

The stand-in marks each new pod Running and Ready after a short delay (what the kubelet
reports once a readiness probe passes); pods marked for deletion are removed at once.
Rolling updates must respect maxSurge / maxUnavailable at every step, and
``kubectl rollout restart`` / ``rollout status`` must work as against a real cluster.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, Iterator, List

import pytest
from support.cluster import Api
from support.wait import eventually

Obj = Dict[str, Any]
STAMP = "%Y-%m-%dT%H:%M:%SZ"


class ReadyNode:
    """Marks pods Ready ``delay`` seconds after they appear; records pod counts per app at every change."""

    def __init__(self, api: Api, delay: float = 0.3) -> None:
        self.api, self.delay = api, delay
        self.samples: Dict[str, List[tuple]] = {}
        self._lock = threading.Lock()
        self._next_ip = 2
        self.unsubscribe = api.store.subscribe("pods", self._on_pod)

    def _on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod["metadata"]
        if kind == "ADDED" and not meta.get("deletionTimestamp"):
            threading.Timer(self.delay, self._make_ready, (meta["namespace"], meta["name"])).start()
        app = (meta.get("labels") or {}).get("app")
        if app:
            pods = [
                p
                for p in self.api.store.list("pods", meta["namespace"])
                if (p["metadata"].get("labels") or {}).get("app") == app
            ]
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            ready = [p for p in live if _ready(p)]
            with self._lock:
                self.samples.setdefault(app, []).append((len(live), len(ready)))

    def _make_ready(self, namespace: str, name: str) -> None:
        with self._lock:
            ip = "10.244.9.%d" % self._next_ip
            self._next_ip += 1
        stamp = time.strftime(STAMP, time.gmtime())
        status = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": stamp},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": stamp},
            ],
        }
        self.api.store.update_status("pods", namespace, name, status)


def _ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


@pytest.fixture(scope="module")
def node(api: Api) -> Iterator[ReadyNode]:
    api.store.create("namespaces", {"metadata": {"name": "roll"}})
    ready = ReadyNode(api)
    yield ready
    ready.unsubscribe()


def deployment(name: str, replicas: int, surge: Any, unavailable: Any, min_ready: int = 0) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "roll"},
        "spec": {
            "replicas": replicas,
            "minReadySeconds": min_ready,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
            },
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "python:3.11",
                            "ports": [{"name": "http", "containerPort": 8000}],
                        }
                    ]
                },
            },
        },
    }


def rolled_out(api: Api, name: str) -> bool:
    d = api.store.get("deployments", "roll", name) or {}
    status, spec = d.get("status") or {}, d.get("spec") or {}
    return (
        status.get("observedGeneration") == d.get("metadata", {}).get("generation")
        and status.get("updatedReplicas", 0) == spec.get("replicas")
        and status.get("replicas", 0) == spec.get("replicas")
        and status.get("availableReplicas", 0) == spec.get("replicas")
    )


def test_rolling_restart_never_exceeds_surge_nor_drops_below_the_available_minimum(
    api: Api, node: ReadyNode
) -> None:
    api.kubectl("apply", "-f", "-", input=json.dumps(deployment("surge", 4, 1, 0)))
    api.kubectl("-n", "roll", "rollout", "status", "deployment/surge", "--timeout=60s")
    node.samples["surge"] = []
    api.kubectl("-n", "roll", "rollout", "restart", "deployment/surge")
    done = api.kubectl("-n", "roll", "rollout", "status", "deployment/surge", "--timeout=60s")
    assert 'deployment "surge" successfully rolled out' in done.stdout
    samples = node.samples["surge"]
    assert samples, "no pod changes seen during the rollout"
    assert max(live for live, _ in samples) == 5  # replicas + maxSurge, reached and never passed
    assert min(ready for _, ready in samples) >= 4  # maxUnavailable 0: never below replicas
    rs = [r for r in api.store.list("replicasets", "roll") if r["metadata"]["name"].startswith("surge-")]
    assert sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for r in rs) == ["1", "2"]
    pods = [p for p in api.store.list("pods", "roll") if p["metadata"]["labels"]["app"] == "surge"]
    assert len(pods) == 4 and all(
        "kubectl.kubernetes.io/restartedAt" in p["metadata"]["annotations"] for p in pods
    )


def test_max_unavailable_lets_old_pods_go_first(api: Api, node: ReadyNode) -> None:
    api.kubectl("apply", "-f", "-", input=json.dumps(deployment("unavail", 4, 0, 2)))
    api.kubectl("-n", "roll", "rollout", "status", "deployment/unavail", "--timeout=60s")
    node.samples["unavail"] = []
    api.kubectl("-n", "roll", "set", "env", "deployment/unavail", "V=2")
    api.kubectl("-n", "roll", "rollout", "status", "deployment/unavail", "--timeout=60s")
    samples = node.samples["unavail"]
    assert max(live for live, _ in samples) == 4  # maxSurge 0
    assert min(ready for _, ready in samples) == 2  # replicas - maxUnavailable, reached and never passed


def test_min_ready_seconds_delays_availability(api: Api, node: ReadyNode) -> None:
    api.kubectl("apply", "-f", "-", input=json.dumps(deployment("slow", 1, 1, 0, min_ready=2)))
    eventually(
        lambda: (api.store.get("deployments", "roll", "slow") or {}).get("status", {}).get("readyReplicas"),
        timeout=30,
        what="ready",
    )
    became_ready = time.monotonic()
    status = (api.store.get("deployments", "roll", "slow") or {}).get("status", {})
    assert not status.get("availableReplicas")
    eventually(lambda: rolled_out(api, "slow"), timeout=30, what="available after minReadySeconds")
    assert time.monotonic() - became_ready >= 1.0  # stamps have 1 s resolution: at least minReadySeconds - 1


def test_scale_and_history_limit(api: Api, node: ReadyNode) -> None:
    body = deployment("hist", 1, 1, 0)
    body["spec"]["revisionHistoryLimit"] = 1
    api.kubectl("apply", "-f", "-", input=json.dumps(body))
    for value in ("a", "b", "c"):
        api.kubectl("-n", "roll", "set", "env", "deployment/hist", "V=" + value)
        api.kubectl("-n", "roll", "rollout", "status", "deployment/hist", "--timeout=60s")
    names = [r for r in api.store.list("replicasets", "roll") if r["metadata"]["name"].startswith("hist-")]
    eventually(
        lambda: (
            len(
                [
                    r
                    for r in api.store.list("replicasets", "roll")
                    if r["metadata"]["name"].startswith("hist-")
                ]
            )
            == 2
        ),
        timeout=30,
        what="history trimmed to 1 old ReplicaSet",
    )
    assert names
    api.kubectl("-n", "roll", "scale", "deployment/hist", "--replicas=3")
    eventually(
        lambda: (
            rolled_out(api, "hist")
            and (api.store.get("deployments", "roll", "hist") or {})["status"].get("availableReplicas") == 3
        ),
        timeout=30,
        what="scaled to 3",
    )
    out = api.kubectl(
        "-n", "roll", "get", "deployment", "hist", "-o", "jsonpath={.status.readyReplicas}"
    ).stdout
    assert out == "3"


def test_services_get_endpoint_slices_and_endpoints_of_ready_pods(api: Api, node: ReadyNode) -> None:
    api.kubectl("apply", "-f", "-", input=json.dumps(deployment("served", 2, 1, 0)))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "served", "namespace": "roll"},
        "spec": {"selector": {"app": "served"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
    }
    api.kubectl("apply", "-f", "-", input=json.dumps(service))
    api.kubectl("-n", "roll", "rollout", "status", "deployment/served", "--timeout=60s")

    def endpoints() -> Any:
        found = api.store.get("endpoints", "roll", "served")
        subsets = (found or {}).get("subsets") or []
        return subsets if subsets and len(subsets[0].get("addresses") or []) == 2 else None

    subsets = eventually(endpoints, timeout=30, what="two ready addresses in the Endpoints")
    assert subsets[0]["ports"] == [{"name": "web", "port": 8000, "protocol": "TCP"}]
    slices = [
        s
        for s in api.store.list("endpointslices", "roll")
        if s["metadata"]["labels"]["kubernetes.io/service-name"] == "served"
    ]
    assert len(slices) == 1 and slices[0]["ports"] == [{"name": "web", "port": 8000, "protocol": "TCP"}]
    assert all(
        e["conditions"] == {"ready": True, "serving": True, "terminating": False}
        for e in slices[0]["endpoints"]
    )
    listed = api.kubectl("-n", "roll", "get", "endpoints", "served").stdout
    assert "8000" in listed
