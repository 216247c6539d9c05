"""The user's story on the local cluster: pilotfish installed with ``kubectl apply -k deploy/base``.

The webhook and config service run as pods (the real in-cluster code: certificate Secret,
caBundle patch, CRD watch, Pods/EndpointSlices registry, TokenReview); a sample app is
deployed, its namespace labelled and its Deployment restarted with kubectl; every new pod must
come up injected and ready, and later changes (``kubectl set env``, a GovernancePolicy) must
reach the running agents. Needs root and the node's tools (skipped with what is missing).
"""

from __future__ import annotations

import base64
import json
import os
import textwrap
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from support.cluster import KUBECTL, Api
from support.wait import eventually

Obj = Dict[str, Any]
ROOT = Path(__file__).resolve().parents[2]
STATUS_PORT = 55199

SHOP = textwrap.dedent(
    """
    apiVersion: v1
    kind: Namespace
    metadata: {name: shop}
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: shop}
    spec:
      replicas: 2
      strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          terminationGracePeriodSeconds: 5
          containers:
          - name: web
            image: python:3.11
            command: [python3, -m, http.server, "8000"]
            ports: [{name: http, containerPort: 8000}]
            readinessProbe: {tcpSocket: {port: http}, periodSeconds: 1}
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web, namespace: shop}
    spec:
      selector: {app: web}
      ports: [{name: http, port: 80, targetPort: http}]
    """
)


def _missing() -> List[str]:
    from hack.cluster.network import missing_requirements

    return missing_requirements()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Api]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed on this machine")
    missing = _missing()
    if missing:
        pytest.skip("the local cluster's node cannot run here: " + "; ".join(missing))
    from hack.cluster.cluster import Cluster

    started = time.monotonic()
    # Not under /tmp: a pod's emptyDir at /tmp (deploy/base has one) would hide the state
    # directory from the mounts that follow it in the container's mount namespace.
    running = Cluster(ROOT / "build" / "cluster-tests" / "pilotfish", node=True).start()
    print("local cluster started in %.1f s" % (time.monotonic() - started))
    try:
        yield Api(running)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def pilotfish(cluster: Api) -> Api:
    """deploy/base applied and its two replicas available; the sample app running, not injected."""
    cluster.kubectl("apply", "-k", str(ROOT / "deploy" / "base"))
    cluster.kubectl("-n", "pilotfish-system", "rollout", "status", "deployment/pilotfish", "--timeout=120s")
    cluster.kubectl("apply", "-f", "-", input=SHOP)
    cluster.kubectl("-n", "shop", "rollout", "status", "deployment/web", "--timeout=120s")
    return cluster


def pods(api: Api, namespace: str, selector: str) -> List[Obj]:
    out = api.kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def agent_status(pod: Obj) -> Obj:
    url = "http://%s:%d/status" % (pod["status"]["podIP"], STATUS_PORT)
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def ready_agent(pod: Obj) -> Any:
    status = agent_status(pod)
    return status if status["ready"] else None


def app_pods(api: Api, count: int = 2) -> List[Obj]:
    """The sample app's pods once exactly ``count`` are left (old ones gone after a rollout)."""
    return eventually(
        lambda: (lambda ps: ps if len(ps) == count else None)(pods(api, "shop", "app=web")),
        timeout=30,
        what="%d pods" % count,
    )


def test_deploy_base_runs_the_webhook_with_its_in_cluster_tls(pilotfish: Api) -> None:
    secret = json.loads(
        pilotfish.kubectl(
            "-n", "pilotfish-system", "get", "secret", "pilotfish-webhook-tls", "-o", "json"
        ).stdout
    )
    assert {"ca.crt", "tls.crt", "tls.key"} <= set(secret["data"])
    config = json.loads(
        pilotfish.kubectl("get", "mutatingwebhookconfiguration", "pilotfish", "-o", "json").stdout
    )
    bundles = {w["clientConfig"].get("caBundle") for w in config["webhooks"]}
    assert len(bundles) == 1 and base64.b64decode(bundles.pop()).startswith(b"-----BEGIN CERTIFICATE-----")
    # shop was created after pilotfish started: the CA reaches it within the keeper's short round
    published = eventually(
        lambda: pilotfish.store.get("configmaps", "shop", "pilotfish-ca"),
        timeout=30,
        what="pilotfish-ca in shop",
    )
    assert "BEGIN CERTIFICATE" in published["data"]["ca.crt"]
    webhook_pods = pods(pilotfish, "pilotfish-system", "app.kubernetes.io/name=pilotfish")
    assert len(webhook_pods) == 2 and all(p["status"]["phase"] == "Running" for p in webhook_pods)
    assert not any("pilotfish.io/status" in (p["metadata"].get("annotations") or {}) for p in webhook_pods)


def test_label_and_restart_injects_every_new_pod(pilotfish: Api) -> None:
    before = {p["metadata"]["name"] for p in pods(pilotfish, "shop", "app=web")}
    assert all(
        "pilotfish.io/status" not in (p["metadata"].get("annotations") or {})
        for p in pods(pilotfish, "shop", "app=web")
    )
    pilotfish.kubectl("label", "namespace", "shop", "pilotfish.io/inject=enabled")
    pilotfish.kubectl("-n", "shop", "rollout", "restart", "deployment")
    pilotfish.kubectl("-n", "shop", "rollout", "status", "deployment/web", "--timeout=120s")
    now = app_pods(pilotfish)
    assert not before & {p["metadata"]["name"] for p in now}
    for pod in now:
        status = json.loads(pod["metadata"]["annotations"]["pilotfish.io/status"])
        assert status["containers"] == ["web"]
        init = {s["name"]: s for s in pod["status"]["initContainerStatuses"]}
        assert init["pilotfish-init"]["state"]["terminated"]["exitCode"] == 0
        container = pod["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["port"] == STATUS_PORT
        agent = eventually(lambda p=pod: ready_agent(p), timeout=30, what="agent ready")  # type: ignore[misc]
        assert agent["state"] == "ready" and agent["config"]["pod_name"] == pod["metadata"]["name"]


def test_a_host_network_pod_is_skipped_with_the_warning_kubectl_prints(pilotfish: Api) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "on-the-node", "namespace": "shop"},
        "spec": {
            "hostNetwork": True,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "sleep",
                    "image": "python:3.11",
                    "command": ["python3", "-c", "import time; time.sleep(300)"],
                }
            ],
        },
    }
    done = pilotfish.kubectl("apply", "--dry-run=server", "-f", "-", input=json.dumps(pod))
    assert "Warning: pilotfish: not injected: hostNetwork pod" in done.stderr
    done = pilotfish.kubectl("apply", "-f", "-", input=json.dumps(pod))
    assert "Warning: pilotfish: not injected: hostNetwork pod" in done.stderr
    stored = json.loads(pilotfish.kubectl("-n", "shop", "get", "pod", "on-the-node", "-o", "json").stdout)
    assert not stored["spec"].get("initContainers")
    pilotfish.kubectl("-n", "shop", "delete", "pod", "on-the-node", "--wait=false")


def test_set_env_rolls_out_and_the_agent_reports_the_new_value(pilotfish: Api) -> None:
    pilotfish.kubectl("-n", "shop", "set", "env", "deployment/web", "PILOTFISH_LOG_LEVEL=debug")
    pilotfish.kubectl("-n", "shop", "rollout", "status", "deployment/web", "--timeout=120s")
    now = app_pods(pilotfish)
    for pod in now:
        assert {"name": "PILOTFISH_LOG_LEVEL", "value": "debug"} in pod["spec"]["containers"][0]["env"]
        eventually(
            lambda p=pod: agent_status(p)["config"]["log_level"] == "debug",  # type: ignore[misc]
            timeout=30,
            what="the agent's new log level",
        )


def test_a_governance_policy_reaches_running_agents_without_a_restart(pilotfish: Api) -> None:
    running = pods(pilotfish, "shop", "app=web")
    names = {p["metadata"]["name"] for p in running}
    policy = {
        "apiVersion": "pilotfish.io/v1alpha1",
        "kind": "GovernancePolicy",
        "metadata": {"name": "shop-ignores", "namespace": "shop"},
        "spec": {"lossless": {"ignorePaths": ["/not-traffic"]}},
    }
    pilotfish.kubectl("apply", "-f", "-", input=json.dumps(policy))
    for pod in running:
        eventually(
            lambda p=pod: "/not-traffic" in agent_status(p)["config"]["ignore_paths"],  # type: ignore[misc]
            timeout=30,
            what="the policy in the agent",
        )
    assert {p["metadata"]["name"] for p in pods(pilotfish, "shop", "app=web")} == names


def test_kubectl_logs_and_describe_show_the_pod(pilotfish: Api) -> None:
    pod = pods(pilotfish, "shop", "app=web")[0]
    name = pod["metadata"]["name"]
    urllib.request.urlopen("http://%s:8000/" % pod["status"]["podIP"], timeout=5).read()
    logs = eventually(
        lambda: pilotfish.kubectl("-n", "shop", "logs", name, "-c", "web").stdout,
        timeout=30,
        what="log lines",
    )
    assert '"GET / HTTP/1.1" 200' in logs
    described = pilotfish.kubectl("-n", "shop", "describe", "pod", name).stdout
    assert "Started" in described and "pilotfish-init" in described
    assert os.path.exists(str(pilotfish.kubeconfig))


def test_a_deleted_pod_drains_as_a_terminating_endpoint_then_goes(pilotfish: Api) -> None:
    victim = pods(pilotfish, "shop", "app=web")[0]
    name = victim["metadata"]["name"]

    def endpoint() -> Any:
        for eps in pilotfish.store.list("endpointslices", "shop"):
            if eps["metadata"]["labels"].get("kubernetes.io/service-name") != "web":
                continue
            for ep in eps.get("endpoints") or []:
                if ep["targetRef"]["name"] == name:
                    return ep
        return None

    assert endpoint()["conditions"] == {"ready": True, "serving": True, "terminating": False}
    pilotfish.kubectl("-n", "shop", "delete", "pod", name, "--wait=false")
    draining = eventually(
        lambda: (lambda ep: ep if ep and ep["conditions"]["terminating"] else None)(endpoint()),
        timeout=30,
        what="terminating",
    )
    assert draining["conditions"]["ready"] is False
    eventually(
        lambda: pilotfish.store.get("pods", "shop", name) is None, timeout=60, what="the pod to be finalized"
    )
    assert endpoint() is None
    app_pods(pilotfish)  # the ReplicaSet replaced it
