"""RFC 6902 JSON patch between two JSON documents, small and predictable.

``jsonpatch.make_patch`` works, but it is generic (it looks for moves and copies) and
slow on the admission hot path. Our mutations only add, replace or insert, so a
structural diff is enough: dicts key by key, equal-length lists index by index,
lists that grew at the front or the back by inserts, anything else replaced whole.
The result is checked against ``jsonpatch`` in the tests.
"""

from __future__ import annotations

from typing import Any, Dict, List

Patch = List[Dict[str, Any]]


def escape(token: str) -> str:
    """JSON pointer escaping: annotation keys such as ``pilotfish.io/status`` contain ``/``."""
    return token.replace("~", "~0").replace("/", "~1")


def clone(value: Any) -> Any:
    """Deep copy of plain JSON data (several times faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def diff(old: Any, new: Any, path: str = "") -> Patch:
    """Operations that turn ``old`` into ``new``."""
    ops: Patch = []
    _diff(old, new, path, ops)
    return ops


def _diff(old: Any, new: Any, path: str, ops: Patch) -> None:
    if old is new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": path + "/" + escape(key)})
        for key, value in new.items():
            if key not in old:
                ops.append({"op": "add", "path": path + "/" + escape(key), "value": value})
            elif old[key] != value:  # C-speed comparison prunes the untouched subtrees
                _diff(old[key], value, path + "/" + escape(key), ops)
        return
    if isinstance(old, list) and isinstance(new, list):
        if len(old) == len(new):
            for index, (a, b) in enumerate(zip(old, new)):
                if a != b:
                    _diff(a, b, "%s/%d" % (path, index), ops)
            return
        grown = len(new) - len(old)
        if grown > 0 and new[:-grown] == old:
            for index in range(len(old), len(new)):
                ops.append({"op": "add", "path": "%s/%d" % (path, index), "value": new[index]})
            return
        if grown > 0 and new[grown:] == old:
            for index in range(grown):
                ops.append({"op": "add", "path": "%s/%d" % (path, index), "value": new[index]})
            return
        ops.append({"op": "replace", "path": path, "value": new})
        return
    if type(old) is not type(new) or old != new:
        ops.append({"op": "replace", "path": path, "value": new})
