"""kube-proxy for the local cluster: Services and EndpointSlices from the store onto the network.

Watches ``services`` and ``endpointslices`` and, for every ClusterIP Service, tells the
:class:`~hack.cluster.network.Network` which endpoints each port may send new connections to:
the ready ones, or, when none is ready, the serving ones that are terminating (kube-proxy's
fallback, so draining pods still take traffic rather than connections being refused).
Named ``targetPort`` s arrive already resolved per pod in the EndpointSlice ports.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .network import Network, ServicePort

__all__ = ["ServiceProxy", "service_ports"]

log = logging.getLogger("pilotfish.cluster.proxy")

Obj = Dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def _endpoints(slice_: Obj) -> List[Tuple[str, bool, bool, bool]]:
    """(address, ready, serving, terminating) of every endpoint of one slice."""
    out = []
    for ep in slice_.get("endpoints") or []:
        cond = ep.get("conditions") or {}
        ready = cond.get("ready") is not False  # absent means ready (the API's rule)
        serving = cond.get("serving", ready) is not False
        terminating = bool(cond.get("terminating", False))
        for address in ep.get("addresses") or []:
            out.append((str(address), ready, serving, terminating))
    return out


def service_ports(service: Obj, slices: List[Obj]) -> List[ServicePort]:
    """What each port of ``service`` sends new connections to, given its EndpointSlices."""
    result = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        name = sp.get("name") or ""
        protocol = sp.get("protocol") or "TCP"
        ready: List[Tuple[str, int]] = []
        fallback: List[Tuple[str, int]] = []
        for sl in slices:
            target: Optional[int] = None
            for p in sl.get("ports") or []:
                if (p.get("name") or "") == name and (p.get("protocol") or "TCP") == protocol:
                    target = p.get("port")
            if target is None:
                tp = sp.get("targetPort", sp.get("port"))
                target = tp if isinstance(tp, int) else None
            if not isinstance(target, int):
                continue
            for address, is_ready, serving, terminating in _endpoints(sl):
                if is_ready:
                    ready.append((address, target))
                elif serving and terminating:
                    fallback.append((address, target))
        chosen = sorted(set(ready or fallback))
        result.append(ServicePort(name, protocol, int(sp.get("port", 0)), tuple(chosen)))
    return result


class ServiceProxy:
    """Keeps the network's Service rules and pod hosts files in step with the store."""

    def __init__(self, store: Any, network: Network, api_endpoint: Optional[Tuple[str, int]] = None) -> None:
        self.store = store
        self.network = network
        self.api_endpoint = api_endpoint  # where default/kubernetes:443 goes without an EndpointSlice
        self._lock = threading.Lock()
        self._services: Dict[Tuple[str, str], Obj] = {}
        self._slices: Dict[Tuple[str, str], Obj] = {}  # (namespace, slice name) -> slice
        self._programmed: Dict[Tuple[str, str], Tuple[str, List[ServicePort]]] = {}
        self._unsubscribe: List[Callable[[], None]] = []
        self._warned: Set[str] = set()

    def start(self) -> None:
        self._unsubscribe.append(self.store.subscribe("services", self._on_service))
        self._unsubscribe.append(self.store.subscribe("endpointslices", self._on_slice))

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()

    def _on_service(self, event: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace") or "default", meta.get("name") or "")
        with self._lock:
            if event == "DELETED":
                self._services.pop(key, None)
            else:
                self._services[key] = obj
            self._sync(key)

    def _on_slice(self, event: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        key = (namespace, meta.get("name") or "")
        with self._lock:
            old = self._slices.get(key)
            if event == "DELETED":
                self._slices.pop(key, None)
            else:
                self._slices[key] = obj
            for sl in (old, obj):
                owner = ((sl or {}).get("metadata") or {}).get("labels", {}).get(SERVICE_NAME_LABEL)
                if owner:
                    self._sync((namespace, owner))

    def _sync(self, key: Tuple[str, str]) -> None:
        service = self._services.get(key)
        cluster_ip = ((service or {}).get("spec") or {}).get("clusterIP")
        if service is None or not cluster_ip or cluster_ip == "None" or not self._in_range(cluster_ip):
            if self._programmed.pop(key, None) is not None:
                self.network.remove_service(*key)
            return
        slices = [
            sl
            for (ns, _), sl in self._slices.items()
            if ns == key[0]
            and ((sl.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL) == key[1]
        ]
        ports = service_ports(service, slices)
        if key == ("default", "kubernetes") and not slices and self.api_endpoint:
            ports = [ServicePort(p.name, p.protocol, p.port, (self.api_endpoint,)) for p in ports]
        if self._programmed.get(key) == (cluster_ip, ports):
            return
        self._programmed[key] = (cluster_ip, ports)
        self.network.set_service(key[0], key[1], cluster_ip, ports)

    def _in_range(self, cluster_ip: str) -> bool:
        try:
            inside = ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(self.network.service_cidr)
        except ValueError:
            inside = False
        if not inside and cluster_ip not in self._warned:
            self._warned.add(cluster_ip)
            log.warning(
                "Service clusterIP %s is outside this cluster's Service range %s: not routed",
                cluster_ip,
                self.network.service_cidr,
            )
        return inside
