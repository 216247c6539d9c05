"""The local cluster's API server, as kubectl 1.32 and the ``kubernetes`` client use it (no node).

Errors come back as ``Status`` objects with the real codes, patches merge the way kubectl
expects (env by name), watches resume from a resourceVersion and answer 410 when it is too old,
custom resources are served from their CRD, and dry runs store nothing.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any, Dict, List

import pytest
from support.cluster import Api
from support.wait import eventually

Obj = Dict[str, Any]


def deployment(name: str, namespace: str, env: List[Obj], replicas: int = 1) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "python:3.11",
                            "env": env,
                            "ports": [{"name": "http", "containerPort": 8000}],
                        },
                        {"name": "side", "image": "python:3.11"},
                    ]
                },
            },
        },
    }


@pytest.fixture(scope="module")
def ns(api: Api) -> str:
    api.store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apitest"}})
    return "apitest"


def test_kubectl_apply_get_delete_round_trip(api: Api, ns: str) -> None:
    manifest = textwrap.dedent(
        """
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: apitest}
        data: {colour: blue}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: apitest}
        spec:
          selector: {app: web}
          ports: [{name: http, port: 80, targetPort: http}]
        """
    )
    first = api.kubectl("apply", "-f", "-", input=manifest)
    assert "configmap/settings created" in first.stdout and "service/web created" in first.stdout
    again = api.kubectl("apply", "-f", "-", input=manifest)
    assert "configmap/settings unchanged" in again.stdout and "service/web unchanged" in again.stdout
    changed = api.kubectl("apply", "-f", "-", input=manifest.replace("blue", "green"))
    assert "configmap/settings configured" in changed.stdout
    got = json.loads(api.kubectl("-n", ns, "get", "configmap", "settings", "-o", "json").stdout)
    assert got["data"] == {"colour": "green"}
    svc = json.loads(api.kubectl("-n", ns, "get", "svc", "web", "-o", "json").stdout)
    assert svc["spec"]["clusterIP"].startswith("10.")
    api.kubectl("-n", ns, "label", "configmap", "settings", "tier=gold")
    api.kubectl("-n", ns, "annotate", "configmap", "settings", "note=hello")
    listed = json.loads(api.kubectl("-n", ns, "get", "configmaps", "-l", "tier=gold", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["settings"]
    assert listed["items"][0]["metadata"]["annotations"]["note"] == "hello"
    api.kubectl("-n", ns, "delete", "configmap", "settings")
    assert api.store.get("configmaps", ns, "settings") is None


def test_not_found_is_a_404_status_kubectl_prints(api: Api) -> None:
    done = api.kubectl("get", "namespace", "nowhere", check=False)
    assert done.returncode != 0
    assert 'Error from server (NotFound): namespaces "nowhere" not found' in done.stderr
    done = api.kubectl("-n", "default", "get", "deployment", "nope", check=False)
    assert 'Error from server (NotFound): deployments.apps "nope" not found' in done.stderr


def test_create_twice_is_409_already_exists_and_a_stale_update_is_409_conflict(api: Api, ns: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(api.client())
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "twice"}, "data": {"a": "1"}}
    created = core.create_namespaced_config_map(ns, body)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map(ns, body)
    assert err.value.body is not None
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
    fresh = core.read_namespaced_config_map("twice", ns)
    fresh.data = {"a": "2"}
    core.replace_namespaced_config_map("twice", ns, fresh)
    created.data = {"a": "3"}  # still carries the first resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("twice", ns, created)
    assert err.value.body is not None
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"
    assert core.read_namespaced_config_map("twice", ns).data == {"a": "2"}


def test_invalid_objects_are_422_naming_the_field(api: Api, ns: str) -> None:
    bad = deployment("bad", ns, [])
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    done = api.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert done.returncode != 0
    assert 'The Deployment "bad" is invalid: spec.template.metadata.labels: Invalid value' in done.stderr
    port = deployment("port", ns, [])
    port["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    done = api.kubectl("apply", "-f", "-", input=json.dumps(port), check=False)
    assert "spec.template.spec.containers[0].ports[0].containerPort" in done.stderr
    name = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name", "namespace": ns}}
    done = api.kubectl("apply", "-f", "-", input=json.dumps(name), check=False)
    assert 'The ConfigMap "Not_A_Name" is invalid: metadata.name: Invalid value' in done.stderr


def test_kubectl_set_env_merges_env_by_name_in_the_right_container(api: Api, ns: str) -> None:
    env = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    api.kubectl("apply", "-f", "-", input=json.dumps(deployment("envs", ns, env)))
    api.kubectl("-n", ns, "set", "env", "deployment/envs", "-c", "app", "B=22", "C=3")
    got = api.store.get("deployments", ns, "envs")
    assert got is not None
    app, side = got["spec"]["template"]["spec"]["containers"]
    assert app["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "22"},
        {"name": "C", "value": "3"},
    ]
    assert app["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert "env" not in side
    api.kubectl("-n", ns, "set", "env", "deployment/envs", "-c", "app", "A-")
    got = api.store.get("deployments", ns, "envs")
    assert got is not None
    assert [e["name"] for e in got["spec"]["template"]["spec"]["containers"][0]["env"]] == ["B", "C"]


def test_strategic_merge_patch_from_the_client_keeps_other_list_items(api: Api, ns: str) -> None:
    from kubernetes import client

    apps: Any = client.AppsV1Api(api.client())
    apps.create_namespaced_deployment(ns, deployment("smp", ns, [{"name": "A", "value": "1"}]))
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "side", "env": [{"name": "S", "value": "x"}]},
                        {
                            "name": "app",
                            "env": [{"name": "A", "$patch": "delete"}, {"name": "N", "value": "new"}],
                        },
                    ]
                }
            }
        }
    }
    apps.patch_namespaced_deployment("smp", ns, patch)  # the client sends strategic merge for dicts
    got = apps.read_namespaced_deployment("smp", ns)
    containers = {c.name: c for c in got.spec.template.spec.containers}
    assert [c.name for c in got.spec.template.spec.containers] == ["app", "side"]
    assert [(e.name, e.value) for e in containers["app"].env] == [("N", "new")]
    assert [(e.name, e.value) for e in containers["side"].env] == [("S", "x")]
    assert got.metadata.generation == 2


def test_watch_resumes_from_a_resource_version_and_too_old_is_410(api: Api, ns: str) -> None:
    from kubernetes import client, watch
    from kubernetes.client.exceptions import ApiException

    core: Any = client.CoreV1Api(api.client())
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    for i in range(3):
        core.create_namespaced_config_map(ns, {"metadata": {"name": "w%d" % i}, "data": {"i": str(i)}})
    core.delete_namespaced_config_map("w1", ns)
    seen = []
    for event in watch.Watch().stream(
        core.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=2
    ):
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "w0"), ("ADDED", "w1"), ("ADDED", "w2"), ("DELETED", "w1")]
    for i in range(600):  # push the start version out of the (500-entry) change log
        api.store.create("events", {"metadata": {"name": "churn%d" % i, "namespace": ns}, "reason": "Churn"})
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, ns, resource_version=start, timeout_seconds=2
        ):
            pass
    assert err.value.status == 410


def test_kubectl_watch_by_name_sees_changes(api: Api, ns: str) -> None:
    import subprocess

    from support.cluster import KUBECTL

    if KUBECTL is None:
        pytest.skip("kubectl is not installed on this machine")
    api.store.create("configmaps", {"metadata": {"name": "watched", "namespace": ns}, "data": {"v": "0"}})
    proc = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            str(api.kubeconfig),
            "-n",
            ns,
            "get",
            "configmap",
            "watched",
            "-w",
            "-o",
            "json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(lambda: _reads_object(proc), timeout=30, what="kubectl's first object")
        api.kubectl("-n", ns, "patch", "configmap", "watched", "--type=merge", "-p", '{"data":{"v":"1"}}')
        second = eventually(lambda: _reads_object(proc), timeout=30, what="the change on the watch")
        assert second["data"] == {"v": "1"}
    finally:
        proc.kill()
        proc.wait()


def _reads_object(proc: Any) -> Any:
    text = ""
    while True:
        line = proc.stdout.readline()
        if not line:
            return None
        text += line
        if line.startswith("}"):
            return json.loads(text)


def test_dry_run_stores_nothing(api: Api, ns: str) -> None:
    manifest = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry", "namespace": ns}}
    )
    done = api.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    assert "server dry run" in done.stdout
    assert api.store.get("configmaps", ns, "dry") is None


def test_custom_resources_are_served_from_their_crd_and_validated(api: Api) -> None:
    api.kubectl("apply", "-f", "deploy/base/crd-governancepolicy.yaml")
    api.kubectl("create", "namespace", "crs", check=False)  # protobuf create: not supported, apply instead
    api.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "crs"}}),
    )
    policy = {
        "apiVersion": "pilotfish.io/v1alpha1",
        "kind": "GovernancePolicy",
        "metadata": {"name": "p", "namespace": "crs"},
        "spec": {"selector": {"apps": ["web"]}},
    }
    eventually(
        lambda: api.kubectl("apply", "-f", "-", input=json.dumps(policy), check=False).returncode == 0,
        timeout=30,
        what="CRD served",
    )
    listed = json.loads(api.kubectl("get", "governancepolicies", "-A", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["p"]
    api.kubectl("-n", "crs", "label", "gp", "p", "x=y")
    assert api.store.get("governancepolicies.pilotfish.io", "crs", "p")["metadata"]["labels"] == {"x": "y"}
    bad = dict(policy, metadata={"name": "bad", "namespace": "crs"}, spec={"selector": "not-a-map"})
    done = api.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert done.returncode != 0 and 'The GovernancePolicy "bad" is invalid: spec.selector' in done.stderr


def test_token_review_accepts_issued_tokens_for_their_audience(api: Api, ns: str) -> None:
    from kubernetes import client

    pod = api.store.create(
        "pods",
        {"metadata": {"name": "tok", "namespace": ns}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
    )
    token = api.store.issue_token(ns, "default", "pilotfish", 600, pod)
    auth: Any = client.AuthenticationV1Api(api.client())
    review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=["pilotfish"]))
    answer = auth.create_token_review(review)
    assert (
        answer.status.authenticated and answer.status.user.username == "system:serviceaccount:%s:default" % ns
    )
    wrong = auth.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token, audiences=["x"]))
    )
    assert not wrong.status.authenticated


def test_namespace_deletion_empties_it_first(api: Api) -> None:
    api.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gone"}}),
    )
    api.kubectl("apply", "-f", "-", input=json.dumps(deployment("d", "gone", [])))
    eventually(lambda: api.store.list("pods", "gone"), timeout=30, what="the Deployment's pod")
    api.kubectl("delete", "namespace", "gone", "--wait=false")
    eventually(
        lambda: api.store.get("namespaces", None, "gone") is None, timeout=30, what="the namespace to go"
    )
    assert api.store.list("pods", "gone") == [] and api.store.list("deployments", "gone") == []


def test_kubectl_create_sends_protobuf_for_these_kinds_and_it_is_understood(api: Api) -> None:
    api.kubectl("create", "namespace", "made")
    api.kubectl("-n", "made", "create", "configmap", "c", "--from-literal=colour=blue")
    api.kubectl("-n", "made", "create", "secret", "generic", "s", "--from-literal=pw=hunter2")
    api.kubectl("-n", "made", "create", "serviceaccount", "robot")
    token = api.kubectl("-n", "made", "create", "token", "robot", "--audience=pilotfish").stdout.strip()
    assert api.store.get("namespaces", None, "made") is not None
    assert api.store.get("configmaps", "made", "c")["data"] == {"colour": "blue"}
    secret = api.store.get("secrets", "made", "s")
    assert secret is not None and secret["data"] == {"pw": "aHVudGVyMg=="} and secret["type"] == "Opaque"
    review = api.store.review_token(token, ["pilotfish"])
    assert review["authenticated"] and review["user"]["username"] == "system:serviceaccount:made:robot"
    done = api.kubectl("-n", "made", "create", "deployment", "d", "--image=busybox", check=False)
    assert done.returncode != 0 and "kubectl apply -f" in done.stderr


def test_rollout_status_fails_once_the_progress_deadline_passes(api: Api, ns: str) -> None:
    stuck = deployment("stuck", ns, [])  # no node here: its pods never become ready
    stuck["spec"]["progressDeadlineSeconds"] = 2
    api.kubectl("apply", "-f", "-", input=json.dumps(stuck))
    done = api.kubectl("-n", ns, "rollout", "status", "deployment/stuck", "--timeout=60s", check=False)
    assert done.returncode != 0
    assert 'deployment "stuck" exceeded its progress deadline' in done.stderr
    conditions = {c["type"]: c for c in api.store.get("deployments", ns, "stuck")["status"]["conditions"]}
    assert conditions["Progressing"]["reason"] == "ProgressDeadlineExceeded"
