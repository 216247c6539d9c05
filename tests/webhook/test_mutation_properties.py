"""Property-based: for generated pod specs, the three injection properties always hold.

Hypothesis builds pods from the pieces that trip injectors up (named and missing ports,
every probe handler, PYTHONPATH literal/valueFrom/envFrom, user preStop hooks, native
sidecars, name collisions with our volumes and init container, container selection and
version annotations, run-to-completion restart policies, grace periods). For each: the
patch applies with ``jsonpatch``, the patched pod validates against the Kubernetes
OpenAPI schema, and a second pass adds nothing.
"""

from __future__ import annotations

from typing import Any, Dict, List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.mutate import InjectionConfig
from pilotfish_webhook.admission.review import review
from support.pods import admission_review, check_mutation

NAMES = st.sampled_from(["app", "web", "worker", "istio-proxy", "pilotfish-init", "side", "c1", "c2", "c3"])
PORT_NAMES = st.sampled_from(["http", "grpc", "metrics", "admin"])
PORTS = st.integers(min_value=1, max_value=65535)
PATHS = st.sampled_from(["/", "/healthz", "/ready", "/a/b?x=1"])
TEXT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/:.$()", min_size=0, max_size=20)


@st.composite
def probes(draw: Any, port_names: List[str]) -> Dict[str, Any]:
    port = draw(st.one_of(PORTS, st.sampled_from(port_names or ["http"]), st.just("missing")))
    handler = draw(
        st.sampled_from(
            [
                {
                    "httpGet": {
                        "path": draw(PATHS),
                        "port": port,
                        "scheme": draw(st.sampled_from(["HTTP", "HTTPS"])),
                    }
                },
                {"tcpSocket": {"port": port}},
                {"grpc": {"port": draw(PORTS)}},
                {"exec": {"command": ["cat", "/tmp/ready"]}},
                {"httpGet": {"path": "/readiness", "port": 55199, "scheme": "HTTP"}},
            ]
        )
    )
    timing = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "periodSeconds": st.integers(1, 60),
                "failureThreshold": st.integers(1, 10),
                "initialDelaySeconds": st.integers(0, 30),
            },
        )
    )
    return {**handler, **timing}


@st.composite
def containers(draw: Any, name: str) -> Dict[str, Any]:
    port_names = draw(st.lists(PORT_NAMES, unique=True, max_size=3))
    container: Dict[str, Any] = {"name": name, "image": "example/app:1"}
    if port_names or draw(st.booleans()):
        container["ports"] = [{"name": n, "containerPort": draw(PORTS)} for n in port_names]
    env: List[Dict[str, Any]] = []
    pythonpath = draw(st.sampled_from(["none", "literal", "valueFrom", "bootstrapped"]))
    if pythonpath == "literal":
        env.append({"name": "PYTHONPATH", "value": draw(TEXT)})
    elif pythonpath == "valueFrom":
        env.append({"name": "PYTHONPATH", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "pp"}}})
    elif pythonpath == "bootstrapped":
        env.append({"name": "PYTHONPATH", "value": "/pilotfish/bootstrap:/app"})
    if draw(st.booleans()):
        env.append(
            {
                "name": draw(
                    st.sampled_from(
                        [c.ENV_APP, c.ENV_TAG, "OTHER", c.ENV_OFFLINE_MAX_WAIT, c.ENV_STATUS_PORT]
                    )
                ),
                "value": draw(st.sampled_from(["7", "55199", "55200"])),
            }
        )
    if env:
        container["env"] = env
    if draw(st.booleans()):
        container["envFrom"] = [{"configMapRef": {"name": "settings"}}]
    if draw(st.booleans()):
        container["readinessProbe"] = draw(probes(port_names))
    if draw(st.booleans()):
        container["livenessProbe"] = draw(probes(port_names))
    if draw(st.booleans()):
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "5"]}}}
    if draw(st.booleans()):
        container["securityContext"] = {"runAsNonRoot": True, "readOnlyRootFilesystem": True}
    if draw(st.booleans()):
        container["volumeMounts"] = [
            {"name": "data", "mountPath": draw(st.sampled_from(["/data", "/pilotfish"]))}
        ]
    return container


@st.composite
def pods(draw: Any) -> Dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    spec: Dict[str, Any] = {"containers": [draw(containers(n)) for n in names]}
    spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    if draw(st.booleans()):
        spec["volumes"].append(
            {"name": draw(st.sampled_from(["pilotfish-agent", "pilotfish-token", "other"])), "emptyDir": {}}
        )
    if draw(st.booleans()):
        native = {"name": "sidecar-native", "image": "example/side:1", "restartPolicy": "Always"}
        spec["initContainers"] = [native, {"name": "migrate", "image": "example/app:1"}]
    if draw(st.booleans()):
        spec["restartPolicy"] = draw(st.sampled_from(["Always", "OnFailure", "Never"]))
    if draw(st.booleans()):
        spec["terminationGracePeriodSeconds"] = draw(st.integers(0, 600))
    annotations = {}
    if draw(st.booleans()):
        annotations[c.CONTAINERS_ANNOTATION] = ",".join(draw(st.lists(NAMES, max_size=3)))
    if draw(st.booleans()):
        annotations[c.PYTHONPATH_ANNOTATION] = draw(TEXT)
    if draw(st.booleans()):
        annotations[c.AGENT_VERSION_ANNOTATION] = draw(st.sampled_from(["0.2.0", "bad tag!", ""]))
    labels = draw(
        st.dictionaries(st.sampled_from(["app", c.TAG_LABEL, c.APP_LABEL, c.MSE_TAG_LABEL]), st.just("v1"))
    )
    meta: Dict[str, Any] = {"namespace": "shop", "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    if draw(st.booleans()):
        meta["name"] = "pod-1"
    else:
        meta["generateName"] = "shop-abc-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(), st.sampled_from(["copy", "image"]))
def test_generated_pods_patch_applies_validates_and_second_pass_adds_nothing(
    pod: Dict[str, Any], mode: str
) -> None:
    check_mutation(pod, InjectionConfig(mount_mode=mode))


@settings(max_examples=60, deadline=None)
@given(pods())
def test_generated_reviews_are_always_allowed(pod: Dict[str, Any]) -> None:
    answer = review(admission_review(pod), InjectionConfig())["response"]
    assert answer["allowed"] is True
    assert not any("internal error" in w for w in answer.get("warnings", []))
