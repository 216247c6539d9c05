"""Pods for the webhook tests: the Istio injector corpus, plus helpers to check a mutation.

The corpus (the input manifests of Istio's sidecar-injector tests, Apache-2.0) is not part
of the repository and is never copied in: ``PILOTFISH_ISTIO_CORPUS`` names the directory
that holds it (docs/internals.md, "The Istio injector corpus", says where to get it). Tests
that need it skip with a notice when the variable is unset or the directory is missing.
"""

from __future__ import annotations

import copy
import os
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[2]

CORPUS_ENV = "PILOTFISH_ISTIO_CORPUS"
CORPUS: Optional[Path] = Path(os.environ[CORPUS_ENV]) if os.environ.get(CORPUS_ENV) else None


def corpus_missing() -> str:
    """Why the corpus cannot be read, or "" when it can."""
    if CORPUS is None:
        return "%s is not set (Istio injector corpus, see docs/internals.md)" % CORPUS_ENV
    if not CORPUS.is_dir():
        return "%s=%s is not a directory (see docs/internals.md)" % (CORPUS_ENV, CORPUS)
    return ""


K8S_VERSION = "1.33.0"  # image volumes (mount mode "image") are beta from 1.33

WORKLOAD_KINDS = {
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "ReplicationController",
    "DeploymentConfig",
}


def corpus_files() -> List[Path]:
    if CORPUS is None or not CORPUS.is_dir():
        return []
    return sorted(CORPUS.glob("*.yaml"))


def _template_pod(owner: Dict[str, Any], template: Dict[str, Any]) -> Dict[str, Any]:
    meta = copy.deepcopy(template.get("metadata") or {})
    owner_meta = owner.get("metadata") or {}
    meta.setdefault("namespace", owner_meta.get("namespace", "default"))
    if not meta.get("name"):
        # What a controller sends: only generateName, plus an owner reference.
        meta["generateName"] = "%s-" % owner_meta.get("name", "pod")
        meta["ownerReferences"] = [
            {
                "apiVersion": owner.get("apiVersion", "apps/v1"),
                "kind": owner.get("kind", "ReplicaSet"),
                "name": owner_meta.get("name", "owner"),
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, owner_meta.get("name", "owner"))),
                "controller": True,
            }
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(template["spec"])}


def pods_in(doc: Any, where: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Every pod (template) in a workload document, with a label saying where it came from."""
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "?")
    if kind == "List":
        for index, item in enumerate(doc.get("items") or []):
            yield from pods_in(item, "%s[%d]" % (where, index))
    elif kind == "Pod":
        pod = copy.deepcopy(doc)
        pod.setdefault("metadata", {}).setdefault("namespace", "default")
        yield "%s:Pod/%s" % (where, name), pod
    elif kind == "CronJob":
        job = doc["spec"]["jobTemplate"]
        yield "%s:CronJob/%s" % (where, name), _template_pod(doc, job["spec"]["template"])
    elif kind in WORKLOAD_KINDS:
        yield "%s:%s/%s" % (where, kind, name), _template_pod(doc, doc["spec"]["template"])


def corpus_pods() -> List[Tuple[str, Dict[str, Any]]]:
    pods: List[Tuple[str, Dict[str, Any]]] = []
    for path in corpus_files():
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            pods.extend(pods_in(doc, "%s#%d" % (path.name, index)))
    return pods


def admission_review(
    pod: Dict[str, Any], namespace: Optional[str] = None, dry_run: bool = False, uid: Optional[str] = None
) -> Dict[str, Any]:
    """An AdmissionReview as kube-apiserver sends it for a pod CREATE."""
    meta = pod.get("metadata") or {}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": meta.get("name", ""),
            "namespace": namespace or meta.get("namespace", "default"),
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def validate_pod(pod: Dict[str, Any]) -> None:
    """Raise unless ``pod`` validates against the Kubernetes OpenAPI schema (strict: no unknown fields)."""
    import kubernetes_validate

    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def check_mutation(pod: Dict[str, Any], config: Any = None) -> Any:
    """The three properties every injection must have; returns the Mutation for more checks.

    1. the JSON patch we would send applies with ``jsonpatch`` and yields our pod;
    2. the patched pod validates against the Kubernetes OpenAPI schema;
    3. a second pass over the patched pod adds nothing (empty patch).
    """
    import jsonpatch
    from pilotfish_webhook.admission.mutate import InjectionConfig, inject
    from pilotfish_webhook.admission.patch import diff

    config = config or InjectionConfig()
    before = copy.deepcopy(pod)
    mutation = inject(pod, config)
    assert pod == before, "inject() must not modify its input"
    patch = diff(pod, mutation.pod)
    patched = jsonpatch.apply_patch(pod, patch)
    assert patched == mutation.pod, "the JSON patch does not reproduce the mutated pod"
    validate_pod(patched)
    again = inject(patched, config)
    second = diff(patched, again.pod)
    assert second == [], "second pass changed the pod: %s" % second
    return mutation
