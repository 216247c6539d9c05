"""The one schema of ``GovernancePolicy``, written once and used three ways.

The same tree of :class:`Scalar` / :class:`ListOf` / :class:`Obj` nodes renders
the CRD's OpenAPI v3 schema (:func:`openapi`), validates objects in the server
(:func:`validate`: every error names the object and the field path), and renders
the field reference in ``docs/policies.md`` (:func:`doc_rows`). Each leaf that
the agent understands carries ``agent_key``: the name of the field in
``agent/pilotfish/settings.py`` FIELDS it becomes in the flat effective config,
so the three can never drift apart (``tests/test_policy_schema.py`` checks the
ranges against the agent's own parsers).
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

GROUP = "pilotfish.io"
VERSION = "v1alpha1"
API_VERSION = GROUP + "/" + VERSION
KIND = "GovernancePolicy"
PLURAL = "governancepolicies"
SINGULAR = "governancepolicy"
SHORT_NAMES = ("gp", "gpolicy")

# A check on an object: given its (already type-checked) value, yield
# (relative field path, message) for each problem.
Check = Callable[[Dict[str, Any]], Iterator[Tuple[str, str]]]


@dataclass(frozen=True)
class Scalar:
    type: str  # "string" | "number" | "integer" | "boolean"
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    enum: Tuple[str, ...] = ()
    pattern: Optional[str] = None
    default: Any = None  # documentation only: the agent owns defaults
    agent_key: Optional[str] = None


@dataclass(frozen=True)
class ListOf:
    items: Node
    description: str
    min_items: int = 0
    max_items: Optional[int] = None
    agent_key: Optional[str] = None


@dataclass(frozen=True)
class Obj:
    fields: Dict[str, Node]
    description: str
    required: Tuple[str, ...] = ()
    exactly_one_of: Tuple[str, ...] = ()
    checks: Tuple[Check, ...] = ()
    check_docs: Tuple[str, ...] = ()


Node = Union[Scalar, ListOf, Obj]


# ---------------------------------------------------------------- the schema

_HEADER_NAME = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


def _check_match_values(cond: Dict[str, Any]) -> Iterator[Tuple[str, str]]:
    op = cond.get("op", "exact")
    values = cond.get("values") or []
    if op != "present" and not values:
        yield "values", "op %s needs at least one value" % shown(op)
    if op == "regex":
        for i, value in enumerate(values):
            try:
                re.compile(value)
            except re.error as problem:
                yield "values[%d]" % i, "not a valid regular expression (%s)" % problem


def _check_unique_lanes(spec: Dict[str, Any]) -> Iterator[Tuple[str, str]]:
    seen: Dict[str, int] = {}
    for i, lane in enumerate(spec.get("lanes") or []):
        name = lane.get("name")
        if name in seen:
            yield "lanes[%d].name" % i, "duplicate lane name %s (also lanes[%d])" % (shown(name), seen[name])
        else:
            seen[name] = i


MATCH = Obj(
    {
        "header": Scalar("string", "request header to test (case-insensitive)", pattern=_HEADER_NAME),
        "cookie": Scalar("string", "cookie to test", pattern=_HEADER_NAME),
        "op": Scalar(
            "string",
            "how to compare: `exact`, `prefix`, `regex` (Python `re.search`), `in` (any of the values), "
            "`present` (exists, values ignored)",
            enum=("exact", "prefix", "regex", "in", "present"),
            default="exact",
        ),
        "values": ListOf(Scalar("string", "a value"), "values compared against (one for exact/prefix/regex)"),
    },
    "one condition on the request",
    exactly_one_of=("header", "cookie"),
    checks=(_check_match_values,),
    check_docs=("`values` is required unless `op` is `present`; regexes must compile",),
)

LANE = Obj(
    {
        "name": Scalar("string", "lane name, unique in the policy", pattern=_DNS_LABEL),
        "tag": Scalar("string", "tag given to matching requests (instances labelled `pilotfish.io/tag`)"),
        "match": ListOf(MATCH, "conditions that must all hold (AND); empty = every request"),
        "percentage": Scalar(
            "number",
            "share of the matching requests tagged, 0-100",
            minimum=0,
            maximum=100,
            default=100,
        ),
        "hashKey": Scalar(
            "string",
            "make the percentage sticky per user: `header:NAME` or `cookie:NAME`; absent = random",
            pattern=r"^(header|cookie):[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
        ),
    },
    "a lane rule for entry apps: requests that match get the tag",
    required=("name", "tag"),
)

SPEC = Obj(
    {
        "selector": Obj(
            {
                "apps": ListOf(
                    Scalar("string", "app name (`pilotfish.io/app`)"),
                    "apps this policy applies to",
                    min_items=1,
                ),
            },
            "app scope: only these apps; absent = every app of the namespace (or cluster)",
            required=("apps",),
        ),
        "lossless": Obj(
            {
                "delayRegisterSeconds": Scalar(
                    "number",
                    "wait after the app listens before registering",
                    minimum=0,
                    maximum=3600,
                    default=0,
                    agent_key="delay_register_seconds",
                ),
                "warmup": Obj(
                    {
                        "enabled": Scalar(
                            "boolean", "small-traffic warm-up", default=True, agent_key="warmup_enabled"
                        ),
                        "seconds": Scalar(
                            "number",
                            "warm-up duration T",
                            minimum=0,
                            maximum=86400,
                            default=120,
                            agent_key="warmup_seconds",
                        ),
                        "curve": Scalar(
                            "number",
                            "weight exponent: w = max(min%, (t/T)^curve)",
                            minimum=0.1,
                            maximum=10,
                            default=2,
                            agent_key="warmup_curve",
                        ),
                        "minWeightPercent": Scalar(
                            "number",
                            "weight floor during warm-up",
                            minimum=0,
                            maximum=100,
                            default=10,
                            agent_key="warmup_min_weight_percent",
                        ),
                        "beforeReady": Scalar(
                            "boolean",
                            "hold readiness until warm-up completes",
                            default=False,
                            agent_key="warmup_before_ready",
                        ),
                        "start": Scalar(
                            "string",
                            "when the warm-up clock starts",
                            enum=("registration", "first-request"),
                            default="registration",
                            agent_key="warmup_start",
                        ),
                    },
                    "warm-up of a new instance",
                ),
                "readiness": Obj(
                    {
                        "enabled": Scalar(
                            "boolean",
                            "serve readiness gates on the status port",
                            default=True,
                            agent_key="readiness_enabled",
                        ),
                    },
                    "readiness gates",
                ),
                "offline": Obj(
                    {
                        "enabled": Scalar(
                            "boolean",
                            "graceful offline on preStop / SIGTERM",
                            default=True,
                            agent_key="offline_enabled",
                        ),
                        "quietSeconds": Scalar(
                            "number",
                            "drained = no request for this long",
                            minimum=0,
                            maximum=600,
                            default=3,
                            agent_key="offline_quiet_seconds",
                        ),
                        "maxWaitSeconds": Scalar(
                            "number",
                            "give up draining after this long",
                            minimum=0,
                            maximum=3600,
                            default=30,
                            agent_key="offline_max_wait_seconds",
                        ),
                    },
                    "graceful offline",
                ),
                "ignorePaths": ListOf(
                    Scalar("string", "a path prefix", pattern=r"^/"),
                    "path prefixes that are not traffic (health checks)",
                    agent_key="ignore_paths",
                ),
            },
            "lossless rollouts",
        ),
        "tags": Obj(
            {
                "headers": ListOf(
                    Scalar("string", "a header name", pattern=_HEADER_NAME),
                    "request headers that carry the lane tag, first match wins",
                    min_items=1,
                    agent_key="tag_headers",
                ),
                "baggageKey": Scalar(
                    "string",
                    "W3C baggage entry that carries the lane tag",
                    pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
                    default="pilotfish-tag",
                    agent_key="baggage_key",
                ),
            },
            "traffic tags",
        ),
        "routing": Obj(
            {
                "enabled": Scalar(
                    "boolean",
                    "consumer-side lane and warm-up routing: false for a caller = it routes nothing; "
                    "false for the app behind a Service = no caller routes to that Service",
                    default=True,
                    agent_key="routing_enabled",
                ),
                "laneMode": Scalar(
                    "string",
                    "no instance in the lane: `permissive` falls back to baseline, `strict` fails",
                    enum=("permissive", "strict"),
                    default="permissive",
                    agent_key="lane_mode",
                ),
            },
            "routing",
        ),
        "lanes": ListOf(LANE, "lane rules for entry apps; first match wins", agent_key="lanes"),
        "logLevel": Scalar(
            "string",
            "agent log level",
            enum=("debug", "info", "warning", "error", "off"),
            default="warning",
            agent_key="log_level",
        ),
    },
    "what to govern and how; every field is optional, unset fields inherit",
    checks=(_check_unique_lanes,),
    check_docs=("lane names are unique",),
)


# ---------------------------------------------------------------- validation

MAX_SHOWN_CHARS = 200
MAX_PROBLEMS = 20

_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 6
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 80


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, bounded in size *and* in the work to make it.

    Error messages are logged, kept in memory and served by ``/v1/status``: a bad value of
    a megabyte (or a YAML alias bomb) must cost a few hundred bytes there, not its own size.
    """
    text = _SHORT.repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def _key(key: Any) -> str:
    text = str(key) if isinstance(key, (str, int, float, bool)) or key is None else shown(key)
    return text if len(text) <= 100 else text[:97] + "..."


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return "%s: %s" % (self.path, self.message)


def _type_ok(node: Scalar, value: Any) -> bool:
    if node.type == "boolean":
        return isinstance(value, bool)
    if node.type == "string":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if node.type == "integer":
        return isinstance(value, int)
    return isinstance(value, (int, float))


def _join(path: str, key: str) -> str:
    return "%s.%s" % (path, key) if path else key


def validate(value: Any, node: Node = SPEC, path: str = "spec") -> List[Problem]:
    """All problems of ``value`` against ``node``; empty when valid."""
    problems: List[Problem] = []
    _validate(value, node, path, problems)
    return problems


def _validate(value: Any, node: Node, path: str, out: List[Problem]) -> None:
    if isinstance(node, Scalar):
        if not _type_ok(node, value):
            out.append(Problem(path, "expected a %s (got %s)" % (node.type, shown(value))))
            return
        if node.minimum is not None and value < node.minimum:
            out.append(Problem(path, "must be >= %g (got %s)" % (node.minimum, shown(value))))
        if node.maximum is not None and value > node.maximum:
            out.append(Problem(path, "must be <= %g (got %s)" % (node.maximum, shown(value))))
        if node.enum and value not in node.enum:
            out.append(Problem(path, "must be one of %s (got %s)" % (", ".join(node.enum), shown(value))))
        if node.pattern and isinstance(value, str) and not re.search(node.pattern, value):
            out.append(Problem(path, "must match %s (got %s)" % (node.pattern, shown(value))))
        return
    if isinstance(node, ListOf):
        if not isinstance(value, list):
            out.append(Problem(path, "expected a list (got %s)" % shown(value)))
            return
        if len(value) < node.min_items:
            out.append(Problem(path, "needs at least %d item(s)" % node.min_items))
        if node.max_items is not None and len(value) > node.max_items:
            out.append(Problem(path, "allows at most %d item(s)" % node.max_items))
        for i, item in enumerate(value):
            _validate(item, node.items, "%s[%d]" % (path, i), out)
        return
    if not isinstance(value, dict):
        out.append(Problem(path, "expected an object (got %s)" % shown(value)))
        return
    before = len(out)
    for key in value:
        if key not in node.fields:
            out.append(
                Problem(_join(path, _key(key)), "unknown field (known: %s)" % ", ".join(sorted(node.fields)))
            )
    for key in node.required:
        if key not in value:
            out.append(Problem(_join(path, key), "required"))
    if node.exactly_one_of:
        present = [key for key in node.exactly_one_of if key in value]
        if len(present) != 1:
            out.append(Problem(path, "needs exactly one of %s" % ", ".join(node.exactly_one_of)))
    for key, child in node.fields.items():
        if key in value:
            _validate(value[key], child, _join(path, key), out)
    if len(out) == before:  # checks assume well-typed input
        for check in node.checks:
            for rel, message in check(value):
                out.append(Problem(_join(path, rel), message))


# ---------------------------------------------------------------- OpenAPI


def openapi(node: Node = SPEC) -> Dict[str, Any]:
    """The structural OpenAPI v3 schema Kubernetes wants in the CRD."""
    if isinstance(node, Scalar):
        out: Dict[str, Any] = {"type": node.type, "description": node.description}
        if node.minimum is not None:
            out["minimum"] = node.minimum
        if node.maximum is not None:
            out["maximum"] = node.maximum
        if node.enum:
            out["enum"] = list(node.enum)
        if node.pattern:
            out["pattern"] = node.pattern
        return out
    if isinstance(node, ListOf):
        out = {"type": "array", "description": node.description, "items": openapi(node.items)}
        if node.min_items:
            out["minItems"] = node.min_items
        if node.max_items is not None:
            out["maxItems"] = node.max_items
        return out
    out = {
        "type": "object",
        "description": node.description,
        "properties": {key: openapi(child) for key, child in node.fields.items()},
    }
    if node.required:
        out["required"] = list(node.required)
    if node.exactly_one_of:
        out["oneOf"] = [{"required": [key]} for key in node.exactly_one_of]
    return out


def crd() -> Dict[str, Any]:
    """The CustomResourceDefinition of GovernancePolicy."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "%s.%s" % (PLURAL, GROUP)},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": KIND + "List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "pilotfish governance policy: lossless rollouts, tags, routing, "
                            "lanes. Merged cluster < namespace < app scope; explicit pod env wins over all.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi(SPEC),
                            },
                            "required": ["spec"],
                        }
                    },
                    "additionalPrinterColumns": [
                        {
                            "name": "Apps",
                            "type": "string",
                            "jsonPath": ".spec.selector.apps",
                            "description": "app scope (empty = namespace or cluster scope)",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


# ---------------------------------------------------------------- docs


@dataclass(frozen=True)
class DocRow:
    path: str
    type: str
    rule: str
    default: str
    agent: str
    description: str


def _rule(node: Node) -> str:
    parts: List[str] = []
    if isinstance(node, Scalar):
        if node.minimum is not None or node.maximum is not None:
            parts.append("%g–%g" % (node.minimum or 0, node.maximum if node.maximum is not None else 0))
        if node.enum:
            parts.append(" \\| ".join("`%s`" % e for e in node.enum))
        if node.pattern:
            parts.append("matches `` %s ``" % node.pattern.replace("|", "\\|"))
    elif isinstance(node, ListOf):
        if node.min_items:
            parts.append("at least %d" % node.min_items)
    else:
        if node.required:
            parts.append("requires " + ", ".join("`%s`" % r for r in node.required))
        if node.exactly_one_of:
            parts.append("exactly one of " + ", ".join("`%s`" % r for r in node.exactly_one_of))
        parts.extend(node.check_docs)
    return "; ".join(parts)


def _type_name(node: Node) -> str:
    if isinstance(node, Scalar):
        return node.type
    if isinstance(node, ListOf):
        return "list of " + _type_name(node.items) if not isinstance(node.items, Obj) else "list of objects"
    return "object"


def doc_rows(node: Node = SPEC, path: str = "spec") -> List[DocRow]:
    """One row per field, depth first, for the reference table."""
    rows: List[DocRow] = []
    default = ""
    if isinstance(node, Scalar) and node.default is not None:
        default = "`%s`" % (str(node.default).lower() if isinstance(node.default, bool) else node.default)
    agent_key = getattr(node, "agent_key", None)
    rows.append(
        DocRow(
            path,
            _type_name(node),
            _rule(node),
            default,
            "`%s`" % agent_key if agent_key else "",
            node.description,
        )
    )
    if isinstance(node, Obj):
        for key, child in node.fields.items():
            rows.extend(doc_rows(child, _join(path, key)))
    elif isinstance(node, ListOf) and isinstance(node.items, Obj):
        for key, child in node.items.fields.items():
            rows.extend(doc_rows(child, "%s[].%s" % (path, key)))
    return rows


def agent_leaves(node: Node = SPEC, path: Sequence[str] = ()) -> List[Tuple[Tuple[str, ...], Node]]:
    """(spec path, node) for every field that maps to an agent key."""
    out: List[Tuple[Tuple[str, ...], Node]] = []
    if getattr(node, "agent_key", None):
        out.append((tuple(path), node))
        return out
    if isinstance(node, Obj):
        for key, child in node.fields.items():
            out.extend(agent_leaves(child, (*path, key)))
    return out


__all__ = [
    "API_VERSION",
    "KIND",
    "SPEC",
    "ListOf",
    "Obj",
    "Problem",
    "Scalar",
    "agent_leaves",
    "crd",
    "shown",
    "doc_rows",
    "openapi",
    "validate",
]
