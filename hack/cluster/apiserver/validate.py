"""Validation that answers 422 Invalid naming the field, as the real API server does.

Not the full Kubernetes validation: object names, the fields without which the
controllers and the kubelet cannot work (pod containers, a Deployment's selector matching
its template), Service ports, and custom resources against their CRD's openAPIV3Schema.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

from ..store import ApiError
from .resources import Registry, Resource
from .selectors import matches_label_selector

Obj = Dict[str, Any]

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAMES = {"namespaces", "services", "pods"}


def invalid_field(resource: Resource, obj: Obj, field: str, message: str) -> ApiError:
    name = (obj.get("metadata") or {}).get("name", "")
    group_kind = "%s.%s" % (resource.kind, resource.group) if resource.group else resource.kind
    return ApiError(
        422,
        "Invalid",
        '%s "%s" is invalid: %s: %s' % (group_kind, name, field, message),
        {
            "name": name,
            "group": resource.group,
            "kind": resource.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
        },
    )


def check(resource: Resource, obj: Obj, registry: Registry) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    pattern = DNS1123_LABEL if resource.plural in ("namespaces", "services") else DNS1123_SUBDOMAIN
    if name and (len(name) > 253 or not pattern.match(name)):
        kind = "RFC 1123 label" if pattern is DNS1123_LABEL else "RFC 1123 subdomain"
        raise invalid_field(
            resource,
            obj,
            "metadata.name",
            'Invalid value: "%s": a lowercase %s must consist of lower case alphanumeric characters, '
            "'-' or '.', and must start and end with an alphanumeric character" % (name, kind),
        )
    for value in (meta.get("labels") or {}).values():
        if (
            not isinstance(value, str)
            or len(value) > 63
            or (value and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value))
        ):
            raise invalid_field(
                resource,
                obj,
                "metadata.labels",
                'Invalid value: "%s": a valid label must be 63 characters or less' % value,
            )
    fn = _CHECKS.get(resource.plural) if resource.schema is None else None
    if fn is not None:
        fn(resource, obj)
    if resource.schema is not None:
        _check_custom(resource, obj)


def _pod_spec(resource: Resource, obj: Obj, spec: Obj, prefix: str) -> None:
    containers = spec.get("containers")
    if not containers:
        raise invalid_field(resource, obj, prefix + "containers", "Required value")
    seen: List[str] = []
    for key in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(key) or []):
            where = "%s%s[%d]" % (prefix, key, index)
            cname = container.get("name")
            if not cname:
                raise invalid_field(resource, obj, where + ".name", "Required value")
            if cname in seen:
                raise invalid_field(resource, obj, where + ".name", 'Duplicate value: "%s"' % cname)
            seen.append(cname)
            if not container.get("image"):
                raise invalid_field(resource, obj, where + ".image", "Required value")
            for pindex, port in enumerate(container.get("ports") or []):
                number = port.get("containerPort")
                if not isinstance(number, int) or not 0 < number < 65536:
                    raise invalid_field(
                        resource,
                        obj,
                        "%s.ports[%d].containerPort" % (where, pindex),
                        "Invalid value: %r: must be between 1 and 65535, inclusive" % (number,),
                    )


def _pod(resource: Resource, obj: Obj) -> None:
    _pod_spec(resource, obj, obj.get("spec") or {}, "spec.")


def _workload(resource: Resource, obj: Obj) -> None:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    if not selector:
        raise invalid_field(resource, obj, "spec.selector", "Required value")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not matches_label_selector(selector, labels):
        raise invalid_field(
            resource,
            obj,
            "spec.template.metadata.labels",
            "Invalid value: %s: `selector` does not match template `labels`" % labels,
        )
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        raise invalid_field(
            resource, obj, "spec.replicas", "Invalid value: %r: must be greater than or equal to 0" % replicas
        )
    _pod_spec(resource, obj, template.get("spec") or {}, "spec.template.spec.")


def _service(resource: Resource, obj: Obj) -> None:
    spec = obj.get("spec") or {}
    if (
        spec.get("clusterIP") != "None"
        and spec.get("type", "ClusterIP") != "ExternalName"
        and not spec.get("ports")
    ):
        raise invalid_field(resource, obj, "spec.ports", "Required value")
    for index, port in enumerate(spec.get("ports") or []):
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            raise invalid_field(
                resource,
                obj,
                "spec.ports[%d].port" % index,
                "Invalid value: %r: must be between 1 and 65535, inclusive" % (number,),
            )


def _check_custom(resource: Resource, obj: Obj) -> None:
    import jsonschema

    schema = dict(resource.schema or {})
    body = {k: v for k, v in obj.items() if k not in ("metadata", "apiVersion", "kind", "status")}
    props = {
        k: v
        for k, v in (schema.get("properties") or {}).items()
        if k not in ("metadata", "apiVersion", "kind", "status")
    }
    required = [r for r in schema.get("required") or [] if r in props]
    validator = jsonschema.Draft7Validator(dict(schema, properties=props, required=required))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        field = ".".join(
            str(p) if not isinstance(p, int) else "[%d]" % p for p in error.absolute_path
        ).replace(".[", "[")
        raise invalid_field(resource, obj, field or "<root>", error.message)


_CHECKS = {"pods": _pod, "deployments": _workload, "replicasets": _workload, "services": _service}
