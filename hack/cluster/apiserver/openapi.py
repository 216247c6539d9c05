"""OpenAPI v3 documents, as kubectl reads them (``/openapi/v3`` and one per group-version).

kubectl needs them for three things: client-side ``apply`` (it stops without OpenAPI), the
strategic merge patches it builds (``x-kubernetes-patch-merge-key`` / ``-strategy`` say
which lists merge by which key), and whether the server validates fields itself (a PATCH
operation carrying a ``fieldValidation`` query parameter: then kubectl leaves validation
to us). The component schemas come from the Kubernetes OpenAPI definitions shipped by the
``kubernetes-validate`` package (JSON-schema flavoured; normalised back to OpenAPI here);
custom resources bring their ``openAPIV3Schema``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Set

from .resources import Registry, Resource

Obj = Dict[str, Any]
KUBE_VERSION = "v1.32.0"
REF_PREFIX = "#/$defs/"


@functools.lru_cache(maxsize=1)
def definitions() -> Dict[str, Obj]:
    """Every built-in schema, keyed like ``io.k8s.api.apps.v1.Deployment``, in OpenAPI v3 form."""
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = root / ("%s-local" % KUBE_VERSION) / "_definitions.json"
    if not path.exists():  # another release of the package: the newest it has
        path = sorted(root.glob("v1.*-local/_definitions.json"))[-1]
    raw = json.loads(path.read_text())["$defs"]
    return {name: _normalise(schema) for name, schema in raw.items()}


def _normalise(node: Any) -> Any:
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "oneOf" in node and all(isinstance(o, dict) and "type" in o for o in node["oneOf"]):
        kinds = {_first_type(o["type"]) for o in node["oneOf"]}
        rest = {k: v for k, v in node.items() if k != "oneOf"}
        if kinds == {"string", "integer"}:
            return dict(rest, type="string", format="int-or-string")
        return dict(rest, type="string")
    out: Obj = {}
    for key, value in node.items():
        if key == "type":
            out[key] = _first_type(value)
        elif key == "$ref" and isinstance(value, str):
            out[key] = "#/components/schemas/" + value[len(REF_PREFIX) :]
        elif key in ("properties", "patternProperties") and isinstance(value, dict):
            out[key] = {name: _normalise(sub) for name, sub in value.items()}
        else:
            out[key] = _normalise(value)
    return out


def _first_type(value: Any) -> Any:
    if isinstance(value, list):
        kinds = [v for v in value if v != "null"]
        return kinds[0] if kinds else "object"
    return value


def _refs(node: Any, found: Set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _closure(names: List[str]) -> Dict[str, Obj]:
    defs = definitions()
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        found: Set[str] = set()
        _refs(defs[name], found)
        todo.extend(found - seen)
    return {name: defs[name] for name in sorted(seen)}


def _schema_name(resource: Resource) -> str:
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if (
                gvk.get("group", "") == resource.group
                and gvk.get("version") == resource.version
                and gvk.get("kind") == resource.kind
            ):
                return name
    return ""


def _gvk(resource: Resource) -> Obj:
    return {"group": resource.group, "version": resource.version, "kind": resource.kind}


def _crd_schema(resource: Resource) -> Obj:
    schema = copy.deepcopy(resource.schema or {"type": "object"})
    schema.setdefault("type", "object")
    props = schema.setdefault("properties", {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props["metadata"] = {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    schema["x-kubernetes-group-version-kind"] = [_gvk(resource)]
    return schema


def _base_path(resource: Resource) -> str:
    prefix = (
        "/api/%s" % resource.version
        if not resource.group
        else "/apis/%s/%s" % (resource.group, resource.version)
    )
    if resource.namespaced:
        return "%s/namespaces/{namespace}/%s/{name}" % (prefix, resource.plural)
    return "%s/%s/{name}" % (prefix, resource.plural)


def group_version_document(registry: Registry, group: str, version: str) -> Obj:
    schemas: Dict[str, Obj] = {}
    paths: Dict[str, Obj] = {}
    wanted: List[str] = [
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    ]
    for resource in registry.in_group_version(group, version):
        ref_name = ""
        if resource.schema is not None:
            ref_name = "%s.%s.%s" % (resource.group, resource.version, resource.kind)
            schemas[ref_name] = _crd_schema(resource)
        else:
            ref_name = _schema_name(resource)
            if ref_name:
                wanted.append(ref_name)
        body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/" + ref_name}}}}
        operation = {
            "operationId": "patch%s" % resource.kind,
            "parameters": [
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": True}},
            ],
            "requestBody": {
                "content": {"application/strategic-merge-patch+json": {"schema": {"type": "object"}}}
            },
            "responses": {"200": {"description": "OK", "content": body["content"]}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": _gvk(resource),
        }
        paths[_base_path(resource)] = {
            "get": dict(operation, operationId="read%s" % resource.kind, **{"x-kubernetes-action": "get"}),
            "patch": operation,
        }
    schemas.update(_closure(wanted))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def index(registry: Registry, documents: Dict[str, bytes]) -> Obj:
    """The ``/openapi/v3`` index; each entry's URL carries a hash so clients may cache it."""
    paths = {}
    for key, body in documents.items():
        digest = hashlib.sha256(body).hexdigest()[:16].upper()
        paths[key] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (key, digest)}
    return {"paths": paths}


def all_documents(registry: Registry) -> Dict[str, bytes]:
    """``api/v1`` / ``apis/<group>/<version>`` -> serialised document."""
    out: Dict[str, bytes] = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            key = "api/%s" % version if not group else "apis/%s/%s" % (group, version)
            out[key] = json.dumps(group_version_document(registry, group, version)).encode()
    return out
