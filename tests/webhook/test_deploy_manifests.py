"""deploy/: the kustomize base is complete, schema-valid, and agrees with the code.

``kubectl`` (and so ``kubectl kustomize``) cannot be installed here, so instead: the
kustomization lists every file of the base, every resource validates against the
Kubernetes OpenAPI schema with ``kubernetes-validate`` (strict: no unknown fields), and
names that must match across files and code (Service -> Deployment labels, RBAC
resourceNames -> CLI flags, the agent image's entrypoint -> the injected init container)
are checked against each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import kubernetes_validate
import pytest
import yaml
from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.mutate import init_container
from pilotfish_webhook.cli import build_parser
from support.pods import K8S_VERSION

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "base"
DOCKER = ROOT / "deploy" / "docker"


def kustomization() -> Dict[str, Any]:
    return yaml.safe_load((BASE / "kustomization.yaml").read_text())


def resources() -> List[Dict[str, Any]]:
    docs: List[Dict[str, Any]] = []
    for name in kustomization()["resources"]:
        docs.extend(d for d in yaml.safe_load_all((BASE / name).read_text()) if d)
    return docs


def one(kind: str) -> Dict[str, Any]:
    found = [d for d in resources() if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_kustomization_lists_every_file_of_the_base_and_nothing_else() -> None:
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize("doc", resources(), ids=lambda d: "%s/%s" % (d["kind"], d["metadata"]["name"]))
def test_every_resource_validates_against_the_kubernetes_schema(doc: Dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_base_holds_what_a_cluster_admin_needs() -> None:
    kinds = sorted(d["kind"] for d in resources())
    for kind in (
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "MutatingWebhookConfiguration",
        "CustomResourceDefinition",
    ):
        assert kind in kinds
    assert one("Namespace")["metadata"]["name"] == "pilotfish-system"
    assert one("CustomResourceDefinition")["spec"]["names"]["kind"] == "GovernancePolicy"


def test_webhook_configuration_never_blocks_a_deploy_and_has_the_two_selections() -> None:
    mwc = one("MutatingWebhookConfiguration")
    hooks = mwc["webhooks"]
    assert len(hooks) == 2
    for hook in hooks:
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] <= 5
        assert hook["sideEffects"] == "None"
        assert hook["reinvocationPolicy"] == "IfNeeded"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["rules"] == [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert hook["clientConfig"]["service"]["path"] == "/mutate"
        excluded = hook["namespaceSelector"]["matchExpressions"][-1]
        assert excluded == {
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": ["kube-system", "pilotfish-system"],
        }
    by_namespace, by_pod = hooks
    assert {"key": c.INJECT_LABEL, "operator": "In", "values": [c.NAMESPACE_ENABLED]} in by_namespace[
        "namespaceSelector"
    ]["matchExpressions"]
    assert by_namespace["objectSelector"]["matchExpressions"] == [
        {"key": c.INJECT_LABEL, "operator": "NotIn", "values": ["false", "true"]}
    ]
    assert by_pod["objectSelector"] == {"matchLabels": {c.INJECT_LABEL: "true"}}


def test_deployment_is_highly_available_probed_limited_and_restricted() -> None:
    deployment = one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"][c.INJECT_LABEL] == "false"
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    bound = {
        (s["name"], s["namespace"])
        for d in resources()
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        for s in d["subjects"]
    }
    assert bound == {(spec["serviceAccountName"], "pilotfish-system")}, (
        "every binding names the server's account"
    )
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_deployment_args_are_accepted_by_the_real_cli_and_match_the_other_objects() -> None:
    deployment = one("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.in_cluster is True
    assert args.webhook_config_name == one("MutatingWebhookConfiguration")["metadata"]["name"]
    service = one("Service")
    assert args.service_name == service["metadata"]["name"]
    assert args.listen[1] == container["ports"][0]["containerPort"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    role = next(d for d in resources() if d["kind"] == "Role")
    secret_names = {n for rule in role["rules"] for n in rule.get("resourceNames", [])}
    assert secret_names == {args.secret_name}
    for hook in one("MutatingWebhookConfiguration")["webhooks"]:
        assert hook["clientConfig"]["service"]["name"] == service["metadata"]["name"]
        assert hook["clientConfig"]["service"]["port"] == service["spec"]["ports"][0]["port"]


def test_rbac_is_least_privilege() -> None:
    """No wildcards or dangerous verbs anywhere; the webhook's own rules (not the config
    service's list/watch of pods and policies, rbac-config.yaml) touch objects by name only."""
    for doc in resources():
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        if doc["metadata"]["name"] == "pilotfish-config":
            for rule in doc["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"]
                assert "secrets" not in rule["resources"]
            continue
        for rule in doc["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
            assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
            if "secrets" in rule["resources"]:
                assert doc["kind"] == "Role", "secrets are only reachable in our own namespace"
            if set(rule["verbs"]) & {"get", "update", "patch"} and rule["resources"] != ["namespaces"]:
                assert rule.get("resourceNames"), "read/write by name only: %s" % rule
    cluster_role = next(
        d for d in resources() if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "pilotfish-webhook"
    )
    mwc_rule = next(r for r in cluster_role["rules"] if r["resources"] == ["mutatingwebhookconfigurations"])
    assert mwc_rule["resourceNames"] == ["pilotfish"]
    cm_rules = [
        r for r in cluster_role["rules"] if r["resources"] == ["configmaps"] and r.get("resourceNames")
    ]
    assert cm_rules[0]["resourceNames"] == [c.CA_CONFIGMAP]


def test_agent_image_entrypoint_is_exactly_the_injected_copy_command_and_has_no_shell() -> None:
    text = (DOCKER / "agent.Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entrypoint is not None
    assert yaml.safe_load(entrypoint.group(1)) == init_container("x")["command"]
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages[-1] == "scratch", "the final image holds no shell"
    assert re.search(r"^USER \d+:\d+$", text, re.M)
    assert re.search(r"^COPY build/agent-tree/ /pilotfish-agent/$", text, re.M)


def test_webhook_image_runs_as_a_numeric_non_root_user() -> None:
    text = (DOCKER / "webhook.Dockerfile").read_text()
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert '"pilotfish-webhook"' in text


def test_cert_manager_overlay_patches_apply_and_the_result_is_valid_and_accepted_by_the_cli() -> None:
    """The overlay's JSON patches, applied like kustomize would, give a schema-valid Deployment
    whose args the real CLI accepts, serving from cert-manager's Secret without --in-cluster."""
    import jsonpatch

    overlay = ROOT / "deploy" / "cert-manager"
    spec = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert spec["resources"][0] == "../base"
    certificates = list(yaml.safe_load_all((overlay / "certificates.yaml").read_text()))
    serving = next(d for d in certificates if d["kind"] == "Certificate" and not d["spec"].get("isCA"))
    assert "pilotfish.pilotfish-system.svc" in serving["spec"]["dnsNames"]
    patched: Dict[str, Any] = {}
    for entry in spec["patches"]:
        kind = entry["target"]["kind"]
        ops = yaml.safe_load((overlay / entry["path"]).read_text())
        patched[kind] = jsonpatch.apply_patch(one(kind), ops)
        kubernetes_validate.validate(patched[kind], K8S_VERSION, strict=True)
    container = patched["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.in_cluster is False and str(args.certs_dir) == "/certs"
    volume = patched["Deployment"]["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == serving["spec"]["secretName"]
    annotation = patched["MutatingWebhookConfiguration"]["metadata"]["annotations"][
        "cert-manager.io/inject-ca-from"
    ]
    assert annotation == "pilotfish-system/%s" % serving["metadata"]["name"]


def test_the_e2e_script_parses_and_says_it_cannot_run_here() -> None:
    """hack/e2e/cluster.sh needs docker and a kind/minikube cluster, absent here: at least it
    must parse, and it must say so itself."""
    import shutil
    import subprocess

    script = ROOT / "hack" / "e2e" / "cluster.sh"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found")
    subprocess.run([bash, "-n", str(script)], check=True)
    text = script.read_text()
    assert "NOT run by `make test`" in text
    assert "kubectl apply -k" in text and "deploy/base" in text
