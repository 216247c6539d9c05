"""AdmissionReview v1 in, AdmissionReview v1 out: the webhook's contract with the API server.

Two kinds of failure, handled in opposite ways on purpose:
- a *malformed review* (not JSON, wrong apiVersion/kind, no uid, no object) is the
  caller's bug: :class:`BadReview` names the field and the router answers HTTP 400;
- an *internal error* while mutating is ours: the pod is admitted unchanged with a
  ``warnings`` entry, because pilotfish must never stop a deploy.

Dry-run requests (``kubectl apply --dry-run=server``) get exactly the same answer as real
ones: the mutation has no side effects, and users want to see what would be injected.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from pilotfish_webhook.admission.jsonio import dumps
from pilotfish_webhook.admission.mutate import InjectionConfig, Mutation, inject, skip_pod
from pilotfish_webhook.admission.patch import diff
from pilotfish_webhook.admission.select import decide

log = logging.getLogger("pilotfish_webhook.admission")

API_VERSION = "admission.k8s.io/v1"
# The API server drops warnings beyond 4 KiB in total and may truncate long ones.
MAX_WARNINGS = 10
MAX_WARNING_CHARS = 250


class BadReview(ValueError):
    """The request body is not a usable AdmissionReview; the message names the field."""


@dataclass
class Outcome:
    """What :func:`admit` decided, before it is wrapped as an AdmissionReview."""

    patch: List[Dict[str, Any]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    mutation: Optional[Mutation] = None


def parse_request(doc: Any) -> Dict[str, Any]:
    if not isinstance(doc, dict):
        raise BadReview("expected a JSON object (an AdmissionReview), got %s" % type(doc).__name__)
    if doc.get("apiVersion") != API_VERSION:
        raise BadReview("apiVersion: expected %r, got %r" % (API_VERSION, doc.get("apiVersion")))
    if doc.get("kind") != "AdmissionReview":
        raise BadReview("kind: expected 'AdmissionReview', got %r" % (doc.get("kind"),))
    request = doc.get("request")
    if not isinstance(request, dict):
        raise BadReview("request: missing or not an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid: missing or not a string")
    if request.get("operation") == "CREATE" and not isinstance(request.get("object"), dict):
        raise BadReview("request.object: missing or not an object (required for CREATE)")
    return request


def admit(
    request: Dict[str, Any], config: InjectionConfig, scratch: Optional[Dict[str, Any]] = None
) -> Outcome:
    """Decide and mutate; raises only on internal errors (the caller turns those into warnings)."""
    pod = request.get("object")
    if not isinstance(pod, dict):
        return Outcome()
    decision = decide(request, pod, config.own_namespace)
    if not decision.inject:
        if decision.tell == "annotate":
            skipped = skip_pod(pod, decision.reason)
            return Outcome(diff(pod, skipped.pod), skipped.warnings, skipped)
        return Outcome(
            warnings=["pilotfish: not injected: " + decision.reason] if decision.tell == "warn" else []
        )
    if not isinstance(pod.get("spec"), dict):
        raise BadReview("request.object.spec: missing or not an object")
    mutation: Mutation = inject(pod, config, scratch)
    warnings = mutation.warnings
    if mutation.status is None:  # refused outright (too many containers): admitted as it came
        return Outcome([], warnings, mutation)
    if decision.tell == "warn":
        warnings = ["pilotfish: " + decision.reason, *warnings]
    return Outcome(diff(pod, mutation.pod), warnings, mutation)


def _clip(warnings: List[str]) -> List[str]:
    clipped = [w if len(w) <= MAX_WARNING_CHARS else w[: MAX_WARNING_CHARS - 3] + "..." for w in warnings]
    if len(clipped) > MAX_WARNINGS:
        extra = len(clipped) - MAX_WARNINGS + 1
        clipped = [
            *clipped[: MAX_WARNINGS - 1],
            "pilotfish: %d more notes in the pilotfish.io/status annotation" % extra,
        ]
    return clipped


def review(doc: Any, config: InjectionConfig, scratch: Any = None) -> Dict[str, Any]:
    """The AdmissionReview response for ``doc``; raises :class:`BadReview` for malformed input.

    ``scratch``: an independent, equal parse of the same body; its pod is mutated in place
    instead of deep-copying the request's (see :func:`mutate.inject`).
    """
    request = parse_request(doc)
    response: Dict[str, Any] = {"uid": request["uid"], "allowed": True}
    scratch_pod = None
    if isinstance(scratch, dict) and isinstance(scratch.get("request"), dict):
        candidate = scratch["request"].get("object")
        if isinstance(candidate, dict) and candidate is not request.get("object"):
            scratch_pod = candidate
    try:
        outcome = admit(request, config, scratch_pod)
    except BadReview:
        raise
    except Exception as exc:  # never block a deploy on our bug
        log.exception("admission of %s failed; admitting unchanged", _describe(request))
        response["warnings"] = [
            "pilotfish: injection skipped after an internal error (%s: %s); the pod was admitted unchanged"
            % (type(exc).__name__, str(exc)[:80])
        ]
        return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
    if outcome.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(dumps(outcome.patch)).decode()
    if outcome.warnings:
        response["warnings"] = _clip(outcome.warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _describe(request: Dict[str, Any]) -> str:
    meta = (request.get("object") or {}).get("metadata") or {}
    name = meta.get("name") or request.get("name") or (meta.get("generateName") or "") + "*"
    return "pod %s/%s" % (request.get("namespace") or meta.get("namespace") or "?", name)
