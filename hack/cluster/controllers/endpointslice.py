"""Service + Pods -> EndpointSlice: one slice per Service with a selector, following readiness.

Each pod with an IP that the selector picks is an endpoint with the conditions kube-proxy
and pilotfish's registry read: ``ready`` (Ready and not terminating), ``serving`` (Ready,
terminating or not) and ``terminating``. Named ``targetPort``s resolve against each
pod's container ports; pods that resolve a port differently get their own slice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Tuple

from ..apiserver.selectors import matches_label_selector
from ..store import ApiError, Store
from .base import Controller, Key, Obj, is_ready, terminating

MANAGED_BY = "endpointslice-controller.k8s.io"


def _resolve_port(pod: Obj, target: Any) -> int:
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port.get("containerPort", 0))
    return 0


class EndpointSliceController(Controller):
    name = "endpointslice-controller"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.watch("services", lambda _k, o: [(o["metadata"].get("namespace", ""), o["metadata"]["name"])])
        self.watch("pods", self._services_of)

    def _services_of(self, _kind: str, pod: Obj) -> List[Key]:
        namespace = pod["metadata"].get("namespace", "")
        labels = pod["metadata"].get("labels") or {}
        keys: List[Key] = []
        for svc in self.store.list("services", namespace):
            selector = (svc.get("spec") or {}).get("selector")
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                keys.append((namespace, svc["metadata"]["name"]))
        return keys

    def reconcile(self, namespace: str, name: str) -> None:
        svc = self.store.get("services", namespace, name)
        existing = [
            s
            for s in self.store.list("endpointslices", namespace)
            if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name
            and (s["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by")
            == MANAGED_BY
        ]
        selector = ((svc or {}).get("spec") or {}).get("selector")
        if svc is None or not selector:
            for s in existing:
                self._delete(s)
            if svc is None and self.store.get("endpoints", namespace, name) is not None:
                try:
                    self.store.delete("endpoints", namespace, name)
                except ApiError:
                    pass
            return
        groups: Dict[Tuple[Tuple[str, int], ...], List[Obj]] = {}
        ports_by_key: Dict[Tuple[Tuple[str, int], ...], List[Obj]] = {}
        for pod in self.store.list("pods", namespace):
            status = pod.get("status") or {}
            if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
                continue
            if not matches_label_selector({"matchLabels": selector}, pod["metadata"].get("labels") or {}):
                continue
            ports = []
            for sp in (svc.get("spec") or {}).get("ports") or []:
                number = _resolve_port(pod, sp.get("targetPort", sp.get("port")))
                if number:
                    ports.append(
                        {"name": sp.get("name", ""), "port": number, "protocol": sp.get("protocol", "TCP")}
                    )
            key = tuple((p["name"], p["port"]) for p in ports)
            ports_by_key[key] = ports
            ready = is_ready(pod)
            groups.setdefault(key, []).append(
                {
                    "addresses": [status["podIP"]],
                    "conditions": {
                        "ready": ready and not terminating(pod),
                        "serving": ready,
                        "terminating": terminating(pod),
                    },
                    "nodeName": (pod.get("spec") or {}).get("nodeName"),
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": namespace,
                        "name": pod["metadata"]["name"],
                        "uid": pod["metadata"].get("uid"),
                    },
                }
            )
        if not groups:  # no pods: one empty slice, as the real controller keeps
            groups[()] = []
            ports_by_key[()] = []
        wanted: Dict[str, Obj] = {}
        for key, endpoints in groups.items():
            suffix = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:5]
            slice_name = "%s-%s" % (name, suffix)
            wanted[slice_name] = {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "namespace": namespace,
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Service",
                            "name": name,
                            "uid": svc["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "addressType": "IPv4",
                "endpoints": sorted(endpoints, key=lambda e: e["targetRef"]["name"]),
                "ports": ports_by_key[key],
            }
        for s in existing:
            if s["metadata"]["name"] not in wanted:
                self._delete(s)
        current = {s["metadata"]["name"]: s for s in existing}
        for slice_name, body in wanted.items():
            old = current.get(slice_name)
            if old is None:
                try:
                    self.store.create("endpointslices", body)
                except ApiError:
                    self.requeue_after((namespace, name), 0.5)
            elif old.get("endpoints") != body["endpoints"] or old.get("ports") != body["ports"]:
                body["metadata"] = dict(old["metadata"], labels=body["metadata"]["labels"])
                try:
                    self.store.update("endpointslices", body)
                except ApiError:
                    self.requeue_after((namespace, name), 0.1)
        self._mirror_endpoints(svc, groups, ports_by_key)

    def _mirror_endpoints(
        self, svc: Obj, groups: Dict[Any, List[Obj]], ports_by_key: Dict[Any, List[Obj]]
    ) -> None:
        """The v1 Endpoints object older readers (``kubectl get endpoints``) still look at."""
        namespace, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        subsets = []
        for key, endpoints in groups.items():
            ready: List[Obj] = []
            not_ready: List[Obj] = []
            for ep in endpoints:
                if ep["conditions"]["terminating"]:
                    continue
                address = {
                    "ip": ep["addresses"][0],
                    "nodeName": ep.get("nodeName"),
                    "targetRef": ep["targetRef"],
                }
                (ready if ep["conditions"]["ready"] else not_ready).append(address)
            if not (ready or not_ready):
                continue
            subset: Obj = {"ports": ports_by_key[key]}
            if ready:
                subset["addresses"] = ready
            if not_ready:
                subset["notReadyAddresses"] = not_ready
            subsets.append(subset)
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(svc["metadata"].get("labels") or {}),
            },
            "subsets": subsets,
        }
        old = self.store.get("endpoints", namespace, name)
        try:
            if old is None:
                self.store.create("endpoints", body)
            elif old.get("subsets") != subsets:
                body["metadata"] = dict(old["metadata"])
                self.store.update("endpoints", body)
        except ApiError:
            self.requeue_after((namespace, name), 0.1)

    def _delete(self, eps: Obj) -> None:
        try:
            self.store.delete("endpointslices", eps["metadata"]["namespace"], eps["metadata"]["name"])
        except ApiError:
            pass
