"""What a caller's agent needs to route its outbound calls: ``GET /v1/routing``.

One answer per namespace: every Service (name, ClusterIPs, ports with target
ports) and per Service its instances (IP, the pod port behind each Service
port, tag, state, readiness, when warm-up started) with the *provider's*
warm-up settings, plus whether policies turned routing to that Service off.
The long-poll's ``now`` (added per answer by the router) is this server's
clock, so every caller computes the same warm-up age whatever its own clock
says.

Policies are read for the app behind each Service: ``spec.routing.enabled:
false`` in a policy that selects that app turns routing to the Service off for
every caller, and its ``spec.lossless.warmup`` is the warm-up callers apply to
instances whose agent did not report its own (pods without the agent).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, Optional, Tuple

from pilotfish_webhook.config.registry import Registry
from pilotfish_webhook.config.store import Changes, PolicyStore

# The agent's built-in defaults (agent/pilotfish/settings.py), for instances that report none.
WARMUP_DEFAULTS = {"enabled": True, "seconds": 120.0, "curve": 2.0, "min_weight_percent": 10.0}
_WARMUP_AGENT_KEYS = {
    "enabled": "warmup_enabled",
    "seconds": "warmup_seconds",
    "curve": "warmup_curve",
    "min_weight_percent": "warmup_min_weight_percent",
}


class RoutingView:
    """The per-namespace routing answer, rebuilt only when the registry or the policies changed."""

    def __init__(self, registry: Registry, store: PolicyStore) -> None:
        self.registry = registry
        self.store = store
        self.changes = Changes()
        registry.changes.forward_to(self.changes)
        store.changes.forward_to(self.changes)
        self._memo: Dict[str, Tuple[int, str, Dict[str, Any]]] = {}

    def current(self, namespace: str) -> Tuple[str, Dict[str, Any]]:
        """(version, body without ``now``) for ``namespace``; memoised per change generation."""
        generation = self.changes.generation
        found = self._memo.get(namespace)
        if found is not None and found[0] == generation:
            return found[1], found[2]
        body = self.build(namespace)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        version = hashlib.sha256(canonical).hexdigest()[:16]
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[namespace] = (generation, version, body)
        return version, body

    def build(self, namespace: str) -> Dict[str, Any]:
        snapshot = self.store.snapshot
        services = []
        for service in self.registry.services(namespace):
            config = snapshot.effective(namespace, service["app"]).config
            for instance in service["instances"]:
                own = instance.get("warmup") or {}
                app_config = (
                    snapshot.effective(namespace, instance["app"]).config
                    if instance.get("app") and instance["app"] != service["app"]
                    else config
                )
                instance["warmup"] = _warmup(app_config, own)
            services.append(dict(service, routing_enabled=bool(config.get("routing_enabled", True))))
        return {"namespace": namespace, "services": services}


def _warmup(config: Dict[str, Any], own: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The instance's own report wins (its env may override policies), then policies, then defaults."""
    result = {}
    for key, default in WARMUP_DEFAULTS.items():
        value = (own or {}).get(key)
        if value is None:
            value = config.get(_WARMUP_AGENT_KEYS[key], default)
        result[key] = value
    return result
