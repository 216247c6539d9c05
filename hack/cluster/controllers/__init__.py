"""The controllers of the local cluster: Deployments, ReplicaSets, EndpointSlices, Namespaces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List

from .deployment import DeploymentController
from .endpointslice import EndpointSliceController
from .namespace import NamespaceController, NodelessPodFinalizer
from .replicaset import ReplicaSetController

if TYPE_CHECKING:
    from ..cluster import Cluster


def start_all(cluster: Cluster) -> List[Any]:
    controllers: List[Any] = [
        NamespaceController(cluster.store, cluster.ca_pem),
        DeploymentController(cluster.store),
        ReplicaSetController(cluster.store),
        EndpointSliceController(cluster.store),
    ]
    if not cluster.want_node:
        controllers.append(NodelessPodFinalizer(cluster.store))
    return [c.start() for c in controllers]
