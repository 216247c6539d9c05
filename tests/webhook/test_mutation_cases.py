"""The mutation on the cases the Istio corpus lacks, one behaviour of docs/injection.md each.

Every test goes through ``check_mutation``: the JSON patch applies with ``jsonpatch``, the
patched pod validates against the Kubernetes OpenAPI schema, and a second pass adds nothing.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional

import pytest
from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.mutate import InjectionConfig, app_name, inject, merge_pythonpath
from pilotfish_webhook.admission.review import BadReview, review
from support.pods import admission_review, check_mutation


def make_pod(
    containers: Optional[List[Dict[str, Any]]] = None,
    labels: Optional[Dict[str, str]] = None,
    annotations: Optional[Dict[str, str]] = None,
    **spec: Any,
) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"generateName": "shop-7d4b9c8f6-", "namespace": "shop"}
    meta["labels"] = {"pod-template-hash": "7d4b9c8f6", **(labels or {})}
    if annotations:
        meta["annotations"] = annotations
    meta["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "shop-7d4b9c8f6",
            "uid": "u-1",
            "controller": True,
        }
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": containers or [app()], **spec},
    }


def app(name: str = "shop", **fields: Any) -> Dict[str, Any]:
    return {"name": name, "image": "shop:1", "ports": [{"name": "http", "containerPort": 8080}], **fields}


def env_of(container: Dict[str, Any]) -> Dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def first(pod: Dict[str, Any]) -> Dict[str, Any]:
    return pod["spec"]["containers"][0]


def status_of(pod: Dict[str, Any]) -> Dict[str, Any]:
    return json.loads(pod["metadata"]["annotations"][c.STATUS_ANNOTATION])


# --------------------------------------------------------------------------- PYTHONPATH


def test_pythonpath_literal_keeps_the_users_value_after_the_bootstrap_dir() -> None:
    pod = make_pod(
        [app(env=[{"name": "PYTHONPATH", "value": "/app/src:$(EXTRA)"}, {"name": "EXTRA", "value": "/x"}])]
    )
    out = check_mutation(pod).pod
    assert env_of(first(out))["PYTHONPATH"] == "/pilotfish/bootstrap:/app/src:$(EXTRA)"
    assert [e["name"] for e in first(out)["env"]][:2] == ["PYTHONPATH", "EXTRA"], "env order is kept"


def test_pythonpath_annotation_is_appended_after_the_literal_value() -> None:
    pod = make_pod(
        [app(env=[{"name": "PYTHONPATH", "value": "/app"}])],
        annotations={c.PYTHONPATH_ANNOTATION: "/opt/venv/lib:/app"},
    )
    out = check_mutation(pod).pod
    assert env_of(first(out))["PYTHONPATH"] == "/pilotfish/bootstrap:/app:/opt/venv/lib"


def test_pythonpath_from_value_from_is_never_overwritten_and_the_container_is_skipped() -> None:
    source = {"configMapKeyRef": {"name": "cfg", "key": "pythonpath"}}
    pod = make_pod([app(env=[{"name": "PYTHONPATH", "valueFrom": source}])])
    mutation = check_mutation(pod)
    assert first(mutation.pod) == first(pod)
    assert mutation.injected == []
    assert "valueFrom" in status_of(mutation.pod)["skipped"]["shop"]
    assert any("valueFrom" in w for w in mutation.warnings)
    assert "initContainers" not in mutation.pod["spec"], "nothing pod-level is added for no container"


def test_pythonpath_maybe_set_by_env_from_is_injected_with_a_warning_naming_the_annotation() -> None:
    pod = make_pod([app(envFrom=[{"configMapRef": {"name": "settings"}}])])
    mutation = check_mutation(pod)
    assert mutation.injected == ["shop"]
    assert any(c.PYTHONPATH_ANNOTATION in w and "envFrom" in w for w in mutation.warnings)
    assert first(mutation.pod)["envFrom"] == [{"configMapRef": {"name": "settings"}}]


def test_env_from_warning_goes_away_when_the_annotation_gives_the_images_pythonpath() -> None:
    pod = make_pod(
        [app(envFrom=[{"secretRef": {"name": "s"}}])], annotations={c.PYTHONPATH_ANNOTATION: "/srv"}
    )
    mutation = check_mutation(pod)
    assert not any("envFrom" in w for w in mutation.warnings)
    assert env_of(first(mutation.pod))["PYTHONPATH"] == "/pilotfish/bootstrap:/srv"


@pytest.mark.parametrize(
    "existing,annotation,expected",
    [
        (None, None, "/pilotfish/bootstrap"),
        ("", None, "/pilotfish/bootstrap"),
        (":/a", None, "/pilotfish/bootstrap::/a"),
        ("/pilotfish/bootstrap:/a", "/a:/b", "/pilotfish/bootstrap:/a:/b"),
        ("/a", " /b : /c ", "/pilotfish/bootstrap:/a:/b:/c"),
    ],
)
def test_pythonpath_merge_is_verbatim_and_idempotent(existing: Any, annotation: Any, expected: str) -> None:
    merged = merge_pythonpath(existing, annotation)
    assert merged == expected
    assert merge_pythonpath(merged, annotation) == merged


# --------------------------------------------------------------------------- env and identity


def test_env_carries_identity_config_and_downward_api_fields() -> None:
    config = InjectionConfig(config_url="https://pf.example:8443")
    out = check_mutation(make_pod(labels={c.TAG_LABEL: "gray"}), config).pod
    env = env_of(first(out))
    assert env[c.ENV_APP] == "shop"
    assert env[c.ENV_TAG] == "gray"
    assert env[c.ENV_CONFIG_URL] == "https://pf.example:8443"
    assert env[c.ENV_CONFIG_CA] == "/var/run/secrets/pilotfish/ca.crt"
    assert env[c.ENV_TOKEN_FILE] == "/var/run/secrets/pilotfish/token"
    assert env[c.ENV_POD_NAME] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env[c.ENV_POD_NAMESPACE] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
    assert env[c.ENV_POD_IP] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}


def test_mse_tag_label_is_read_as_the_tag_and_no_tag_means_no_env() -> None:
    assert env_of(first(check_mutation(make_pod(labels={c.MSE_TAG_LABEL: "blue"})).pod))[c.ENV_TAG] == "blue"
    assert c.ENV_TAG not in env_of(first(check_mutation(make_pod()).pod))


def test_a_users_explicit_env_wins_over_what_the_webhook_would_set() -> None:
    pod = make_pod([app(env=[{"name": c.ENV_APP, "value": "checkout"}, {"name": c.ENV_TAG, "value": "v2"}])])
    env = env_of(first(check_mutation(pod, InjectionConfig()).pod))
    assert env[c.ENV_APP] == "checkout" and env[c.ENV_TAG] == "v2"


@pytest.mark.parametrize(
    "meta,expected",
    [
        ({"labels": {c.APP_LABEL: "a", "app.kubernetes.io/name": "b", "app": "c"}}, "a"),
        ({"labels": {"app.kubernetes.io/name": "b", "app": "c"}}, "b"),
        ({"labels": {"app": "c"}}, "c"),
        (
            {
                "generateName": "shop-7d4b9c8f6-",
                "labels": {"pod-template-hash": "7d4b9c8f6"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "shop-7d4b9c8f6", "controller": True}],
            },
            "shop",
        ),
        (
            {
                "generateName": "report-28391234-",
                "ownerReferences": [{"kind": "Job", "name": "report-28391234"}],
            },
            "report",
        ),
        (
            {
                "generateName": "web-",
                "ownerReferences": [{"kind": "StatefulSet", "name": "web", "controller": True}],
            },
            "web",
        ),
        ({"generateName": "shop-7d4b9c8f6-", "labels": {"pod-template-hash": "7d4b9c8f6"}}, "shop"),
        ({"name": "standalone"}, "standalone"),
        ({}, "unknown"),
    ],
)
def test_app_name_falls_back_from_labels_to_the_owner_to_the_pod_name(
    meta: Dict[str, Any], expected: str
) -> None:
    assert app_name(meta) == expected


def test_each_pod_gets_its_own_offline_token_shared_by_env_and_prestop_header() -> None:
    one = first(check_mutation(make_pod()).pod)
    two = first(check_mutation(make_pod()).pod)
    token = env_of(one)[c.ENV_OFFLINE_TOKEN]
    assert len(token) >= 32 and token != env_of(two)[c.ENV_OFFLINE_TOKEN]
    assert one["lifecycle"]["preStop"]["httpGet"] == {
        "path": "/offline",
        "port": 55199,
        "scheme": "HTTP",
        "httpHeaders": [{"name": "X-Pilotfish-Token", "value": token}],
    }


# --------------------------------------------------------------------------- volumes, init container, PSS


def test_restricted_pod_stays_restricted_and_the_agent_mount_is_read_only() -> None:
    secure = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = make_pod([app(securityContext=secure)], securityContext={"runAsNonRoot": True, "runAsUser": 1000})
    out = check_mutation(pod).pod
    init = out["spec"]["initContainers"][0]
    ctx = init["securityContext"]
    assert ctx["runAsNonRoot"] is True and isinstance(ctx["runAsUser"], int) and ctx["runAsUser"] > 0
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert init["resources"]["limits"] and init["resources"]["requests"]
    assert first(out)["securityContext"] == secure, "the app's own securityContext is untouched"
    mounts = {m["mountPath"]: m for m in first(out)["volumeMounts"]}
    assert mounts["/pilotfish"] == {"name": "pilotfish-agent", "mountPath": "/pilotfish", "readOnly": True}
    assert mounts["/var/run/secrets/pilotfish"]["readOnly"] is True
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["pilotfish-agent"]["emptyDir"]["sizeLimit"]
    token = volumes["pilotfish-token"]["projected"]["sources"][0]["serviceAccountToken"]
    assert token["audience"] == "pilotfish" and token["path"] == "token"


def test_image_volume_mode_mounts_the_agent_image_without_a_copy() -> None:
    config = InjectionConfig(mount_mode="image")
    out = check_mutation(make_pod(), config).pod
    assert "initContainers" not in out["spec"]
    volume = next(v for v in out["spec"]["volumes"] if v["name"] == c.AGENT_VOLUME)
    assert volume["image"]["reference"] == config.image_for(config.agent_version)
    mount = next(m for m in first(out)["volumeMounts"] if m["name"] == c.AGENT_VOLUME)
    assert mount["readOnly"] is True and mount["subPath"] == "pilotfish-agent"


def test_agent_version_annotation_pins_the_image_and_a_bad_pin_is_refused_with_a_warning() -> None:
    config = InjectionConfig(agent_image="registry.example/pf/agent", agent_version="0.1.0")
    out = check_mutation(make_pod(annotations={c.AGENT_VERSION_ANNOTATION: "0.0.9"}), config).pod
    assert out["spec"]["initContainers"][0]["image"] == "registry.example/pf/agent:0.0.9"
    bad = check_mutation(make_pod(annotations={c.AGENT_VERSION_ANNOTATION: "x; rm -rf /"}), config)
    assert bad.pod["spec"]["initContainers"][0]["image"] == "registry.example/pf/agent:0.1.0"
    assert any("not a valid image tag" in w for w in bad.warnings)


def test_a_user_volume_named_like_ours_skips_the_pod_instead_of_clobbering_it() -> None:
    pod = make_pod(volumes=[{"name": "pilotfish-agent", "configMap": {"name": "mine"}}])
    mutation = check_mutation(pod)
    assert mutation.pod["spec"] == pod["spec"]
    assert "pilotfish-agent" in status_of(mutation.pod)["reason"]


def test_a_user_container_named_pilotfish_init_skips_the_pod() -> None:
    pod = make_pod([app(), app("pilotfish-init")])
    mutation = check_mutation(pod)
    assert mutation.pod["spec"] == pod["spec"]
    assert any("pilotfish-init" in w for w in mutation.warnings)


def test_a_user_mount_at_slash_pilotfish_skips_that_container() -> None:
    pod = make_pod(
        [app(volumeMounts=[{"name": "data", "mountPath": "/pilotfish"}])],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    mutation = check_mutation(pod)
    assert mutation.injected == []
    assert "already mounted" in status_of(mutation.pod)["skipped"]["shop"]


def test_a_container_that_itself_uses_55199_gets_the_next_free_status_port() -> None:
    out = first(
        check_mutation(make_pod([app(ports=[{"containerPort": 55199}, {"containerPort": 55200}])])).pod
    )
    assert env_of(out)[c.ENV_STATUS_PORT] == "55201"
    assert out["readinessProbe"]["httpGet"]["port"] == 55201
    assert out["lifecycle"]["preStop"]["httpGet"]["port"] == 55201


def test_every_injected_container_gets_its_own_status_port_in_the_shared_network_namespace() -> None:
    pod = make_pod([app("a"), app("b"), app("c")], annotations={c.CONTAINERS_ANNOTATION: "a,b,c"})
    out = check_mutation(pod).pod
    ports = [x["readinessProbe"]["httpGet"]["port"] for x in out["spec"]["containers"]]
    assert ports == [55199, 55200, 55201]
    assert c.ENV_STATUS_PORT not in env_of(out["spec"]["containers"][0])
    assert [env_of(x).get(c.ENV_STATUS_PORT) for x in out["spec"]["containers"][1:]] == ["55200", "55201"]


def test_a_literal_status_port_that_the_container_itself_uses_skips_it() -> None:
    pod = make_pod([app(ports=[{"containerPort": 9000}], env=[{"name": c.ENV_STATUS_PORT, "value": "9000"}])])
    mutation = check_mutation(pod)
    assert mutation.injected == [] and "9000" in status_of(mutation.pod)["skipped"]["shop"]


def test_a_literal_status_port_override_moves_probe_and_prestop() -> None:
    pod = make_pod([app(env=[{"name": "PILOTFISH_STATUS_PORT", "value": "56000"}])])
    out = first(check_mutation(pod).pod)
    assert out["readinessProbe"]["httpGet"]["port"] == 56000
    assert out["lifecycle"]["preStop"]["httpGet"]["port"] == 56000


# --------------------------------------------------------------------------- probes, preStop, grace


def test_no_probe_is_added_to_a_container_without_ports_so_a_worker_rollout_never_hangs() -> None:
    worker = {"name": "worker", "image": "shop:1", "command": ["celery", "worker"]}
    mutation = check_mutation(make_pod([worker]))
    assert "readinessProbe" not in first(mutation.pod)
    assert mutation.injected == ["worker"]
    assert any("declares no port" in w for w in mutation.warnings)


def test_readiness_probe_is_added_when_the_app_has_none() -> None:
    out = first(check_mutation(make_pod()).pod)
    assert out["readinessProbe"]["httpGet"] == {"path": "/readiness", "port": 55199, "scheme": "HTTP"}
    assert c.ENV_APP_PROBE not in env_of(out)


def test_readiness_rewrite_keeps_timing_and_carries_headers_and_grpc() -> None:
    probe = {
        "httpGet": {"path": "/ready", "port": "http", "httpHeaders": [{"name": "Host", "value": "shop"}]},
        "periodSeconds": 3,
        "failureThreshold": 7,
        "timeoutSeconds": 4,
    }
    out = first(check_mutation(make_pod([app(readinessProbe=probe)])).pod)
    assert out["readinessProbe"] == {
        "httpGet": {"path": "/readiness", "port": 55199, "scheme": "HTTP"},
        "periodSeconds": 3,
        "failureThreshold": 7,
        "timeoutSeconds": 4,
    }
    carried = json.loads(env_of(out)[c.ENV_APP_PROBE])
    assert carried["httpGet"] == {
        "path": "/ready",
        "port": 8080,
        "httpHeaders": [{"name": "Host", "value": "shop"}],
    }
    assert carried["periodSeconds"] == 3
    grpc = first(check_mutation(make_pod([app(readinessProbe={"grpc": {"port": 9090, "service": "x"}})])).pod)
    assert json.loads(env_of(grpc)[c.ENV_APP_PROBE]) == {"grpc": {"port": 9090, "service": "x"}}


def test_a_named_port_that_does_not_exist_keeps_the_probe_and_says_so() -> None:
    probe = {"httpGet": {"path": "/ready", "port": "metrics"}}
    mutation = check_mutation(make_pod([app(readinessProbe=probe)]))
    assert first(mutation.pod)["readinessProbe"] == probe
    assert any("matches no containerPort" in w for w in mutation.warnings)


def test_a_readiness_probe_istio_already_rewrote_is_left_alone_so_the_agents_never_probe_each_other() -> None:
    istio = {
        "httpGet": {"path": "/app-health/shop/readyz", "port": 15020, "scheme": "HTTP"},
        "periodSeconds": 10,
    }
    mutation = check_mutation(make_pod([app(readinessProbe=istio)]))
    assert first(mutation.pod)["readinessProbe"] == istio
    assert c.ENV_APP_PROBE not in env_of(first(mutation.pod))
    assert any("Istio" in w for w in mutation.warnings)


def test_existing_prestop_is_kept_and_grace_period_is_raised_never_lowered() -> None:
    hook = {"exec": {"command": ["/bin/drain"]}}
    out = check_mutation(make_pod([app(lifecycle={"preStop": hook})])).pod
    assert first(out)["lifecycle"]["preStop"] == hook
    assert out["spec"]["terminationGracePeriodSeconds"] == 60  # offline max wait 30 + app shutdown 30
    long = check_mutation(make_pod(terminationGracePeriodSeconds=300)).pod
    assert long["spec"]["terminationGracePeriodSeconds"] == 300
    custom = make_pod([app(env=[{"name": "PILOTFISH_OFFLINE_MAX_WAIT_SECONDS", "value": "90"}])])
    assert check_mutation(custom).pod["spec"]["terminationGracePeriodSeconds"] == 120


# --------------------------------------------------------------------------- container selection


def test_containers_annotation_selects_and_reports_unknown_names() -> None:
    pod = make_pod([app("a"), app("b"), app("c")], annotations={c.CONTAINERS_ANNOTATION: "c, a ,nope"})
    mutation = check_mutation(pod)
    assert mutation.injected == ["c", "a"]
    assert "no such container" in status_of(mutation.pod)["skipped"]["nope"]
    assert "env" not in mutation.pod["spec"]["containers"][1]


def test_default_is_the_kubectl_default_container_else_the_first_non_proxy_container() -> None:
    pod = make_pod([app("istio-proxy"), app("a"), app("b")], annotations={c.KUBECTL_DEFAULT_CONTAINER: "b"})
    assert check_mutation(pod).injected == ["b"]
    assert check_mutation(make_pod([app("istio-proxy"), app("a")])).injected == ["a"]


def test_many_containers_all_injected_share_one_token_and_validate() -> None:
    containers = [app("c%02d" % i, ports=[{"name": "http", "containerPort": 8000 + i}]) for i in range(40)]
    names = ",".join(x["name"] for x in containers)
    mutation = check_mutation(make_pod(containers, annotations={c.CONTAINERS_ANNOTATION: names}))
    assert len(mutation.injected) == 40
    status_ports = {x["readinessProbe"]["httpGet"]["port"] for x in mutation.pod["spec"]["containers"]}
    assert len(status_ports) == 40
    tokens = {env_of(x)[c.ENV_OFFLINE_TOKEN] for x in mutation.pod["spec"]["containers"]}
    assert len(tokens) == 1


def test_reinvocation_after_another_webhook_prepended_a_container_keeps_the_choice() -> None:
    injected = check_mutation(make_pod([app("a"), app("b")])).pod
    injected["spec"]["containers"].insert(0, app("late-sidecar", ports=[]))
    again = inject(injected, InjectionConfig())
    assert again.injected == ["a"]
    assert again.pod["spec"]["containers"][0] == app("late-sidecar", ports=[])


def test_unknown_fields_round_trip() -> None:
    pod = make_pod([app(futureField={"x": [1, 2]})], futurePodField=True)
    pod["metadata"]["futureMeta"] = "kept"
    import jsonpatch
    from pilotfish_webhook.admission.patch import diff

    out = inject(pod, InjectionConfig()).pod
    assert jsonpatch.apply_patch(pod, diff(pod, out)) == out
    assert out["spec"]["futurePodField"] is True and out["metadata"]["futureMeta"] == "kept"
    assert first(out)["futureField"] == {"x": [1, 2]}


# --------------------------------------------------------------------------- the AdmissionReview level


def answer_for(pod: Dict[str, Any], namespace: str = "shop", **kw: Any) -> Dict[str, Any]:
    return review(admission_review(pod, namespace=namespace, **kw), InjectionConfig())["response"]


def decoded_patch(answer: Dict[str, Any]) -> List[Dict[str, Any]]:
    return json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []


def test_review_answers_with_the_request_uid_and_a_json_patch() -> None:
    doc = admission_review(make_pod(), uid="abc-123")
    answer = review(doc, InjectionConfig())
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "abc-123" and answer["response"]["allowed"] is True
    assert answer["response"]["patchType"] == "JSONPatch" and decoded_patch(answer["response"])


def test_dry_run_requests_get_the_same_mutation() -> None:
    pod = make_pod()
    real = decoded_patch(answer_for(pod))
    dry = decoded_patch(answer_for(pod, dry_run=True))
    assert real and [op["path"] for op in real] == [op["path"] for op in dry]


def test_opt_out_label_and_system_namespaces_are_never_mutated() -> None:
    assert "patch" not in answer_for(make_pod(labels={c.INJECT_LABEL: "false"}))
    for namespace in ("kube-system", "pilotfish-system"):
        answer = answer_for(make_pod(labels={c.INJECT_LABEL: "true"}), namespace=namespace)
        assert "patch" not in answer and "never injected" in answer["warnings"][0]


def test_non_pod_and_non_create_requests_pass_untouched() -> None:
    doc = admission_review(make_pod())
    doc["request"]["operation"] = "UPDATE"
    assert "patch" not in review(doc, InjectionConfig())["response"]
    doc = admission_review(make_pod())
    doc["request"]["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    doc["request"]["resource"] = {"group": "apps", "version": "v1", "resource": "deployments"}
    assert "patch" not in review(doc, InjectionConfig())["response"]


def test_an_internal_error_admits_the_pod_unchanged_with_a_warning() -> None:
    pod = make_pod()
    pod["spec"]["containers"] = [{"name": "shop", "image": "x", "env": "not-a-list"}]
    answer = answer_for(pod)
    assert answer["allowed"] is True and "patch" not in answer
    assert "internal error" in answer["warnings"][0]


@pytest.mark.parametrize(
    "doc,field",
    [
        ([], "JSON object"),
        ({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}, "apiVersion"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "Review"}, "kind"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request"),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
            "request.uid",
        ),
        (
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": "CREATE"},
            },
            "request.object",
        ),
    ],
)
def test_malformed_reviews_are_refused_naming_the_field(doc: Any, field: str) -> None:
    with pytest.raises(BadReview, match=field.replace(".", r"\.")):
        review(doc, InjectionConfig())


def test_warnings_are_clipped_to_what_the_api_server_keeps() -> None:
    containers = [
        app("c%d" % i, env=[{"name": "PYTHONPATH", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}])
        for i in range(30)
    ]
    pod = make_pod(containers, annotations={c.CONTAINERS_ANNOTATION: ",".join(x["name"] for x in containers)})
    warnings = answer_for(pod)["warnings"]
    assert len(warnings) <= 10 and all(len(w) <= 250 for w in warnings)
    assert "status annotation" in warnings[-1]


def test_the_schema_check_used_above_rejects_an_invalid_pod() -> None:
    """Guard against a validator that passes everything: an env entry without a name must fail."""
    from support.pods import validate_pod

    pod = make_pod()
    validate_pod(pod)
    pod["spec"]["containers"][0]["env"] = [{"value": "x"}]
    with pytest.raises(Exception, match="name"):
        validate_pod(pod)


def test_a_pod_with_only_generate_name_is_injected_and_named_by_the_downward_api() -> None:
    pod = make_pod()
    assert "name" not in pod["metadata"] and pod["metadata"]["generateName"]
    answer = answer_for(pod)
    import jsonpatch

    patched = jsonpatch.apply_patch(pod, decoded_patch(answer))
    env = env_of(first(patched))
    assert env[c.ENV_POD_NAME] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env[c.ENV_APP] == "shop"
