"""The registry callers route with: ``GET /v1/routing`` (Services, instances, the server's now).

Spec: per namespace, every Service (name, ClusterIPs, ports with target ports) and
per Service its instances (IP, the pod port behind each Service port, tag, state,
readiness, when warm-up started, the provider's warm-up settings) and whether
policies turned routing to it off; a long-poll (version in, new version out) whose
answer carries the server's own clock. In a cluster it comes from Services,
EndpointSlices and Pods (pods without the agent included, warm-up from their Ready
transition); embedded, from registrations plus Services declared in the policies file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from fastapi.testclient import TestClient
from pilotfish_webhook.app import create_app
from pilotfish_webhook.config.registry import Caller, KubeRegistry, MemoryRegistry, Registry, parse_time
from pilotfish_webhook.config.router import ConfigService, attach
from pilotfish_webhook.config.routing import RoutingView
from pilotfish_webhook.config.sources import FileSource
from pilotfish_webhook.config.store import PolicyStore
from support.fake_kube import FakeKube
from support.wait import eventually

DATA = Path(__file__).resolve().parent / "data" / "kube"
ANON = Caller()

POLICIES = """\
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: slow-warmup, namespace: demo}
spec:
  selector: {apps: [stock]}
  lossless:
    warmup: {seconds: 300, curve: 3, minWeightPercent: 5}
---
apiVersion: pilotfish.io/v1alpha1
kind: GovernancePolicy
metadata: {name: legacy-off, namespace: demo}
spec:
  selector: {apps: [legacy]}
  routing: {enabled: false}
---
apiVersion: v1
kind: Service
metadata: {name: stock, namespace: demo}
spec:
  clusterIP: 10.96.7.7
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def by_name(answer: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {service["name"]: service for service in answer["services"]}


def register(registry: Registry, **body: Any) -> Dict[str, Any]:
    return registry.register(ANON, dict({"namespace": "demo", "state": "registered"}, **body))


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[RoutingView]:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICIES)
    store, registry = PolicyStore("pilotfish-system"), MemoryRegistry()
    FileSource(path, store, on_services=registry.declare_services, settle=0).poll()
    yield RoutingView(registry, store)


def test_embedded_services_come_from_declarations_and_registrations(embedded: RoutingView) -> None:
    registry = embedded.registry
    register(registry, pod="stock-1", app="stock", ip="127.0.0.2", port=8080)
    gray = register(registry, pod="stock-2", app="stock", ip="127.0.0.3", port=8081, tag="gray")
    register(registry, pod="legacy-1", app="legacy", ip="127.0.0.4", port=9000, state="offline")
    register(
        registry, pod="mine-1", app="mine", ip="127.0.0.5", port=7000, warmup={"seconds": 10.0, "curve": 1}
    )
    register(registry, pod="elsewhere", app="stock", ip="127.0.0.9", port=1, namespace="other")

    version, answer = embedded.current("demo")
    services = by_name(answer)
    assert sorted(services) == ["legacy", "mine", "stock"]
    stock = services["stock"]
    assert stock["cluster_ips"] == ["10.96.7.7"]
    assert stock["ports"] == [{"name": "http", "port": 80, "target_port": 8080, "protocol": "TCP"}]
    assert stock["routing_enabled"] is True
    assert [(i["pod"], i["ip"], i["ports"], i["tag"], i["ready"]) for i in stock["instances"]] == [
        ("stock-1", "127.0.0.2", {"80": 8080}, "", True),
        ("stock-2", "127.0.0.3", {"80": 8081}, "gray", True),  # each instance's own registered port
    ]
    assert stock["instances"][1]["ready_at"] == gray["registered_at"]
    # the provider's warm-up: its app's policy here (pods without a report of their own) ...
    assert stock["instances"][0]["warmup"] == {
        "enabled": True,
        "seconds": 300,
        "curve": 3,
        "min_weight_percent": 5,
    }
    # ... what an agent reported for itself wins field by field over policies and defaults
    assert services["mine"]["instances"][0]["warmup"] == {
        "enabled": True,
        "seconds": 10.0,
        "curve": 1,
        "min_weight_percent": 10.0,
    }
    # an undeclared Service is routed on the ports its instances registered
    assert services["mine"]["ports"] == [{"name": "", "port": 7000, "target_port": 7000, "protocol": "TCP"}]
    legacy = services["legacy"]
    assert legacy["routing_enabled"] is False  # a policy selecting the provider's app opted it out
    assert [(i["state"], i["ready"]) for i in legacy["instances"]] == [("offline", False)]
    assert embedded.current("demo")[0] == version  # stable while nothing changes
    assert [s["name"] for s in embedded.current("other")[1]["services"]] == ["stock"]


def test_the_version_moves_when_instances_or_policies_change(embedded: RoutingView, tmp_path: Path) -> None:
    first = embedded.current("demo")[0]
    register(embedded.registry, pod="stock-1", app="stock", ip="127.0.0.2", port=8080)
    second = embedded.current("demo")[0]
    assert second != first
    register(embedded.registry, pod="stock-1", app="stock", ip="127.0.0.2", port=8080)  # a renewal
    assert embedded.current("demo")[0] == second
    store = embedded.store
    store.replace_all([])  # policies gone: stock's warm-up falls back to the defaults
    third_version, answer = embedded.current("demo")
    assert third_version != second
    assert by_name(answer)["stock"]["instances"][0]["warmup"]["seconds"] == 120.0


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICIES)
    app = create_app()
    attach(app, ConfigService.embedded(path))
    with TestClient(app) as client:
        yield client


def test_the_routing_long_poll_answers_a_new_version_with_the_servers_now(http: TestClient) -> None:
    first = http.get("/v1/routing", params={"namespace": "demo", "timeout": "0"})
    assert first.status_code == 200
    body = first.json()
    assert abs(body["now"] - time.time()) < 5
    assert [s["name"] for s in body["services"]] == ["stock"]  # declared, no instance yet
    unchanged = http.get(
        "/v1/routing", params={"namespace": "demo", "version": body["version"], "timeout": "0.2"}
    )
    assert unchanged.status_code == 304 and unchanged.content == b""
    http.post(
        "/v1/register", json={"namespace": "demo", "pod": "s1", "app": "stock", "ip": "127.0.0.2", "port": 81}
    )
    changed = http.get(
        "/v1/routing", params={"namespace": "demo", "version": body["version"], "timeout": "5"}
    )
    assert changed.status_code == 200
    (instance,) = by_name(changed.json())["stock"]["instances"]
    assert (instance["ip"], instance["ports"]) == ("127.0.0.2", {"80": 81})


def test_a_bad_warmup_report_is_refused_with_the_field_named(http: TestClient) -> None:
    answer = http.post("/v1/register", json={"pod": "s1", "app": "stock", "warmup": {"curve": "steep"}})
    assert answer.status_code == 400
    assert "warmup.curve" in answer.json()["error"]


# ------------------------------------------------------------------ in cluster


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    fake.lists["/api/v1/pods"] = [load("pods.json")]
    fake.lists["/apis/discovery.k8s.io/v1/endpointslices"] = [load("endpointslices.json")]
    fake.lists["/api/v1/services"] = [load("services.json")]
    yield fake
    fake.close()


def test_in_cluster_services_endpointslices_and_pods_make_the_routing_answer(kube: FakeKube) -> None:
    registry = KubeRegistry(kube.api_client())
    registry.start()
    try:
        eventually(lambda: registry.status() == dict(registry.status(), pods=3, endpointslices=2, services=3))
        view = RoutingView(registry, PolicyStore("pilotfish-system"))
        services = by_name(view.current("shop")[1])
        assert sorted(services) == ["cart", "checkout"]
        checkout = services["checkout"]
        assert checkout["cluster_ips"] == ["10.96.14.7"]
        # a named targetPort resolves through the EndpointSlice port of the same name
        assert checkout["ports"] == [{"name": "http", "port": 80, "target_port": "http", "protocol": "TCP"}]
        rows: List[Any] = [
            (i["pod"], i["ip"], i["ports"], i["tag"], i["state"], i["ready"], i["ready_at"])
            for i in checkout["instances"]
        ]
        assert rows == [
            ("checkout-7d9f8b6c5d-abcde", "10.244.1.17", {"80": 8080}, "", "registered", True, 1795316000.5),
            (
                "checkout-gray-5c6d7e8f9a-fghij",
                "10.244.2.9",
                {"80": 8080},
                "gray",
                "unregistered",
                False,
                None,
            ),
        ]
        (cart,) = services["cart"]["instances"]
        # no agent in this pod: routed all the same, lane from its MSE label, warm-up from Ready
        assert (cart["tag"], cart["state"], cart["ready"]) == ("blue", "unregistered", True)
        assert cart["ready_at"] == parse_time("2026-11-22T03:05:00Z")
        assert cart["warmup"] == {"enabled": True, "seconds": 120.0, "curve": 2.0, "min_weight_percent": 10.0}
        assert [s["name"] for s in view.current("default")[1]["services"]] == ["kubernetes"]
    finally:
        registry.stop()


def test_parse_time_reads_the_api_servers_timestamps() -> None:
    assert parse_time("1970-01-01T00:01:00Z") == 60.0
    assert parse_time("not a time") is None and parse_time(None) is None
