"""Label and field selectors, as in ``?labelSelector=`` / ``?fieldSelector=`` and in objects.

The query syntax (``a=b,c!=d,e in (f,g),!h,i``) and the object form (``matchLabels`` +
``matchExpressions``, used by Services, Deployments and webhook selectors) both end up as
one predicate over a label map.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, List, Optional

Obj = Dict[str, Any]
Labels = Dict[str, str]

_SET = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")


def _split_terms(text: str) -> List[str]:
    terms, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        terms.append(current)
    return terms


def _label_term(term: str) -> Callable[[Labels], bool]:
    if "!=" in term:
        key, value = (p.strip() for p in term.split("!=", 1))
        return lambda ls: ls.get(key) != value
    if "==" in term or ("=" in term and not re.search(r"\s(in|notin)\s*\(", term)):
        key, value = (p.strip() for p in re.split("==?", term, maxsplit=1))
        return lambda ls: ls.get(key) == value
    match = _SET.match(term)
    if not match:
        raise ValueError("unable to parse requirement: %r" % term)
    negated, name, op, values = match.groups()
    wanted = {v.strip() for v in (values or "").split(",") if v.strip()}
    if op == "in":
        return lambda ls: ls.get(name) in wanted
    if op == "notin":
        return lambda ls: ls.get(name) not in wanted
    if negated:
        return lambda ls: name not in ls
    return lambda ls: name in ls


def parse_label_selector(text: Optional[str]) -> Callable[[Labels], bool]:
    """``?labelSelector=`` as a predicate over a label map."""
    if not text:
        return lambda _labels: True
    checks = [_label_term(term.strip()) for term in _split_terms(text)]
    return lambda labels: all(check(labels) for check in checks)


def matches_label_selector(selector: Optional[Obj], labels: Optional[Labels]) -> bool:
    """metav1.LabelSelector semantics; an empty selector matches everything, None nothing."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def _field_term(term: str) -> Callable[[Obj], bool]:
    if "!=" in term:
        path, value = (p.strip() for p in term.split("!=", 1))
        return lambda o: field_value(o, path) != value
    path, value = (p.strip() for p in re.split("==?", term, maxsplit=1))
    return lambda o: field_value(o, path) == value


def parse_field_selector(text: Optional[str]) -> Callable[[Obj], bool]:
    """``?fieldSelector=metadata.name=x`` (and any dotted path) as a predicate over objects."""
    if not text:
        return lambda _obj: True
    checks = [_field_term(term) for term in _split_terms(text)]
    return lambda obj: all(check(obj) for check in checks)
