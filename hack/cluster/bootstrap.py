"""What a fresh cluster has before anyone applies anything: namespaces, the node, ``kubernetes``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .defaults import NODE_NAME

if TYPE_CHECKING:
    from .cluster import Cluster


def seed(cluster: Cluster) -> None:
    store = cluster.store
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        store.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    address = "127.0.0.1"
    if cluster.api_url_for_pods:
        address = cluster.api_url_for_pods.split("//", 1)[1].rsplit(":", 1)[0]
    store.create(
        "nodes",
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
            },
            "spec": {},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": address},
                    {"type": "Hostname", "address": NODE_NAME},
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        },
    )
    store.create(
        "services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver"}},
            "spec": {
                "clusterIP": store.kubernetes_ip,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": cluster.api.port}],
            },
        },
    )
    store.create(
        "endpointslices",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "local-cluster",
                },
            },
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": [address], "conditions": {"ready": True, "serving": True, "terminating": False}}
            ],
            "ports": [{"name": "https", "port": cluster.api.port, "protocol": "TCP"}],
        },
    )
