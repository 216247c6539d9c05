"""A container's environment the way the kubelet builds it, and Kubernetes' ``$(VAR)`` expansion.

Order (later wins): the image's ENV, the Service link variables of the pod's namespace and
``KUBERNETES_SERVICE_*``, ``envFrom`` (with ``prefix``), then ``env`` in order. In an ``env``
value, ``$(NAME)`` expands to a variable defined before it (not the image's), ``$$`` is a literal
``$``, and an unknown reference stays as written; ``command`` and ``args`` expand against the
whole container environment. ``fieldRef`` / ``resourceFieldRef`` give the downward API.
"""

from __future__ import annotations

import base64
import math
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

__all__ = [
    "ConfigError",
    "container_env",
    "expand",
    "field_value",
    "parse_quantity",
    "resource_value",
    "service_link_env",
]

Obj = Dict[str, Any]
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


class ConfigError(Exception):
    """The container cannot be configured yet (a missing Secret key...): CreateContainerConfigError."""


def expand(text: str, lookup: Callable[[str], Optional[str]]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (third_party/forked/golang/expansion)."""
    out: List[str] = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end == -1:
                    out.append(text[i:])
                    break
                name = text[i + 2 : end]
                value = lookup(name) if name else None
                out.append(value if value is not None else text[i : end + 1])
                i = end + 1
                continue
            out.append(c + nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def field_value(pod: Obj, path: str, pod_ip: str, host_ip: str, node_name: str) -> str:
    """The downward API's ``fieldRef.fieldPath`` for this pod."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    m = _SUBSCRIPT.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join('%s="%s"' % (k, items[k]) for k in sorted(items))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in simple:
        raise ConfigError("unsupported fieldRef fieldPath %r" % path)
    return str(simple[path])


_SUFFIX = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}  # fmt: skip


def parse_quantity(text: Any) -> float:
    """A resource.Quantity ("100m", "256Mi", "1.5") as a number."""
    s = str(text).strip()
    for suffix in sorted(_SUFFIX, key=len, reverse=True):
        if s.endswith(suffix) and s[: -len(suffix)]:
            return float(s[: -len(suffix)]) * _SUFFIX[suffix]
    return float(s)


def _node_capacity(resource: str) -> float:
    if resource.endswith("cpu"):
        return float(os.cpu_count() or 1)
    if resource.endswith("memory"):
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return 0.0


def resource_value(container: Obj, ref: Obj) -> str:
    """``resourceFieldRef``: limits fall back to the node's capacity, as on a real node."""
    resource = str(ref.get("resource", ""))
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (resources.get("limits") or {}).get(name)
    amount = (
        parse_quantity(value) if value is not None else (_node_capacity(name) if kind == "limits" else 0.0)
    )
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(int(math.ceil(amount / divisor - 1e-9)))


def service_link_env(services: List[Obj], kubernetes: Tuple[str, int]) -> Dict[str, str]:
    """Docker-link style variables for the namespace's Services, and KUBERNETES_SERVICE_*."""
    env: Dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        prefix = str((svc.get("metadata") or {}).get("name", "")).upper().replace("-", "_")
        first = ports[0]
        env["%s_SERVICE_HOST" % prefix] = ip
        env["%s_SERVICE_PORT" % prefix] = str(first.get("port"))
        env["%s_PORT" % prefix] = "%s://%s:%s" % (
            str(first.get("protocol", "TCP")).lower(),
            ip,
            first.get("port"),
        )
        for p in ports:
            proto = str(p.get("protocol", "TCP"))
            if p.get("name"):
                env["%s_SERVICE_PORT_%s" % (prefix, str(p["name"]).upper().replace("-", "_"))] = str(
                    p.get("port")
                )
            base = "%s_PORT_%s_%s" % (prefix, p.get("port"), proto)
            env[base] = "%s://%s:%s" % (proto.lower(), ip, p.get("port"))
            env[base + "_PROTO"] = proto.lower()
            env[base + "_PORT"] = str(p.get("port"))
            env[base + "_ADDR"] = ip
    host, port = kubernetes
    env.update(
        {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": "tcp://%s:%d" % (host, port),
            "KUBERNETES_PORT_%d_TCP" % port: "tcp://%s:%d" % (host, port),
            "KUBERNETES_PORT_%d_TCP_PROTO" % port: "tcp",
            "KUBERNETES_PORT_%d_TCP_PORT" % port: str(port),
            "KUBERNETES_PORT_%d_TCP_ADDR" % port: host,
        }
    )
    return env


def _key_of(store: Any, resource: str, namespace: str, ref: Obj) -> Optional[str]:
    name = ref.get("name", "")
    key = ref.get("key", "")
    obj = store.get(resource, namespace, name)
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise ConfigError('%s "%s" not found' % (resource[:-1], name))
    data = _data_of(resource, obj)
    if key not in data:
        if optional:
            return None
        raise ConfigError(
            "couldn't find key %s in %s %s/%s" % (key, resource[:-1].capitalize(), namespace, name)
        )
    return data[key].decode("utf-8", "replace")


def _data_of(resource: str, obj: Obj) -> Dict[str, bytes]:
    """A Secret's or ConfigMap's entries as bytes (Secret data is base64, stringData plain)."""
    out: Dict[str, bytes] = {}
    if resource == "secrets":
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v or "")
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v or "")
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
    return out


def container_env(
    store: Any,
    pod: Obj,
    container: Obj,
    image_env: Mapping[str, str],
    pod_ip: str,
    host_ip: str,
    node_name: str,
    kubernetes: Tuple[str, int],
) -> Dict[str, str]:
    """The process environment of ``container`` (see the module docstring for the rules)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace") or "default"
    defined: Dict[str, str] = {}  # what $(VAR) may refer to: not the image's ENV
    if spec.get("enableServiceLinks", True) is not False:
        defined.update(service_link_env(store.list("services", namespace), kubernetes))
    else:
        defined.update(service_link_env([], kubernetes))
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for resource, field in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = source.get(field)
            if not ref:
                continue
            obj = store.get(resource, namespace, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError('%s "%s" not found' % (resource[:-1], ref.get("name", "")))
            for k, v in _data_of(resource, obj).items():
                defined[prefix + k] = v.decode("utf-8", "replace")
    for item in container.get("env") or []:
        name = item.get("name")
        if not name:
            continue
        if "value" in item or "valueFrom" not in item:
            defined[name] = expand(str(item.get("value") or ""), defined.get)
            continue
        source = item.get("valueFrom") or {}
        value: Optional[str]
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"].get("fieldPath", ""), pod_ip, host_ip, node_name)
        elif "resourceFieldRef" in source:
            value = resource_value(container, source["resourceFieldRef"])
        elif "secretKeyRef" in source:
            value = _key_of(store, "secrets", namespace, source["secretKeyRef"])
        elif "configMapKeyRef" in source:
            value = _key_of(store, "configmaps", namespace, source["configMapKeyRef"])
        else:
            raise ConfigError("env %s: unsupported valueFrom %s" % (name, sorted(source)))
        if value is not None:
            defined[name] = value
    env = dict(image_env)
    env.setdefault("HOSTNAME", str(meta.get("name", "")))
    env.setdefault("HOME", "/root")
    env.update(defined)
    return env


def data_of(resource: str, obj: Obj) -> Dict[str, bytes]:
    """Public for volumes: a Secret's or ConfigMap's entries as bytes."""
    return _data_of(resource, obj)
