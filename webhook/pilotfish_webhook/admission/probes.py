"""Readiness and preStop: point them at the agent's status port (docs/injection.md).

The app's own readiness probe is replaced by ``httpGet :55199/readiness`` and travels to the
agent, named ports resolved, in ``PILOTFISH_APP_PROBE`` (format: docs/injection.md).
Exec probes and probes another injector already took over are left alone, with a note.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from pilotfish_webhook.admission import contract as c
from pilotfish_webhook.admission.patch import clone
from pilotfish_webhook.admission.podspec import env_entry, set_env

Obj = Dict[str, Any]

PROBE_HANDLERS = ("httpGet", "tcpSocket", "grpc", "exec")
ISTIO_STATUS_PORTS = (15020, 15021)  # where Istio's injector points rewritten app probes


def _is_ours(handler: Any, port: int, path: str) -> bool:
    return isinstance(handler, dict) and handler.get("port") == port and handler.get("path") == path


def resolve_port(container: Obj, port: Any) -> Optional[int]:
    """IntOrString port -> number, looking named ports up in this container only."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or []:
            if isinstance(declared, dict) and declared.get("name") == port:
                number = declared.get("containerPort")
                return number if isinstance(number, int) else None
    return None


def carried_probe(container: Obj, probe: Obj) -> Tuple[Optional[Obj], Optional[str]]:
    """The original probe as the agent receives it (named ports resolved), or why not."""
    carried = clone(probe)
    for handler in ("httpGet", "tcpSocket"):
        if isinstance(carried.get(handler), dict):
            number = resolve_port(container, carried[handler].get("port"))
            if number is None:
                return None, "readiness %s port %r matches no containerPort; probe kept as is" % (
                    handler,
                    carried[handler].get("port"),
                )
            carried[handler]["port"] = number
    return carried, None


def agent_probe(port: int, timing_from: Optional[Obj] = None) -> Obj:
    probe: Obj = {"httpGet": {"path": c.READINESS_PATH, "port": port, "scheme": "HTTP"}}
    if timing_from is None:
        probe.update({"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3})
    else:
        probe.update({k: v for k, v in timing_from.items() if k not in PROBE_HANDLERS})
    return probe


def _rewritten_by_istio(probe: Obj) -> bool:
    handler = probe.get("httpGet")
    return (
        isinstance(handler, dict)
        and handler.get("port") in ISTIO_STATUS_PORTS
        and str(handler.get("path", "")).startswith("/app-health/")
    )


def rewrite_readiness(container: Obj, port: int, notes: List[str]) -> None:
    """Point readiness at the agent and hand it the original (docs/injection.md)."""
    name = container.get("name")
    probe = container.get("readinessProbe")
    if probe is None:
        if not container.get("ports"):
            # No probe and no declared port: likely a worker (Celery, a consumer). The agent
            # stands down in processes that never listen, so a probe on its status port would
            # never pass and the rollout would hang. Readiness stays as it was (none).
            notes.append("container %s: declares no port and has no readiness probe; none added" % name)
            return
        container["readinessProbe"] = agent_probe(port)
        return
    if not isinstance(probe, dict) or _is_ours(probe.get("httpGet"), port, c.READINESS_PATH):
        return
    if "exec" in probe:
        notes.append("container %s: exec readiness probe left alone" % name)
        return
    if not any(h in probe for h in ("httpGet", "tcpSocket", "grpc")):
        notes.append("container %s: readiness probe with an unknown handler left alone" % name)
        return
    if _rewritten_by_istio(probe):
        # Istio (whose webhook runs before ours) already points readiness at its agent, which
        # probes the app. Taking that over would make the two agents probe each other forever.
        notes.append("container %s: readiness already rewritten by Istio; left alone" % name)
        return
    current = env_entry(container, c.ENV_APP_PROBE)
    if current is not None and "valueFrom" in current:
        notes.append(
            "container %s: %s comes from valueFrom; readiness probe left alone" % (name, c.ENV_APP_PROBE)
        )
        return
    carried, problem = carried_probe(container, probe)
    if carried is None:
        notes.append("container %s: %s" % (name, problem))
        return
    container["readinessProbe"] = agent_probe(port, probe)
    value = json.dumps(carried, sort_keys=True, separators=(",", ":"))
    set_env(container, c.ENV_APP_PROBE, {"value": value}, overwrite=True)


def add_prestop(container: Obj, port: int, token: Optional[str], notes: List[str]) -> None:
    name = container.get("name")
    lifecycle = container.get("lifecycle")
    if lifecycle is not None and not isinstance(lifecycle, dict):
        return
    pre = (lifecycle or {}).get("preStop")
    if pre is not None:
        if not (isinstance(pre, dict) and _is_ours(pre.get("httpGet"), port, c.OFFLINE_PATH)):
            notes.append("container %s: the user's preStop is kept; the agent goes offline on SIGTERM" % name)
        return
    if token is None:
        notes.append("container %s: %s comes from valueFrom; no preStop added" % (name, c.ENV_OFFLINE_TOKEN))
        return
    container.setdefault("lifecycle", {})["preStop"] = {
        "httpGet": {
            "path": c.OFFLINE_PATH,
            "port": port,
            "scheme": "HTTP",
            "httpHeaders": [{"name": c.OFFLINE_TOKEN_HEADER, "value": token}],
        }
    }
