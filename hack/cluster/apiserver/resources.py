"""The API's resource table: which kinds exist, under which group/version, namespaced or not.

Built-in kinds are listed here; CustomResourceDefinitions add theirs at run time
(:meth:`Registry.from_store` reads the stored CRDs), so discovery, OpenAPI and routing all
see the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..store import GROUPS, Store

Obj = Dict[str, Any]

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: Tuple[str, ...] = ()
    subresources: Tuple[str, ...] = ()
    schema: Optional[Obj] = field(default=None, compare=False, hash=False)  # CRDs: openAPIV3Schema

    @property
    def group_version(self) -> str:
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def store_name(self) -> str:
        """The store's key: the plural for built-ins, ``plural.group`` for custom resources."""
        return self.plural if self.schema is None else "%s.%s" % (self.plural, self.group)

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _r(
    gv: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short: Tuple[str, ...] = (),
    sub: Tuple[str, ...] = (),
) -> Resource:
    group, _, version = gv.rpartition("/")
    return Resource(group, version, plural, kind, namespaced, short, sub)


BUILTIN: List[Resource] = [
    _r("v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
    _r("v1", "pods", "Pod", True, ("po",), ("status", "log", "binding", "eviction")),
    _r("v1", "services", "Service", True, ("svc",), ("status",)),
    _r("v1", "endpoints", "Endpoints", True, ("ep",)),
    _r("v1", "configmaps", "ConfigMap", True, ("cm",)),
    _r("v1", "secrets", "Secret", True),
    _r("v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    _r("v1", "events", "Event", True, ("ev",)),
    _r("v1", "nodes", "Node", False, ("no",), ("status",)),
    _r("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",)),
    _r("v1", "resourcequotas", "ResourceQuota", True, ("quota",)),
    _r("v1", "limitranges", "LimitRange", True, ("limits",)),
    _r("apps/v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale")),
    _r("apps/v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale")),
    _r("apps/v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale")),
    _r("apps/v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",)),
    _r("apps/v1", "controllerrevisions", "ControllerRevision", True),
    _r("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), ("status",)),
    _r("rbac.authorization.k8s.io/v1", "roles", "Role", True),
    _r("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    _r("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
    ),
    _r(
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
    ),
    _r(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        ("status",),
    ),
    _r("discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True),
    _r("authentication.k8s.io/v1", "tokenreviews", "TokenReview", False),
    _r("coordination.k8s.io/v1", "leases", "Lease", True),
    _r("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _r("networking.k8s.io/v1", "ingresses", "Ingress", True, ("ing",), ("status",)),
    _r("batch/v1", "jobs", "Job", True, (), ("status",)),
    _r("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    _r("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, ("hpa",), ("status",)),
]
for _res in BUILTIN:
    if _res.group:
        GROUPS.setdefault(_res.plural, _res.group)


class Registry:
    """Lookup by (group, version, plural) and by kind, over built-ins plus the stored CRDs."""

    def __init__(self, resources: List[Resource]) -> None:
        self.resources = resources
        self._by_path = {(r.group, r.version, r.plural): r for r in resources}

    @classmethod
    def from_store(cls, store: Store) -> Registry:
        return cls(BUILTIN + crd_resources(store))

    def find(self, group: str, version: str, plural: str) -> Optional[Resource]:
        return self._by_path.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> Optional[Resource]:
        for r in self.resources:
            if r.group_version == api_version and r.kind == kind:
                return r
        return None

    def group_versions(self) -> Dict[str, List[str]]:
        """group -> versions (preferred first), in table order."""
        found: Dict[str, List[str]] = {}
        for r in self.resources:
            versions = found.setdefault(r.group, [])
            if r.version not in versions:
                versions.append(r.version)
        return found

    def in_group_version(self, group: str, version: str) -> List[Resource]:
        return [r for r in self.resources if r.group == group and r.version == version]


def crd_resources(store: Store) -> List[Resource]:
    found: List[Resource] = []
    for crd in store.list("customresourcedefinitions"):
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object"}
            subresources = tuple(sorted((version.get("subresources") or {}).keys()))
            found.append(
                Resource(
                    spec.get("group", ""),
                    version.get("name", "v1"),
                    names.get("plural", ""),
                    names.get("kind", ""),
                    spec.get("scope", "Namespaced") == "Namespaced",
                    tuple(names.get("shortNames") or ()),
                    subresources,
                    schema,
                )
            )
    return found
