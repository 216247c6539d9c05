"""``kubectl get`` columns: the server-side Table (``Accept: ...;as=Table;g=meta.k8s.io``).

kubectl prints whatever columns the server sends; without a Table it falls back to NAME and
AGE. The columns here are the ones kubectl users expect for the kinds they look at most.
"""

from __future__ import annotations

import calendar
import time
from typing import Any, Callable, Dict, List, Tuple

Obj = Dict[str, Any]
Column = Tuple[str, str, Callable[[Obj], Any]]  # name, type, cell


def age(obj: Obj) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    seconds = int(time.time() - calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))
    seconds = max(seconds, 0)
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm" % (seconds // 60) if seconds >= 600 else "%dm%ds" % (seconds // 60, seconds % 60)
    if seconds < 86400:
        return "%dh" % (seconds // 3600)
    return "%dd" % (seconds // 86400)


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _pod_ready(pod: Obj) -> str:
    statuses = _status(pod).get("containerStatuses") or []
    total = len(_spec(pod).get("containers") or [])
    return "%d/%d" % (sum(1 for s in statuses if s.get("ready")), total)


def _pod_phase(pod: Obj) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    status = _status(pod)
    for s in status.get("initContainerStatuses") or []:
        state = s.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason") not in (None, "PodInitializing"):
            return "Init:" + str(state["waiting"]["reason"])
        if "running" in state:
            return "Init:%d/%d" % (
                sum(
                    1
                    for x in status.get("initContainerStatuses") or []
                    if "terminated" in (x.get("state") or {})
                ),
                len(_spec(pod).get("initContainers") or []),
            )
    for s in status.get("containerStatuses") or []:
        state = s.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            return str(state["waiting"]["reason"])
        if "terminated" in state and state["terminated"].get("reason") and status.get("phase") != "Running":
            return str(state["terminated"]["reason"])
    return str(status.get("phase", "Pending"))


def _restarts(pod: Obj) -> int:
    return sum(int(s.get("restartCount", 0)) for s in _status(pod).get("containerStatuses") or [])


def _ports(svc: Obj) -> str:
    parts = []
    for p in _spec(svc).get("ports") or []:
        text = "%s/%s" % (p.get("port"), p.get("protocol", "TCP"))
        if p.get("nodePort"):
            text = "%s:%s/%s" % (p.get("port"), p.get("nodePort"), p.get("protocol", "TCP"))
        parts.append(text)
    return ",".join(parts) or "<none>"


def _slice_endpoints(eps: Obj) -> str:
    addresses = [a for e in eps.get("endpoints") or [] for a in e.get("addresses") or []]
    if not addresses:
        return "<unset>"
    return ",".join(addresses[:3]) + (" + %d more..." % (len(addresses) - 3) if len(addresses) > 3 else "")


def _endpoints(ep: Obj) -> str:
    pairs = [
        "%s:%s" % (a.get("ip"), p.get("port"))
        for subset in ep.get("subsets") or []
        for a in subset.get("addresses") or []
        for p in subset.get("ports") or [{}]
    ]
    if not pairs:
        return "<none>"
    return ",".join(pairs[:3]) + (" + %d more..." % (len(pairs) - 3) if len(pairs) > 3 else "")


COLUMNS: Dict[str, List[Column]] = {
    "endpoints": [("Name", "string", _name), ("Endpoints", "string", _endpoints), ("Age", "string", age)],
    "pods": [
        ("Name", "string", _name),
        ("Ready", "string", _pod_ready),
        ("Status", "string", _pod_phase),
        ("Restarts", "integer", _restarts),
        ("Age", "string", age),
        ("IP", "string", lambda o: _status(o).get("podIP") or "<none>"),
        ("Node", "string", lambda o: _spec(o).get("nodeName") or "<none>"),
    ],
    "deployments": [
        ("Name", "string", _name),
        (
            "Ready",
            "string",
            lambda o: "%d/%d" % (_status(o).get("readyReplicas", 0), _spec(o).get("replicas", 1)),
        ),
        ("Up-to-date", "integer", lambda o: _status(o).get("updatedReplicas", 0)),
        ("Available", "integer", lambda o: _status(o).get("availableReplicas", 0)),
        ("Age", "string", age),
    ],
    "replicasets": [
        ("Name", "string", _name),
        ("Desired", "integer", lambda o: _spec(o).get("replicas", 1)),
        ("Current", "integer", lambda o: _status(o).get("replicas", 0)),
        ("Ready", "integer", lambda o: _status(o).get("readyReplicas", 0)),
        ("Age", "string", age),
    ],
    "services": [
        ("Name", "string", _name),
        ("Type", "string", lambda o: _spec(o).get("type", "ClusterIP")),
        ("Cluster-IP", "string", lambda o: _spec(o).get("clusterIP") or "<none>"),
        ("External-IP", "string", lambda o: "<none>"),
        ("Port(s)", "string", _ports),
        ("Age", "string", age),
    ],
    "namespaces": [
        ("Name", "string", _name),
        ("Status", "string", lambda o: _status(o).get("phase", "Active")),
        ("Age", "string", age),
    ],
    "endpointslices": [
        ("Name", "string", _name),
        ("AddressType", "string", lambda o: o.get("addressType", "IPv4")),
        (
            "Ports",
            "string",
            lambda o: ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>",
        ),
        ("Endpoints", "string", _slice_endpoints),
        ("Age", "string", age),
    ],
    "events": [
        ("Last Seen", "string", age),
        ("Type", "string", lambda o: o.get("type", "")),
        ("Reason", "string", lambda o: o.get("reason", "")),
        (
            "Object",
            "string",
            lambda o: (
                "%s/%s"
                % (
                    (o.get("involvedObject") or {}).get("kind", "").lower(),
                    (o.get("involvedObject") or {}).get("name", ""),
                )
            ),
        ),
        ("Message", "string", lambda o: o.get("message", "")),
    ],
}
DEFAULT: List[Column] = [("Name", "string", _name), ("Age", "string", age)]
WIDE_ONLY = {("pods", "IP"), ("pods", "Node")}


def wants_table(accept: str) -> bool:
    return "as=Table" in (accept or "")


def table(plural: str, objects: List[Obj], resource_version: str = "") -> Obj:
    columns = COLUMNS.get(plural, DEFAULT)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": name,
                "priority": 1 if (plural, name) in WIDE_ONLY else 0,
            }
            for name, kind, _ in columns
        ],
        "rows": [{"cells": [cell(obj) for _, _, cell in columns], "object": obj} for obj in objects],
    }
