"""Which host names mean which Service: the names Kubernetes DNS answers, plus ClusterIPs.

A pod in namespace ``shop`` reaches Service ``stock`` of its own namespace as
``stock``; any pod reaches it as ``stock.shop``, ``stock.shop.svc`` and
``stock.shop.svc.cluster.local``, each also with a trailing dot (an absolute
name), or by its ClusterIP. Rather than parse a host on every call, every such
spelling is a key of one dictionary built when the registry answer arrives, so
the per-call cost of an unknown host is exactly one ``dict.get``.
"""

from __future__ import annotations

from typing import List

CLUSTER_DOMAIN = "cluster.local"


def names(
    service: str, namespace: str, caller_namespace: str, cluster_domain: str = CLUSTER_DOMAIN
) -> List[str]:
    """Every host spelling of ``service.namespace`` that DNS would resolve for the caller."""
    service, namespace = service.lower(), namespace.lower()
    found = []
    if namespace == caller_namespace.lower():
        found.append(service)  # the search path's first entry is the caller's own namespace
    found += [
        "%s.%s" % (service, namespace),
        "%s.%s.svc" % (service, namespace),
        "%s.%s.svc.%s" % (service, namespace, cluster_domain),
    ]
    return found + [name + "." for name in found]
