"""The three patch types of PATCH: JSON merge patch, strategic merge patch, JSON patch.

Strategic merge patch (what kubectl sends for built-in kinds: ``apply``, ``set env``,
``rollout restart``) merges lists that the schema marks ``x-kubernetes-patch-strategy:
merge`` by their ``x-kubernetes-patch-merge-key`` (containers, env, ports, volumes by name),
and understands the directives kubectl writes: ``$patch: delete|replace|merge``,
``$retainKeys``, ``$deleteFromPrimitiveList/<field>`` and ``$setElementOrder/<field>``
(order is only a hint here: merged lists keep the original order, new items at the end).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

import jsonpatch

from ..store import ApiError
from .openapi import definitions

Obj = Dict[str, Any]


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(original: Obj, operations: Any) -> Obj:
    try:
        patched: Obj = jsonpatch.JsonPatch(operations).apply(copy.deepcopy(original))
        return patched
    except jsonpatch.JsonPatchTestFailed as exc:
        raise ApiError(
            422, "Invalid", "the server rejected our request due to an error in our request: %s" % exc
        )
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise ApiError(
            422, "Invalid", "the server rejected our request due to an error in our request: %s" % exc
        )


def _resolve(schema: Optional[Obj]) -> Optional[Obj]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 10:
        schema = definitions().get(schema["$ref"].rsplit("/", 1)[1])
        seen += 1
    if isinstance(schema, dict) and "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(schema["allOf"][0])
    return schema


def _prop(schema: Optional[Obj], name: str) -> Optional[Obj]:
    schema = _resolve(schema)
    if not isinstance(schema, dict):
        return None
    prop = (schema.get("properties") or {}).get(name)
    if prop is None and isinstance(schema.get("additionalProperties"), dict):
        prop = schema["additionalProperties"]
    return prop


def strategic_merge_patch(original: Obj, patch: Obj, schema_name: str) -> Obj:
    schema = definitions().get(schema_name)
    return _merge_map(copy.deepcopy(original), patch, schema)


def _merge_map(original: Obj, patch: Obj, schema: Optional[Obj]) -> Obj:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(original.get(field), list):
                original[field] = [v for v in original[field] if v not in (value or [])]
            continue
        if value is None:
            original.pop(key, None)
            continue
        sub = _prop(schema, key)
        current = original.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            original[key] = _merge_map(current, value, sub)
        elif isinstance(value, dict):
            original[key] = _merge_map({}, value, sub) if value.get("$patch") != "delete" else None
            if original[key] is None:
                original.pop(key)
        elif isinstance(value, list):
            original[key] = _merge_list(current if isinstance(current, list) else [], value, sub)
        else:
            original[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        for key in list(original):
            if key not in retain:
                original.pop(key)
    return original


def _merge_list(original: List[Any], patch: List[Any], schema: Optional[Obj]) -> List[Any]:
    schema = _resolve(schema) or {}
    strategy = str(schema.get("x-kubernetes-patch-strategy") or "")
    merge_key = schema.get("x-kubernetes-patch-merge-key")
    items_schema = schema.get("items")
    if "merge" not in strategy.split(","):
        return [
            _strip(copy.deepcopy(v))
            for v in patch
            if not (isinstance(v, dict) and v.get("$patch") == "delete")
        ]
    if not merge_key:  # a set of primitives (finalizers): union in order
        out = list(original)
        for value in patch:
            if value not in out:
                out.append(copy.deepcopy(value))
        return out
    out = [copy.deepcopy(v) for v in original]
    for item in patch:
        if not isinstance(item, dict):
            continue
        if item.get("$patch") == "replace":
            return [
                _strip(copy.deepcopy(v))
                for v in patch
                if isinstance(v, dict) and v.get("$patch") != "replace"
            ]
        key = item.get(merge_key)
        index = next((i for i, v in enumerate(out) if isinstance(v, dict) and v.get(merge_key) == key), None)
        if item.get("$patch") == "delete":
            if index is not None:
                out.pop(index)
            continue
        if index is None:
            out.append(_merge_map({}, item, items_schema))
        else:
            out[index] = _merge_map(out[index], item, items_schema)
    return out


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value
