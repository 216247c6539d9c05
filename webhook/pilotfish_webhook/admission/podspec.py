"""Small readers and writers over a container or pod spec (plain dicts), shared by the mutation.

They encode Kubernetes' own rules where it matters: the *last* env entry of a name wins (as
in the kubelet), and objects pilotfish owns are replaced by name, never duplicated.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from pilotfish_webhook.admission import contract as c

Obj = Dict[str, Any]


def env_entry(container: Obj, name: str) -> Optional[Obj]:
    """The effective env entry of ``name`` (the last one wins, as in the kubelet)."""
    found = None
    for entry in container.get("env") or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            found = entry
    return found


def literal_env(container: Obj, name: str) -> Optional[str]:
    entry = env_entry(container, name)
    if entry is None or "valueFrom" in entry:
        return None
    return str(entry.get("value", ""))


def status_port(container: Obj) -> int:
    """The agent's status port: a literal PILOTFISH_STATUS_PORT overrides 55199 (API default)."""
    value = literal_env(container, c.ENV_STATUS_PORT)
    if value and value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    return c.STATUS_PORT


def set_env(container: Obj, name: str, entry: Obj, overwrite: bool = False) -> None:
    env = container.setdefault("env", [])
    current = env_entry(container, name)
    if current is None:
        env.append({"name": name, **entry})
    elif overwrite:
        current.clear()
        current.update({"name": name, **entry})


def put_by_name(items: List[Obj], obj: Obj, front: bool = False) -> None:
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == obj["name"]:
            items[index] = obj
            return
    if front:
        items.insert(0, obj)
    else:
        items.append(obj)


def add_mount(container: Obj, mount: Obj) -> None:
    mounts = container.setdefault("volumeMounts", [])
    for existing in mounts:
        if existing.get("name") == mount["name"] and existing.get("mountPath") == mount["mountPath"]:
            return
    mounts.append(mount)
