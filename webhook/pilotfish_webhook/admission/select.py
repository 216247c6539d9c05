"""Which pods get the agent: the server's own re-check of the webhook selectors.

In a cluster the two entries of the MutatingWebhookConfiguration do the selection
(namespace label ``pilotfish.io/inject=enabled`` with a pod opt-out, or pod label
``"true"`` anywhere), so the API server only calls us for candidate pods. The request
does not carry namespace labels, so here we re-check everything else that is visible
in the request: the object really is a Pod being created, the opt-out label, the
namespaces that are never injected, and hostNetwork.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from pilotfish_webhook.admission import contract as c

NEVER_INJECTED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class Decision:
    inject: bool
    reason: str = ""
    #: "quiet": say nothing (not ours to judge); "warn": warning only, pod untouched;
    #: "annotate": warning plus a pilotfish.io/status record on the pod.
    tell: str = "quiet"


def is_pod_create(request: Dict[str, Any]) -> bool:
    kind = request.get("kind") or {}
    resource = request.get("resource") or {}
    is_pod = (kind.get("group", "") == "" and kind.get("kind") == "Pod") or (
        resource.get("group", "") == "" and resource.get("resource") == "pods"
    )
    return is_pod and request.get("operation") == "CREATE" and not request.get("subResource")


def decide(request: Dict[str, Any], pod: Dict[str, Any], own_namespace: str) -> Decision:
    if not is_pod_create(request):
        return Decision(False, "not a pod creation")
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    opt = labels.get(c.INJECT_LABEL)
    if opt == "false":
        return Decision(False, "opted out by the pod label %s=false" % c.INJECT_LABEL)
    namespace = request.get("namespace") or meta.get("namespace") or ""
    if namespace in NEVER_INJECTED_NAMESPACES or namespace == own_namespace:
        return Decision(False, "pods in namespace %s are never injected" % namespace, tell="warn")
    if (pod.get("spec") or {}).get("hostNetwork") is True:
        return Decision(
            False,
            "hostNetwork pod: the agent's status port would be opened on the node itself",
            tell="annotate",
        )
    if opt not in (None, "true"):
        return Decision(
            True,
            'pod label %s=%r is neither "true" nor "false"; treated as unset' % (c.INJECT_LABEL, opt),
            tell="warn",
        )
    return Decision(True)
