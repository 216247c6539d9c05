"""Deployment -> ReplicaSets: rolling updates with maxSurge/maxUnavailable, revisions, status.

The algorithm is the Kubernetes one, reduced to what the local cluster needs: the new
ReplicaSet (pod-template-hash of the template) is scaled up within ``replicas + maxSurge``
pods in total, old ReplicaSets are scaled down while at least ``replicas - maxUnavailable``
pods stay available; ``Recreate`` empties the old ones first. Each new template gets the
next ``deployment.kubernetes.io/revision``; returning to an old template (``rollout undo``)
reuses its ReplicaSet. Old ReplicaSets beyond ``revisionHistoryLimit`` are deleted.
"""

from __future__ import annotations

import calendar
import copy
import hashlib
import json
import math
import time
from typing import Any, Dict, List, Optional, Tuple

from ..store import ApiError, Store
from .base import Controller, Obj, own_key, owned_by, owner_key, terminating

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"


def template_hash(template: Obj) -> str:
    clean = copy.deepcopy(template)
    (clean.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    digest = hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int(digest[:16], 16)
    out = ""
    for _ in range(10):
        number, rest = divmod(number, len(alphabet))
        out += alphabet[rest]
    return out


def _resolve(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        amount = total * float(value[:-1]) / 100.0
        return int(math.ceil(amount) if round_up else math.floor(amount))
    return int(value or 0)


def surge_and_unavailable(deployment: Obj) -> Tuple[int, int]:
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = _resolve(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _resolve(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _revision(rs: Obj) -> int:
    try:
        return int(((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _template_without_hash(rs: Obj) -> Obj:
    template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return template


class DeploymentController(Controller):
    name = "deployment-controller"

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._progress: Dict[Tuple[str, str], Any] = {}
        self.watch("deployments", lambda _k, o: own_key(o))
        self.watch("replicasets", lambda _k, o: owner_key(o, "Deployment"))

    def reconcile(self, namespace: str, name: str) -> None:
        deployment = self.store.get("deployments", namespace, name)
        if deployment is None or terminating(deployment):
            return
        uid = deployment["metadata"]["uid"]
        sets = [
            rs
            for rs in self.store.list("replicasets", namespace)
            if owned_by(rs, uid) and not terminating(rs)
        ]
        new_rs = self._new_replicaset(deployment, sets)
        if new_rs is None:
            self.requeue_after((namespace, name), 2.0)
            return
        old = [rs for rs in sets if rs["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        spec = deployment.get("spec") or {}
        if not spec.get("paused"):
            if (spec.get("strategy") or {}).get("type") == "Recreate":
                self._recreate(deployment, new_rs, old)
            else:
                self._rolling(deployment, new_rs, old)
        self._cleanup(deployment, old)
        self._status(deployment, new_rs, old)

    # ------------------------------------------------------------------ the new ReplicaSet

    def _new_replicaset(self, deployment: Obj, sets: List[Obj]) -> Optional[Obj]:
        template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
        for rs in sets:
            if _template_without_hash(rs) == template:
                top = max([_revision(r) for r in sets] or [0])
                if (
                    _revision(rs) < top
                ):  # rollback / back to an older template: it becomes the newest revision
                    rs = self._set_revision("replicasets", rs, top + 1) or rs
                self._sync_revision(deployment, _revision(rs))
                return self._sync_rs_settings(deployment, rs)
        digest = template_hash(template)
        meta = deployment["metadata"]
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels[HASH_LABEL] = digest
        template.setdefault("metadata", {})["labels"] = labels
        selector = copy.deepcopy((deployment.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = digest
        revision = max([_revision(r) for r in sets] or [0]) + 1
        body: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "%s-%s" % (meta["name"], digest),
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": {
                    REVISION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(
                        (deployment.get("spec") or {}).get("replicas", 1)
                    ),
                },
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": (deployment.get("spec") or {}).get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            created = self.store.create("replicasets", body)
        except ApiError as exc:
            if exc.code != 409:
                raise
            existing = self.store.get("replicasets", meta["namespace"], body["metadata"]["name"])
            return existing
        self.store.record_event(
            deployment, "ScalingReplicaSet", "Created new replica set %s" % body["metadata"]["name"]
        )
        self._sync_revision(deployment, revision)
        return created

    def _set_revision(self, resource: str, obj: Obj, revision: int) -> Optional[Obj]:
        def edit(o: Obj) -> None:
            o["metadata"].setdefault("annotations", {})[REVISION] = str(revision)

        return self.store.mutate(resource, obj["metadata"]["namespace"], obj["metadata"]["name"], edit)

    def _sync_revision(self, deployment: Obj, revision: int) -> None:
        annotations = deployment["metadata"].get("annotations") or {}
        if annotations.get(REVISION) != str(revision):
            self._set_revision("deployments", deployment, revision)

    def _sync_rs_settings(self, deployment: Obj, rs: Obj) -> Obj:
        wanted = (deployment.get("spec") or {}).get("minReadySeconds", 0)
        if (rs.get("spec") or {}).get("minReadySeconds", 0) == wanted:
            return rs
        return (
            self.store.mutate(
                "replicasets",
                rs["metadata"]["namespace"],
                rs["metadata"]["name"],
                lambda o: o["spec"].__setitem__("minReadySeconds", wanted),
            )
            or rs
        )

    # ------------------------------------------------------------------ scaling

    def _scale(self, deployment: Obj, rs: Obj, replicas: int) -> None:
        current = int((rs.get("spec") or {}).get("replicas", 0))
        if current == replicas:
            return
        desired = str((deployment.get("spec") or {}).get("replicas", 1))

        def edit(o: Obj) -> None:
            o["spec"]["replicas"] = replicas
            o["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = desired

        self.store.mutate("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"], edit)
        rs.setdefault("spec", {})["replicas"] = replicas
        verb = "up" if replicas > current else "down"
        self.store.record_event(
            deployment,
            "ScalingReplicaSet",
            "Scaled %s replica set %s from %d to %d" % (verb, rs["metadata"]["name"], current, replicas),
        )

    def _recreate(self, deployment: Obj, new_rs: Obj, old: List[Obj]) -> None:
        for rs in old:
            self._scale(deployment, rs, 0)
        if any(int((rs.get("status") or {}).get("replicas", 0)) for rs in old):
            return
        self._scale(deployment, new_rs, int((deployment.get("spec") or {}).get("replicas", 1)))

    def _rolling(self, deployment: Obj, new_rs: Obj, old: List[Obj]) -> None:
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        surge, max_unavailable = surge_and_unavailable(deployment)
        if not old:
            self._scale(deployment, new_rs, desired)
            return
        # Scale up the new ReplicaSet within replicas + maxSurge. An old set counts with the pods
        # it still has until its controller reported them gone (stricter than Kubernetes, which
        # counts specs only and so can briefly overshoot while old pods are being deleted).
        total = _spec_replicas(new_rs) + sum(
            max(_spec_replicas(rs), _status_field(rs, "replicas")) for rs in old
        )
        room = desired + surge - total
        if _spec_replicas(new_rs) < desired and room > 0:
            self._scale(deployment, new_rs, min(desired, _spec_replicas(new_rs) + room))
        elif _spec_replicas(new_rs) > desired:
            self._scale(deployment, new_rs, desired)
        # scale down old ones while replicas - maxUnavailable stay available
        all_pods = _spec_replicas(new_rs) + sum(_spec_replicas(rs) for rs in old)
        min_available = desired - max_unavailable
        new_unavailable = _spec_replicas(new_rs) - _status_field(new_rs, "availableReplicas")
        budget = all_pods - min_available - new_unavailable
        for rs in sorted(old, key=_revision):  # first the unhealthy replicas of old sets
            unhealthy = _spec_replicas(rs) - _status_field(rs, "availableReplicas")
            if budget <= 0 or unhealthy <= 0:
                continue
            cut = min(unhealthy, budget)
            self._scale(deployment, rs, _spec_replicas(rs) - cut)
            budget -= cut
        # An old set's status may still count pods it is deleting: never more than its spec.
        available = min(_status_field(new_rs, "availableReplicas"), _spec_replicas(new_rs)) + sum(
            min(_status_field(rs, "availableReplicas"), _spec_replicas(rs)) for rs in old
        )
        budget = min(budget, available - min_available)
        for rs in sorted(old, key=_revision):
            if budget <= 0:
                break
            cut = min(_spec_replicas(rs), budget)
            if cut > 0:
                self._scale(deployment, rs, _spec_replicas(rs) - cut)
                budget -= cut

    def _cleanup(self, deployment: Obj, old: List[Obj]) -> None:
        limit = int((deployment.get("spec") or {}).get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in old
            if int((rs.get("spec") or {}).get("replicas", 0)) == 0
            and int((rs.get("status") or {}).get("replicas", 0)) == 0
        ]
        for rs in sorted(idle, key=_revision)[: max(0, len(idle) - limit)]:
            try:
                self.store.delete("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"])
            except ApiError:
                pass

    # ------------------------------------------------------------------ status

    def _progressing(self, deployment: Obj, new_rs: Obj, previous: Obj, complete: bool, stamp: str) -> Obj:
        """The Progressing condition: refreshed on every step, False once ``progressDeadlineSeconds``
        pass without one (``kubectl rollout status`` then fails instead of waiting forever)."""
        name = new_rs["metadata"]["name"]
        if complete:
            return _condition(
                previous,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                'ReplicaSet "%s" has successfully progressed.' % name,
                stamp,
            )
        old: Optional[Obj] = next(
            (c for c in previous.get("conditions") or [] if c.get("type") == "Progressing"), None
        )
        watched = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
        counts = {k: int((new_rs.get("status") or {}).get(k, 0)) for k in watched}
        key = (deployment["metadata"].get("generation"), name, tuple(sorted(counts.items())))
        moved = self._progress.get(self._key(deployment)) != key
        self._progress[self._key(deployment)] = key
        deadline = int((deployment.get("spec") or {}).get("progressDeadlineSeconds", 600))
        if moved or old is None or old.get("reason") == "NewReplicaSetAvailable":
            condition = _condition(
                previous,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                'ReplicaSet "%s" is progressing.' % name,
                stamp,
            )
            condition["lastUpdateTime"] = stamp
            self.requeue_after(self._key(deployment), deadline + 1)
            return condition
        if old.get("reason") == "ProgressDeadlineExceeded":
            return old
        if time.time() - _stamp_seconds(old.get("lastUpdateTime", stamp)) > deadline:
            return _condition(
                previous,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                'ReplicaSet "%s" has timed out progressing.' % name,
                stamp,
            )
        return old

    @staticmethod
    def _key(deployment: Obj) -> Tuple[str, str]:
        return (deployment["metadata"]["namespace"], deployment["metadata"]["name"])

    def _status(self, deployment: Obj, new_rs: Obj, old: List[Obj]) -> None:
        every = [new_rs, *old]
        desired = int((deployment.get("spec") or {}).get("replicas", 1))
        _, max_unavailable = surge_and_unavailable(deployment)
        replicas = _status_total("replicas", every)
        updated = _status_total("replicas", [new_rs])
        available = _status_total("availableReplicas", every)
        previous = deployment.get("status") or {}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        complete = updated == desired and replicas == desired and available >= desired
        progressing = self._progressing(deployment, new_rs, previous, complete, stamp)
        is_available = available >= desired - max_unavailable
        conditions = [
            _condition(
                previous,
                "Available",
                "True" if is_available else "False",
                "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if is_available
                else "Deployment does not have minimum availability.",
                stamp,
            ),
            progressing,
        ]
        status: Obj = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": _status_total("readyReplicas", every),
            "availableReplicas": available,
            "conditions": conditions,
        }
        if replicas - available > 0:
            status["unavailableReplicas"] = replicas - available
        for key in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
            if not status[key]:
                status.pop(key)
        if status != previous:
            self.store.update_status(
                "deployments", deployment["metadata"]["namespace"], deployment["metadata"]["name"], status
            )


def _stamp_seconds(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")))


def _condition(previous: Obj, kind: str, value: str, reason: str, message: str, stamp: str) -> Obj:
    old = next((c for c in previous.get("conditions") or [] if c.get("type") == kind), None)
    same = (
        old is not None
        and old.get("status") == value
        and old.get("reason") == reason
        and old.get("message") == message
    )
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "lastUpdateTime": old.get("lastUpdateTime", stamp) if same and old else stamp,
        "lastTransitionTime": old.get("lastTransitionTime", stamp)
        if old and old.get("status") == value
        else stamp,
    }


def _spec_replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def _status_field(rs: Obj, field: str) -> int:
    return int((rs.get("status") or {}).get(field, 0))


def _status_total(field: str, sets: List[Obj]) -> int:
    return sum(_status_field(rs, field) for rs in sets)
