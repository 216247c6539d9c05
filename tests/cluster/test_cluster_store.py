"""The local cluster's object store: versions, conflicts, watches, graceful deletion, tokens."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Tuple

import pytest

from hack.cluster import store as store_module
from hack.cluster.store import ApiError, Store


@pytest.fixture
def store() -> Store:
    s = Store()
    s.create("namespaces", {"metadata": {"name": "shop"}})
    return s


def cm(name: str, **data: str) -> Dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "shop"},
        "data": data,
    }


def test_create_assigns_identity_and_versions_grow(store: Store) -> None:
    a = store.create("configmaps", cm("a", x="1"))
    b = store.create("configmaps", cm("b"))
    assert a["metadata"]["uid"] and a["metadata"]["creationTimestamp"].endswith("Z")
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert store.get("configmaps", "shop", "a") == a


def test_objects_are_copied_in_and_out(store: Store) -> None:
    obj = cm("a", x="1")
    store.create("configmaps", obj)
    obj["data"]["x"] = "changed"
    got = store.get("configmaps", "shop", "a")
    assert got is not None
    got["data"]["x"] = "changed too"
    assert store.get("configmaps", "shop", "a")["data"] == {"x": "1"}  # type: ignore[index]


def test_create_twice_is_409_already_exists(store: Store) -> None:
    store.create("configmaps", cm("a"))
    with pytest.raises(ApiError) as err:
        store.create("configmaps", cm("a"))
    assert (err.value.code, err.value.reason) == (409, "AlreadyExists")


def test_create_in_missing_namespace_is_404(store: Store) -> None:
    obj = cm("a")
    obj["metadata"]["namespace"] = "nowhere"
    with pytest.raises(ApiError) as err:
        store.create("configmaps", obj)
    assert err.value.code == 404


def test_update_with_stale_resource_version_is_409_conflict(store: Store) -> None:
    first = store.create("configmaps", cm("a", x="1"))
    second = store.update("configmaps", dict(first, data={"x": "2"}))
    with pytest.raises(ApiError) as err:
        store.update("configmaps", dict(first, data={"x": "3"}))
    assert (err.value.code, err.value.reason) == (409, "Conflict")
    assert store.get("configmaps", "shop", "a")["data"] == second["data"]  # type: ignore[index]


def test_generation_moves_only_with_the_spec(store: Store) -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}},
    }
    created = store.create("deployments", dep)
    assert created["metadata"]["generation"] == 1
    relabelled = dict(created, metadata=dict(created["metadata"], labels={"x": "y"}))
    assert store.update("deployments", relabelled)["metadata"]["generation"] == 1
    scaled = store.get("deployments", "shop", "web")
    assert scaled is not None
    scaled["spec"]["replicas"] = 3
    assert store.update("deployments", scaled)["metadata"]["generation"] == 2


def test_subscribers_get_existing_objects_then_changes_in_order(store: Store) -> None:
    store.create("configmaps", cm("a"))
    seen: List[Tuple[str, str]] = []
    done = threading.Event()

    def callback(kind: str, obj: Dict[str, Any]) -> None:
        seen.append((kind, obj["metadata"]["name"]))
        if kind == "DELETED":
            done.set()

    store.subscribe("configmaps", callback)
    store.create("configmaps", cm("b"))
    store.delete("configmaps", "shop", "a")
    assert done.wait(10)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "a")]


def test_watch_resumes_from_a_version_and_old_versions_are_gone(store: Store) -> None:
    start = store.create("configmaps", cm("a"))["metadata"]["resourceVersion"]
    store.create("configmaps", cm("b"))
    store.create("secrets", {"metadata": {"name": "s", "namespace": "shop"}})
    events = store.events_since("configmaps", int(start))
    assert [(t, o["metadata"]["name"]) for _, t, o in events] == [("ADDED", "b")]
    small = Store(log_size=3)
    small.create("namespaces", {"metadata": {"name": "n"}})
    for i in range(5):
        small.create("configmaps", dict(cm("c%d" % i), metadata={"name": "c%d" % i, "namespace": "n"}))
    with pytest.raises(ApiError) as err:
        small.events_since("configmaps", 1)
    assert err.value.code == 410
    assert len(small.events_since("configmaps", small.resource_version - 1)) == 1


def test_pod_delete_is_graceful_until_finalized(store: Store) -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    store.create("pods", pod)
    store.delete("pods", "shop", "p")
    marked = store.get("pods", "shop", "p")
    assert marked is not None
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 30
    store.finalize_delete("pods", "shop", "p")
    assert store.get("pods", "shop", "p") is None


def test_deleting_an_owner_deletes_what_it_owns(store: Store) -> None:
    owner = store.create("configmaps", cm("owner"))
    owned = cm("owned")
    owned["metadata"]["ownerReferences"] = [
        {"uid": owner["metadata"]["uid"], "kind": "ConfigMap", "name": "owner"}
    ]
    store.create("configmaps", owned)
    store.delete("configmaps", "shop", "owner")
    assert store.get("configmaps", "shop", "owned") is None


def test_services_get_distinct_cluster_ips(store: Store) -> None:
    svc = {"metadata": {"namespace": "shop"}, "spec": {"ports": [{"port": 80}]}}
    a = store.create("services", dict(svc, metadata={"name": "a", "namespace": "shop"}))
    b = store.create("services", dict(svc, metadata={"name": "b", "namespace": "shop"}))
    assert a["spec"]["clusterIP"] != b["spec"]["clusterIP"]
    assert a["spec"]["clusterIP"].startswith("10.96.")
    assert a["spec"]["ports"][0]["targetPort"] == 80


def test_tokens_are_accepted_for_their_audience_while_the_pod_exists(store: Store) -> None:
    pod = store.create("pods", {"metadata": {"name": "p", "namespace": "shop"}, "spec": {"containers": []}})
    token = store.issue_token("shop", "default", "pilotfish", 3600, pod)
    ok = store.review_token(token, ["pilotfish"])
    assert ok["authenticated"] and ok["user"]["username"] == "system:serviceaccount:shop:default"
    assert not store.review_token(token, ["someone-else"])["authenticated"]
    assert not store.review_token(token[:-2] + "xx", ["pilotfish"])["authenticated"]
    store.delete("pods", "shop", "p", grace_seconds=0)
    assert not store.review_token(token, ["pilotfish"])["authenticated"]
    assert store_module.KUBERNETES_SERVICE_IP == "10.96.0.1"
