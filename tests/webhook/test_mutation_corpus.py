"""Every pod template of the Istio injector corpus, injected.

The corpus (the input manifests of Istio's sidecar-injector tests, Apache-2.0) is read in
place from the directory named by ``PILOTFISH_ISTIO_CORPUS`` and never copied into the
repository; without it these tests skip with a notice (docs/internals.md says where to get
it). For each pod: the JSON patch applies with ``jsonpatch``, the patched pod validates
against the Kubernetes OpenAPI schema, and a second pass adds nothing. The remaining tests
pin what the tricky files must produce (named ports per container, probes that are not
HTTP, opt-out annotations, host network, re-injection, native sidecars, ...).
"""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest
from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.mutate import InjectionConfig
from pilotfish_webhook.admission.review import review
from support.pods import admission_review, check_mutation, corpus_missing, corpus_pods

PODS = corpus_pods()
BY_FILE: Dict[str, Dict[str, Any]] = {}
for _label, _pod in PODS:
    BY_FILE.setdefault(_label.split("#")[0], _pod)

needs_corpus = pytest.mark.skipif(
    not PODS, reason="Istio injector corpus not available: %s" % (corpus_missing() or "no pods in it")
)


def env_of(container: Dict[str, Any]) -> Dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def container(pod: Dict[str, Any], name: str) -> Dict[str, Any]:
    return next(x for x in pod["spec"]["containers"] if x["name"] == name)


@needs_corpus
def test_the_corpus_yields_a_pod_for_every_workload_kind_it_holds() -> None:
    kinds = {label.split(":")[1].split("/")[0] for label, _ in PODS}
    assert {"Deployment", "CronJob", "Job", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod"} <= kinds
    assert {"ReplicationController", "DeploymentConfig"} <= kinds
    assert len(PODS) >= 50


@needs_corpus
@pytest.mark.parametrize("label,pod", PODS, ids=[label for label, _ in PODS])
def test_corpus_pod_patch_applies_validates_and_second_pass_adds_nothing(
    label: str, pod: Dict[str, Any]
) -> None:
    mutation = check_mutation(pod)
    status = json.loads(mutation.pod["metadata"]["annotations"][c.STATUS_ANNOTATION])
    assert status["version"]
    if mutation.injected:
        names = [x["name"] for x in mutation.pod["spec"]["initContainers"]]
        assert names[0] == c.INIT_CONTAINER, "the agent copy must run before every other init container"


@needs_corpus
def test_named_readiness_port_is_resolved_in_the_carried_probe() -> None:
    pod = check_mutation(BY_FILE["named_port.yaml"]).pod
    hello = container(pod, "hello")
    assert hello["readinessProbe"]["httpGet"] == {"path": "/readiness", "port": 55199, "scheme": "HTTP"}
    assert json.loads(env_of(hello)[c.ENV_APP_PROBE]) == {"httpGet": {"port": 80}}


@needs_corpus
def test_https_scheme_is_carried_to_the_agent() -> None:
    pod = check_mutation(BY_FILE["https-probes.yaml"]).pod
    carried = json.loads(env_of(container(pod, "hello"))[c.ENV_APP_PROBE])
    assert carried == {"httpGet": {"port": 3333, "scheme": "HTTPS"}}


@needs_corpus
def test_tcp_readiness_is_carried_and_liveness_is_untouched() -> None:
    original = BY_FILE["tcp-probes.yaml"]
    pod = check_mutation(original).pod
    hello = container(pod, "hello")
    assert json.loads(env_of(hello)[c.ENV_APP_PROBE]) == {"tcpSocket": {"port": 3333}}
    assert hello["livenessProbe"] == container(original, "hello")["livenessProbe"]


@needs_corpus
def test_user_prestop_is_kept_and_named_ports_are_looked_up_per_container() -> None:
    original = BY_FILE["hello-probes.yaml"]
    mutation = check_mutation(original)
    hello = container(mutation.pod, "hello")
    assert hello["lifecycle"] == container(original, "hello")["lifecycle"]
    assert any("preStop is kept" in w for w in mutation.warnings)
    # Only the first container is injected by default; the exec probe of "world" is untouched.
    assert container(mutation.pod, "world") == container(original, "world")


@needs_corpus
def test_exec_readiness_probe_is_left_alone_when_that_container_is_chosen() -> None:
    pod = dict(BY_FILE["hello-probes.yaml"])
    pod["metadata"] = dict(pod["metadata"], annotations={c.CONTAINERS_ANNOTATION: "hello,world"})
    mutation = check_mutation(pod)
    world = container(mutation.pod, "world")
    assert "exec" in world["readinessProbe"]
    assert c.ENV_APP_PROBE not in env_of(world)
    assert mutation.injected == ["hello", "world"]
    assert env_of(container(mutation.pod, "hello"))[c.ENV_OFFLINE_TOKEN] == env_of(world)[c.ENV_OFFLINE_TOKEN]


@needs_corpus
def test_native_sidecar_keeps_its_restart_policy_and_runs_after_the_copy() -> None:
    pod = check_mutation(BY_FILE["native-sidecar.yaml"]).pod
    names = [x["name"] for x in pod["spec"]["initContainers"]]
    assert names == [c.INIT_CONTAINER, "other-sidecar"]
    assert pod["spec"]["initContainers"][1]["restartPolicy"] == "Always"


@needs_corpus
def test_host_network_pod_is_not_injected_and_says_why() -> None:
    answer = review(admission_review(BY_FILE["hello-host-network.yaml"]), InjectionConfig())["response"]
    assert answer["allowed"] is True
    assert any("hostNetwork" in w for w in answer["warnings"])
    patch = json.loads(__import__("base64").b64decode(answer["patch"]))
    assert [op["path"] for op in patch] == ["/metadata/annotations"]


@needs_corpus
def test_a_proxy_only_pod_is_not_injected() -> None:
    mutation = check_mutation(BY_FILE["only-proxy-container.yaml"])
    assert mutation.injected == []
    assert "initContainers" not in mutation.pod["spec"]


@needs_corpus
def test_run_to_completion_pods_get_no_readiness_or_prestop() -> None:
    for name in ("job.yaml", "cronjob.yaml"):
        pod = check_mutation(BY_FILE[name]).pod
        app = pod["spec"]["containers"][0]
        assert "readinessProbe" not in app and "lifecycle" not in app
        assert env_of(app)[c.ENV_PYTHONPATH] == c.BOOTSTRAP_DIR


@needs_corpus
def test_app_name_of_controller_made_pods_comes_from_labels_or_owner() -> None:
    assert env_of(check_mutation(BY_FILE["hello.yaml"]).pod["spec"]["containers"][0])[c.ENV_APP] == "hello"
    custom = check_mutation(BY_FILE["truncate-canonical-name-custom-controller-pod.yaml"]).pod
    assert env_of(custom["spec"]["containers"][0])[c.ENV_APP]
