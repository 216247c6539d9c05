"""The mutation's limits: how many containers it injects, and which status ports it may hand out.

A pod names its containers to inject in ``pilotfish.io/containers``; every injected container
needs its own status port in the pod's shared network namespace. Both are bounded: at most
``MAX_INJECTED_CONTAINERS`` containers (beyond that the pod is admitted as it came, with a
warning naming the limit), and never a port above 65535 (a container with no free port left
is skipped and says so). The work is linear in the pod's size.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List

from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.mutate import MAX_INJECTED_CONTAINERS, InjectionConfig
from pilotfish_webhook.admission.review import review
from support.pods import admission_review, check_mutation


def pod_with(containers: List[Dict[str, Any]], names: str) -> Dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "many",
            "namespace": "shop",
            "labels": {"app": "shop"},
            "annotations": {c.CONTAINERS_ANNOTATION: names},
        },
        "spec": {"containers": containers},
    }


def container(name: str, ports: List[int] = ()) -> Dict[str, Any]:  # type: ignore[assignment]
    return {"name": name, "image": "shop:1", "ports": [{"containerPort": p} for p in ports]}


def env_of(item: Dict[str, Any]) -> Dict[str, Any]:
    return {e["name"]: e.get("value") for e in item.get("env", [])}


def test_up_to_the_limit_every_named_container_is_injected() -> None:
    containers = [container("c%03d" % i, [8000 + i]) for i in range(MAX_INJECTED_CONTAINERS)]
    mutation = check_mutation(pod_with(containers, ",".join(x["name"] for x in containers)))
    assert len(mutation.injected) == MAX_INJECTED_CONTAINERS


def test_a_pod_naming_more_containers_than_the_limit_is_admitted_unchanged_with_a_warning() -> None:
    containers = [container("c%03d" % i, [8000 + i]) for i in range(MAX_INJECTED_CONTAINERS + 1)]
    pod = pod_with(containers, ",".join(x["name"] for x in containers))
    response = review(admission_review(pod, uid="u-many"), InjectionConfig())["response"]
    assert response["allowed"] is True and "patch" not in response
    [warning] = response["warnings"]
    assert "limit of %d" % MAX_INJECTED_CONTAINERS in warning and "admitted unchanged" in warning
    assert "%d containers" % (MAX_INJECTED_CONTAINERS + 1) in warning


def test_names_that_do_not_exist_count_towards_the_limit_too() -> None:
    """Otherwise a long annotation of unknown names would grow the status annotation unbounded."""
    names = ",".join("ghost-%d" % i for i in range(10_000))
    response = review(admission_review(pod_with([container("shop", [8080])], names)), InjectionConfig())
    assert "patch" not in response["response"]
    assert "limit of %d" % MAX_INJECTED_CONTAINERS in response["response"]["warnings"][0]


def test_status_ports_never_pass_65535_and_a_container_without_a_free_port_is_skipped() -> None:
    # The first container declares every port from 55199 up to 65530: six are left.
    busy = container("busy", list(range(c.STATUS_PORT, 65531)))
    others = [container("c%d" % i, [8000 + i]) for i in range(10)]
    names = ",".join(["busy", *(x["name"] for x in others)])
    mutation = check_mutation(pod_with([busy, *others], names))
    status = json.loads(mutation.pod["metadata"]["annotations"][c.STATUS_ANNOTATION])
    assigned = [
        int(env_of(x)[c.ENV_STATUS_PORT])
        for x in mutation.pod["spec"]["containers"]
        if c.ENV_STATUS_PORT in env_of(x)
    ]
    assert sorted(assigned) == list(range(65531, 65536))
    assert len(mutation.injected) == 5
    assert len(status["skipped"]) == 6
    assert all("no free status port" in why and "65535" in why for why in status["skipped"].values())


def test_a_pod_of_thousands_of_containers_naming_them_all_gets_a_bounded_answer() -> None:
    containers = [container("c%05d" % i) for i in range(20_000)]
    pod = pod_with(containers, ",".join(x["name"] for x in containers))
    answer = review(admission_review(pod), InjectionConfig())["response"]
    assert "patch" not in answer and len(json.dumps(answer)) < 1024


def test_one_named_container_among_thousands_is_injected_with_a_small_patch() -> None:
    containers = [container("c%05d" % i) for i in range(20_000)]
    containers[-1]["ports"] = [{"containerPort": 8080}]
    answer = review(admission_review(pod_with(containers, "c19999")), InjectionConfig())["response"]
    patch = json.loads(base64.b64decode(answer["patch"]))
    assert all(
        op["path"].startswith(
            (
                "/spec/containers/19999/",
                "/spec/volumes",
                "/spec/initContainers",
                "/metadata/annotations",
                "/spec/terminationGrace",
            )
        )
        for op in patch
    ), [op["path"] for op in patch][:5]
