"""Defaulting: the fields a real API server fills in on create/update, where readers rely on them.

Only what kubectl, the controllers, the kubelet and pilotfish read is defaulted: pod restart
policy and grace period, container port protocols, Deployment strategy and replicas,
Service type and targetPort, the namespace name label (selectors on it are how the
webhook configuration excludes namespaces).
"""

from __future__ import annotations

from typing import Any, Dict

Obj = Dict[str, Any]

NODE_NAME = "local"
# Kinds whose spec changes move metadata.generation (controllers compare observedGeneration).
GENERATED = {
    "deployments",
    "replicasets",
    "customresourcedefinitions",
    "poddisruptionbudgets",
    "statefulsets",
    "daemonsets",
}
# Kinds whose .status is written only through the status subresource.
HAS_STATUS = {
    "pods",
    "deployments",
    "replicasets",
    "namespaces",
    "services",
    "poddisruptionbudgets",
    "customresourcedefinitions",
}


def apply(resource: str, obj: Obj) -> None:
    fn = _DEFAULTERS.get(resource)
    if fn is not None:
        fn(obj)


def _namespace(obj: Obj) -> None:
    meta = obj.setdefault("metadata", {})
    labels = meta.get("labels") or {}
    labels["kubernetes.io/metadata.name"] = meta.get("name", "")
    meta["labels"] = labels
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    if spec.get("serviceAccountName") or spec.get("serviceAccount"):
        name = spec.get("serviceAccountName") or spec.get("serviceAccount")
        spec["serviceAccountName"] = spec["serviceAccount"] = name
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            container.setdefault("imagePullPolicy", "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            for port in container.get("ports") or []:
                port.setdefault("protocol", "TCP")
            for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = container.get(probe_name)
                if isinstance(probe, dict):
                    probe.setdefault("periodSeconds", 10)
                    probe.setdefault("timeoutSeconds", 1)
                    probe.setdefault("successThreshold", 1)
                    probe.setdefault("failureThreshold", 3)
                    http = probe.get("httpGet")
                    if isinstance(http, dict):
                        http.setdefault("path", "/")
                        http.setdefault("scheme", "HTTP")
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("fieldRef")
                if isinstance(ref, dict):
                    ref.setdefault("apiVersion", "v1")


def _pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("nodeName", NODE_NAME)
    spec.setdefault("enableServiceLinks", True)
    obj.setdefault("status", {}).setdefault("phase", "Pending")
    obj["status"].setdefault("qosClass", "BestEffort")


def _template(obj: Obj) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    template.setdefault("metadata", {})
    pod_spec(template.setdefault("spec", {}))


def _deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxSurge", "25%")
        rolling.setdefault("maxUnavailable", "25%")
    _template(obj)


def _replicaset(obj: Obj) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def _service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _secret(obj: Obj) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"


_DEFAULTERS = {
    "namespaces": _namespace,
    "pods": _pod,
    "deployments": _deployment,
    "replicasets": _replicaset,
    "services": _service,
    "secrets": _secret,
}
