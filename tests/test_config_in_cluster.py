"""In-cluster mode, tested against recorded API objects and watch streams (no real cluster).

No kube-apiserver can run here. ``support.fake_kube`` serves the fixtures of
``tests/data/kube/`` — Pods, EndpointSlices, TokenReview answers and a
GovernancePolicy list + watch stream, in the wire format kube-apiserver 1.30 uses,
hand-written after real objects and trimmed — to the real ``kubernetes`` client over
loopback HTTP. So these tests prove our list/watch/relist logic, TokenReview use,
the Pod annotation write and the authorisation rules; they do not prove RBAC or
the API server's own behaviour.

Spec (docs/policies.md): policies from GovernancePolicy objects (invalid ones rejected, the
last good kept, relist after 410); every call authenticated by TokenReview with
audience ``pilotfish``; a pod may only change its own registration, stored on the
Pod as an annotation; instance lists from EndpointSlices + Pods.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from pilotfish_webhook.app import create_app
from pilotfish_webhook.config.auth import TokenReviewAuth, Unauthorized
from pilotfish_webhook.config.registry import ANNOTATION, KubeRegistry
from pilotfish_webhook.config.router import ConfigService, attach
from pilotfish_webhook.config.sources import KubeSource
from pilotfish_webhook.config.store import PolicyStore
from support.fake_kube import FakeKube
from support.wait import eventually

DATA = Path(__file__).resolve().parent / "data" / "kube"
POLICIES = "/apis/pilotfish.io/v1alpha1/governancepolicies"
PODS = "/api/v1/pods"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
SERVICES = "/api/v1/services"
OWN_POD = "checkout-7d9f8b6c5d-abcde"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    fake = FakeKube()
    policies = load("policies.json")
    fake.lists[POLICIES] = [policies["list"], policies["relist"]]
    fake.watches[POLICIES] = policies["watch"]
    pods, slices = load("pods.json"), load("endpointslices.json")
    fake.lists[PODS] = [pods]
    fake.lists[SLICES] = [slices]
    fake.lists[SERVICES] = [load("services.json")]
    for pod in pods["items"]:
        fake.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = pod
    fake.token_reviews = load("tokenreviews.json")
    yield fake
    fake.close()


# ------------------------------------------------------------------ TokenReview


def test_a_pods_projected_token_identifies_its_namespace_and_pod(kube: FakeKube) -> None:
    auth = TokenReviewAuth(kube.api_client())
    caller = auth.authenticate("checkout-pod-token")
    assert (caller.namespace, caller.pod) == ("shop", OWN_POD)
    review = kube.calls("POST", "/apis/authentication.k8s.io/v1/tokenreviews")[0][2]
    assert review["spec"] == {"token": "checkout-pod-token", "audiences": ["pilotfish"]}


def test_reviews_are_cached_so_long_polls_do_not_cost_a_token_review_each(kube: FakeKube) -> None:
    auth = TokenReviewAuth(kube.api_client())
    for _ in range(5):
        auth.authenticate("checkout-pod-token")
    assert auth.reviews == 1


@pytest.mark.parametrize(
    "token, status, reason",
    [
        ("", 401, "missing bearer token"),
        ("forged", 401, "invalid bearer token"),
        ("human-token", 403, "not a service account"),
        ("wrong-audience-token", 401, "audience"),
    ],
)
def test_tokens_that_are_not_a_pods_pilotfish_token_are_refused(
    kube: FakeKube, token: str, status: int, reason: str
) -> None:
    with pytest.raises(Unauthorized) as caught:
        TokenReviewAuth(kube.api_client()).authenticate(token)
    assert caught.value.status == status and reason in str(caught.value)


# ------------------------------------------------------------------ policies


def test_policies_come_from_a_list_then_the_watch_and_a_410_triggers_a_relist(kube: FakeKube) -> None:
    store = PolicyStore("pilotfish-system")
    source = KubeSource(store, kube.api_client(), watch_timeout=5)
    resource_version = source.relist()
    assert resource_version == "7000"
    assert sorted(store.snapshot.policies) == ["pilotfish-system/cluster-defaults", "shop/shop-ns"]
    assert (
        "spec.routing.laneMode: must be one of permissive, strict" in store.status()["errors"][0]["message"]
    )
    assert store.snapshot.effective("shop", "checkout").config["warmup_seconds"] == 60

    seen: list = []
    after = source.watch_once(resource_version, seen.append)
    assert after == ""  # the recorded stream ends in 410 Expired: relist
    assert seen == ["MODIFIED", "ADDED", "MODIFIED", "BOOKMARK"]
    effective = store.snapshot.effective("shop", "checkout")
    assert effective.config["warmup_seconds"] == 30  # the invalid -1 update was rejected; 30 stays
    assert effective.config["lane_mode"] == "strict"
    assert any("spec.lossless.warmup.seconds: must be >= 0" in e["message"] for e in store.status()["errors"])
    watch_call = kube.calls("GET", POLICIES + "?")[0][1]
    assert "watch=True" in watch_call or "watch=true" in watch_call
    assert "resourceVersion=7000" in watch_call

    source.relist()  # after the 410: the relist drops what is gone and the errors with it
    assert sorted(store.snapshot.policies) == ["pilotfish-system/cluster-defaults", "shop/checkout-lanes"]
    assert store.snapshot.effective("shop", "checkout").config["warmup_seconds"] == 120


def test_the_watch_thread_keeps_the_store_current_on_its_own(kube: FakeKube) -> None:
    store = PolicyStore("pilotfish-system")
    source = KubeSource(store, kube.api_client(), watch_timeout=5, retry_delay=0.1)
    source.start()
    try:
        eventually(
            lambda: (
                "shop/checkout-lanes" in store.snapshot.policies
                and "shop/shop-ns" not in store.snapshot.policies
            )
        )
        assert len(kube.calls("GET", POLICIES)) >= 3  # list, watch, relist (, watch)
    finally:
        source.stop()


# ------------------------------------------------------------------ registry


def started_registry(kube: FakeKube) -> KubeRegistry:
    registry = KubeRegistry(kube.api_client())
    registry.start()
    eventually(lambda: registry.status()["pods"] == 3 and registry.status()["endpointslices"] == 2)
    return registry


def test_instances_come_from_endpointslices_joined_with_pods_and_their_registration(kube: FakeKube) -> None:
    registry = started_registry(kube)
    try:
        version, listing = registry.instances("shop", "checkout")
        assert listing == [
            {
                "pod": OWN_POD,
                "ip": "10.244.1.17",
                "port": 8080,
                "app": "checkout",
                "tag": "",
                "registered_at": 1795316000.5,
                "state": "registered",
                "ready": True,
                "terminating": False,
            },
            {
                "pod": "checkout-gray-5c6d7e8f9a-fghij",
                "ip": "10.244.2.9",
                "port": 8080,
                "app": "checkout",
                "tag": "gray",
                "registered_at": None,
                "state": "unregistered",
                "ready": False,
                "terminating": False,
            },
        ]
        cart = registry.instances("shop", "cart")[1]
        assert [(i["pod"], i["tag"], i["app"], i["port"]) for i in cart] == [
            ("cart-6b5a4c3d2e-klmno", "blue", "cart", 9000)  # MSE's alicloud.service.tag is read too
        ]
        assert registry.instances("other", "checkout")[1] == []
        assert version == registry.instances("shop", "checkout")[0]  # stable
    finally:
        registry.stop()


def cluster_client(kube: FakeKube) -> TestClient:
    api = kube.api_client()
    service = ConfigService.in_cluster("pilotfish-system", api_client=api)
    app = create_app()
    attach(app, service)
    return TestClient(app)


def auth(token: str) -> dict:
    return {"Authorization": "Bearer " + token}


def test_a_pod_registers_itself_and_the_state_lands_on_its_pod_annotation(kube: FakeKube) -> None:
    with cluster_client(kube) as http:
        service = http.app.state.config_service  # type: ignore[attr-defined]
        eventually(lambda: service.registry.status()["pods"] == 3)
        gray = "checkout-gray-5c6d7e8f9a-fghij"
        answer = http.post(
            "/v1/register", json={"pod": gray, "state": "registered"}, headers=auth("gray-pod-token")
        )
        assert answer.status_code == 200, answer.text
        patch = kube.calls("PATCH", "/api/v1/namespaces/shop/pods/" + gray)[-1][2]
        stored = json.loads(patch["metadata"]["annotations"][ANNOTATION])
        assert stored == {"state": "registered", "registeredAt": answer.json()["registered_at"]}
        listing = http.get(
            "/v1/instances", params={"service": "checkout"}, headers=auth("gray-pod-token")
        ).json()
        assert {i["pod"]: i["state"] for i in listing["instances"]}[gray] == "registered"

        patches = len(kube.calls("PATCH", "/api/v1/"))
        http.post("/v1/register", json={"state": "registered"}, headers=auth("gray-pod-token"))
        assert len(kube.calls("PATCH", "/api/v1/")) == patches  # a renewal with no change writes nothing

        offline = http.post("/v1/register", json={"state": "offline"}, headers=auth("gray-pod-token")).json()
        assert offline["registered_at"] == answer.json()["registered_at"]  # the warm-up clock is kept
        assert http.post("/v1/deregister", json={}, headers=auth("gray-pod-token")).status_code == 200
        assert ANNOTATION not in kube.pods[("shop", gray)]["metadata"]["annotations"]


def test_a_pod_may_not_change_another_pods_registration(kube: FakeKube) -> None:
    with cluster_client(kube) as http:
        answer = http.post(
            "/v1/register",
            json={"pod": "checkout-gray-5c6d7e8f9a-fghij", "state": "offline"},
            headers=auth("checkout-pod-token"),
        )
        assert answer.status_code == 403
        assert "may only change its own registration" in answer.json()["error"]
        other_ns = http.post(
            "/v1/deregister", json={"namespace": "other", "pod": OWN_POD}, headers=auth("checkout-pod-token")
        )
        assert other_ns.status_code == 403
        assert kube.calls("PATCH", "/api/v1/") == []


def test_every_call_needs_a_valid_token_and_reads_only_its_own_namespace(kube: FakeKube) -> None:
    with cluster_client(kube) as http:
        assert http.get("/v1/config", params={"app": "checkout"}).status_code == 401
        assert http.get("/v1/status").status_code == 401
        assert http.get("/v1/config", params={"app": "checkout"}, headers=auth("forged")).status_code == 401
        denied = http.get(
            "/v1/config", params={"app": "x", "namespace": "kube-system"}, headers=auth("checkout-pod-token")
        )
        assert denied.status_code == 403
        service = http.app.state.config_service  # type: ignore[attr-defined]
        eventually(lambda: "shop/checkout-lanes" in service.store.snapshot.policies)
        config = http.get("/v1/config", params={"app": "checkout"}, headers=auth("checkout-pod-token")).json()
        assert config["config"]["lane_mode"] == "strict"
        status = http.get("/v1/status", headers=auth("checkout-pod-token")).json()
        assert status["source"]["mode"] == "cluster" and status["auth"] == "tokenreview"


def test_only_changes_that_matter_to_an_instance_list_wake_the_long_polls() -> None:
    pods = load("pods.json")["items"]
    registry = KubeRegistry()
    registry.replace("Pod", pods)
    before = registry.changes.generation
    status_only = json.loads(json.dumps(pods[0]))
    status_only["status"]["containerStatuses"] = [{"name": "app", "restartCount": 1, "ready": True}]
    status_only["status"]["conditions"] = [{"type": "ContainersReady", "status": "True"}]
    status_only["metadata"]["resourceVersion"] = "9999"
    registry.apply("Pod", "MODIFIED", status_only)
    assert registry.changes.generation == before
    became_ready = json.loads(json.dumps(status_only))  # warm-up of a pod without the agent starts here
    became_ready["status"]["conditions"].append(
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T04:00:00Z"}
    )
    registry.apply("Pod", "MODIFIED", became_ready)
    assert registry.changes.generation == before + 1
    before += 1
    relabelled = json.loads(json.dumps(pods[0]))
    relabelled["metadata"]["labels"]["pilotfish.io/tag"] = "blue"
    registry.apply("Pod", "MODIFIED", relabelled)
    assert registry.changes.generation == before + 1
