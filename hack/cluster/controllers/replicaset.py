"""ReplicaSet -> Pods: keep ``spec.replicas`` live pods, report ready/available counts.

A pod counts as available once Ready for ``minReadySeconds``; terminating pods no longer
count (they are on their way out, as in Kubernetes >= 1.26). Surplus pods go not-ready
first, then the youngest.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import List

from ..store import ApiError, Store
from .base import Controller, Obj, is_ready, own_key, owned_by, owner_key, ready_since, terminating


class ReplicaSetController(Controller):
    name = "replicaset-controller"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.watch("replicasets", lambda _k, o: own_key(o))
        self.watch("pods", lambda _k, o: owner_key(o, "ReplicaSet"))

    def reconcile(self, namespace: str, name: str) -> None:
        rs = self.store.get("replicasets", namespace, name)
        if rs is None or terminating(rs):
            return
        uid = rs["metadata"]["uid"]
        pods = [p for p in self.store.list("pods", namespace) if owned_by(p, uid)]
        active = [
            p
            for p in pods
            if not terminating(p) and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        wanted = int((rs.get("spec") or {}).get("replicas", 1))
        if len(active) < wanted:
            for _ in range(wanted - len(active)):
                if not self._create_pod(rs):
                    self.requeue_after((namespace, name), 2.0)
                    break
        elif len(active) > wanted:
            doomed = sorted(
                active, key=lambda p: (is_ready(p), p["metadata"].get("creationTimestamp", "")), reverse=False
            )
            doomed = sorted(active, key=lambda p: (is_ready(p), _neg_created(p)))[: len(active) - wanted]
            for pod in doomed:
                try:
                    self.store.delete("pods", namespace, pod["metadata"]["name"])
                    self.store.record_event(
                        rs, "SuccessfulDelete", "Deleted pod: %s" % pod["metadata"]["name"]
                    )
                except ApiError:
                    pass
        self._status(rs, [p for p in pods if not terminating(p)])

    def _create_pod(self, rs: Obj) -> bool:
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        meta = template.setdefault("metadata", {})
        meta["name"] = "%s-%s" % (rs["metadata"]["name"], uuid.uuid4().hex[:5])
        meta["generateName"] = rs["metadata"]["name"] + "-"
        meta["namespace"] = rs["metadata"]["namespace"]
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs["metadata"]["name"],
                "uid": rs["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}
        try:
            created = self.store.create("pods", pod)
        except ApiError as exc:
            self.store.record_event(rs, "FailedCreate", "Error creating: %s" % exc.message, "Warning")
            return False
        self.store.record_event(rs, "SuccessfulCreate", "Created pod: %s" % created["metadata"]["name"])
        return True

    def _status(self, rs: Obj, pods: List[Obj]) -> None:
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        now = time.time()
        ready = [p for p in pods if is_ready(p)]
        available = 0
        wake = None
        for pod in ready:
            since = ready_since(pod) or 0.0
            if now - since >= min_ready:
                available += 1
            else:
                wake = min(wake or 1e9, min_ready - (now - since))
        if wake is not None:
            self.requeue_after((rs["metadata"]["namespace"], rs["metadata"]["name"]), wake + 0.05)
        labels = ((rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        status = {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1
                for p in pods
                if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            ),
            "readyReplicas": len(ready),
            "availableReplicas": available,
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        self.store.update_status("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"], status)


def _neg_created(pod: Obj) -> str:
    # youngest first: invert the timestamp's sort order
    stamp = pod["metadata"].get("creationTimestamp", "")
    return "".join(chr(255 - ord(c)) for c in stamp)
