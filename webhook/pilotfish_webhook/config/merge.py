"""Policies in, one flat effective config per app out.

Scopes, merged in this order (later wins, field by field):
1. cluster: policies in the server's own (system) namespace — without a selector
   first, then those with ``spec.selector.apps`` naming the app;
2. namespace: policies in the app's namespace without a selector;
3. app: policies in the app's namespace whose ``spec.selector.apps`` names it.
Within one scope, policies apply in name order, so the result never depends on
the order objects arrived in. The pod's explicit env wins over all of it; that
last step happens in the agent (``pilotfish.settings``), which is why the output
is the agent's own flat vocabulary (``settings.FIELDS`` names plus ``lanes``).

Lists (tag headers, ignore paths, lanes) replace, they do not append: a lane
list is a routing table, and half of two tables is neither.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from pilotfish_webhook.config import schema


class InvalidPolicy(ValueError):
    """A GovernancePolicy object that must not be applied; the message names it and the field."""


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    spec: Dict[str, Any]
    resource_version: str = ""

    @property
    def key(self) -> str:
        return "%s/%s" % (self.namespace, self.name)

    @property
    def apps(self) -> Optional[Tuple[str, ...]]:
        selector = self.spec.get("selector")
        return tuple(selector["apps"]) if selector else None


def describe(obj: Any, origin: str = "") -> str:
    """How to name an object in an error message, as far as it can be named."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    label = "GovernancePolicy %s/%s" % (name_label(namespace, "default"), name_label(name, "<unnamed>"))
    return "%s (%s)" % (label, origin) if origin else label


def name_label(value: Any, missing: str) -> str:
    """A name for messages: Kubernetes names are at most 253 characters, anything else is shown."""
    if not value:
        return missing
    if isinstance(value, str) and len(value) <= 253:
        return value
    return schema.shown(value)


def parse_policy(obj: Any, origin: str = "", default_namespace: str = "default") -> Policy:
    """Validate one object; raise :class:`InvalidPolicy` naming the object and every bad field."""
    who = describe(obj, origin)
    if not isinstance(obj, dict):
        raise InvalidPolicy("%s: expected a mapping (got %s)" % (who, type(obj).__name__))
    problems: List[str] = []
    if obj.get("apiVersion") != schema.API_VERSION:
        problems.append(
            "apiVersion: must be %s (got %s)" % (schema.API_VERSION, schema.shown(obj.get("apiVersion")))
        )
    if obj.get("kind") != schema.KIND:
        problems.append("kind: must be %s (got %s)" % (schema.KIND, schema.shown(obj.get("kind"))))
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta.get("name"):
        problems.append("metadata.name: required")
        meta = meta if isinstance(meta, dict) else {}
    elif len(meta["name"]) > 253:
        problems.append("metadata.name: at most 253 characters")
    namespace = meta.get("namespace", default_namespace)
    if isinstance(namespace, str) and len(namespace) > 253:
        problems.append("metadata.namespace: at most 253 characters")
    elif not isinstance(namespace, str) or not namespace:
        problems.append("metadata.namespace: expected a non-empty string (got %s)" % schema.shown(namespace))
    spec = obj.get("spec")
    if spec is None:
        problems.append("spec: required")
    else:
        problems.extend(str(p) for p in schema.validate(spec))
    if problems:
        shown = problems[: schema.MAX_PROBLEMS]
        if len(problems) > len(shown):
            shown.append("and %d more problem(s)" % (len(problems) - len(shown)))
        raise InvalidPolicy("%s: %s" % (who, "; ".join(shown)))
    assert isinstance(spec, dict)
    return Policy(str(namespace), str(meta["name"]), spec, str(meta.get("resourceVersion") or ""))


def _get(spec: Mapping[str, Any], path: Tuple[str, ...]) -> Tuple[bool, Any]:
    node: Any = spec
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _condition(cond: Mapping[str, Any]) -> Dict[str, Any]:
    source = "header" if "header" in cond else "cookie"
    name = str(cond[source])
    return {
        "source": source,
        "name": name.lower() if source == "header" else name,
        "op": cond.get("op", "exact"),
        "values": list(cond.get("values") or []),
    }


def flat_lanes(lanes: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Lanes in the agent's vocabulary (snake_case, header names lower-cased)."""
    out: List[Dict[str, Any]] = []
    for lane in lanes:
        hash_key = lane.get("hashKey")
        hashed: Optional[Dict[str, str]] = None
        if hash_key:
            source, _, name = str(hash_key).partition(":")
            hashed = {"source": source, "name": name.lower() if source == "header" else name}
        out.append(
            {
                "name": lane["name"],
                "tag": lane["tag"],
                "match": [_condition(c) for c in lane.get("match") or []],
                "percentage": float(lane.get("percentage", 100)),
                "hash": hashed,
            }
        )
    return out


def flatten(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """One policy's spec as flat agent keys (only the fields it sets)."""
    flat: Dict[str, Any] = {}
    for path, node in schema.agent_leaves():
        present, value = _get(spec, path)
        if not present:
            continue
        key = getattr(node, "agent_key", None)
        assert key
        if key == "lanes":
            flat[key] = flat_lanes(value)
        elif key == "tag_headers":
            flat[key] = [str(v).lower() for v in value]
        else:
            flat[key] = list(value) if isinstance(value, list) else value
    return flat


@dataclass
class Effective:
    """What one app gets: the flat config, its version, and which policies made it."""

    config: Dict[str, Any]
    version: str
    sources: List[str]
    body: bytes = field(default=b"", repr=False)


def version_of(config: Mapping[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


class PolicySet:
    """An immutable set of valid policies; :meth:`effective` is memoised per (namespace, app)."""

    def __init__(self, policies: Iterable[Policy], system_namespace: str) -> None:
        self.policies: Dict[str, Policy] = {p.key: p for p in policies}
        self.system_namespace = system_namespace
        self._memo: Dict[Tuple[str, str], Effective] = {}

    def layers(self, namespace: str, app: str) -> List[Policy]:
        """The policies that apply to ``app`` in ``namespace``, lowest precedence first."""
        chosen: List[Tuple[Tuple[int, int, str], Policy]] = []
        for policy in self.policies.values():
            apps = policy.apps
            if apps is not None and app not in apps:
                continue
            if policy.namespace == self.system_namespace:
                rank = 0
            elif policy.namespace == namespace:
                rank = 1
            else:
                continue
            chosen.append(((rank, 0 if apps is None else 1, policy.name), policy))
        return [policy for _, policy in sorted(chosen, key=lambda item: item[0])]

    def effective(self, namespace: str, app: str) -> Effective:
        memo_key = (namespace, app)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        config: Dict[str, Any] = {}
        layers = self.layers(namespace, app)
        for policy in layers:
            config.update(flatten(policy.spec))
        version = version_of(config)
        sources = [p.key for p in layers]
        body = json.dumps(
            {"version": version, "config": config, "sources": sources}, separators=(",", ":")
        ).encode()
        result = Effective(config, version, sources, body)
        self._memo[memo_key] = result
        return result
