"""Namespaces: each gets a ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap;
a deleted one is emptied (pods gracefully) and removed once nothing is left in it.

Also, on a cluster without a node (API-only runs), stands in for the kubelet's last step:
pods marked for deletion are removed at once, since nothing else would ever finalize them.
"""

from __future__ import annotations

from typing import Any

from ..store import CLUSTER_SCOPED, ApiError, Store
from .base import Controller, own_key, terminating


class NamespaceController(Controller):
    name = "namespace-controller"

    def __init__(self, store: Store, ca_pem: bytes) -> None:
        super().__init__(store)
        self.ca_pem = ca_pem
        self.watch("namespaces", lambda _k, o: [("", o["metadata"]["name"])])

    def reconcile(self, _namespace: str, name: str) -> None:
        ns = self.store.get("namespaces", None, name)
        if ns is None:
            return
        if not terminating(ns):
            self._populate(name)
            return
        left = 0
        for resource in self.store.resources():
            if resource in CLUSTER_SCOPED or resource == "namespaces":
                continue
            for obj in self.store.list(resource, name):
                left += 1
                if terminating(obj):
                    continue
                try:
                    self.store.delete(resource, name, obj["metadata"]["name"])
                except ApiError:
                    pass
        if left:
            self.requeue_after(("", name), 0.5)
        else:
            self.store.finalize_delete("namespaces", None, name)

    def _populate(self, name: str) -> None:
        if self.store.get("serviceaccounts", name, "default") is None:
            body: Any = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name},
            }
            try:
                self.store.create("serviceaccounts", body)
            except ApiError:
                pass
        if self.store.get("configmaps", name, "kube-root-ca.crt") is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": name},
                "data": {"ca.crt": self.ca_pem.decode()},
            }
            try:
                self.store.create("configmaps", body)
            except ApiError:
                pass


class NodelessPodFinalizer(Controller):
    """Without a kubelet, a pod marked for deletion is removed at once."""

    name = "nodeless-pod-finalizer"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.watch("pods", lambda _k, o: own_key(o) if terminating(o) else [])

    def reconcile(self, namespace: str, name: str) -> None:
        pod = self.store.get("pods", namespace, name)
        if pod is not None and terminating(pod):
            self.store.finalize_delete("pods", namespace, name)
