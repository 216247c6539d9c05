"""One GovernancePolicy schema, three uses: the CRD, the server's validation, the docs.

Spec (docs/policies.md): the schema is written once; the committed CRD and docs are its
rendering; the CRD's OpenAPI schema and the server's validator accept and reject
the same objects; every error names the object and the field path; and every
value the server can send parses in the agent (same ranges, same choices).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pilotfish import settings as agent_settings
from pilotfish_webhook.config import schema
from pilotfish_webhook.config.merge import InvalidPolicy, parse_policy
from pilotfish_webhook.config.sources import load_documents

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "examples" / "policies.yaml"
CRD = ROOT / "deploy" / "base" / "crd-governancepolicy.yaml"


def _crd_spec_schema() -> Dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_committed_crd_and_docs_are_the_rendering_of_the_schema() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hack.render_policy_schema", "--check"],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_crd_is_a_valid_custom_resource_definition() -> None:
    import kubernetes_validate

    crd = yaml.safe_load(CRD.read_text())
    kubernetes_validate.validate(crd, "1.30", strict=True)
    assert crd["metadata"]["name"] == "governancepolicies.pilotfish.io"


def test_the_example_uses_every_field_of_the_schema_and_is_valid() -> None:
    docs = load_documents(EXAMPLE.read_text(), EXAMPLE.name)
    used = set()

    def walk(value: Any, path: str) -> None:
        used.add(path)
        if isinstance(value, dict):
            for key, child in value.items():
                walk(child, "%s.%s" % (path, key))
        elif isinstance(value, list):
            for child in value:
                if isinstance(child, dict):
                    walk(child, path + "[]")

    for obj, origin in docs:
        parse_policy(obj, origin)  # raises if invalid
        jsonschema.validate(obj["spec"], _crd_spec_schema())
        walk(obj["spec"], "spec")
    every_field = {row.path for row in schema.doc_rows()}
    assert every_field - used == set()


def test_an_error_names_the_object_and_the_field_path() -> None:
    obj = {
        "apiVersion": "pilotfish.io/v1alpha1",
        "kind": "GovernancePolicy",
        "metadata": {"name": "shop-lanes", "namespace": "demo"},
        "spec": {
            "lossless": {"warmup": {"curve": 50}},
            "lanes": [
                {"name": "gray", "tag": "gray", "match": [{"header": "x-a", "op": "regex", "values": ["("]}]}
            ],
        },
    }
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy(obj, "policies.yaml document 3")
    message = str(caught.value)
    assert message.startswith("GovernancePolicy demo/shop-lanes (policies.yaml document 3): ")
    assert "spec.lossless.warmup.curve: must be <= 10 (got 50)" in message
    assert "spec.lanes[0].match[0].values[0]: not a valid regular expression" in message


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"lossless": {"warmup": {"seconds": -1}}}, "spec.lossless.warmup.seconds"),
        ({"lossless": {"warmup": {"enabled": "yes"}}}, "spec.lossless.warmup.enabled"),
        ({"lossless": {"warmpu": {}}}, "spec.lossless.warmpu"),
        ({"routing": {"laneMode": "lenient"}}, "spec.routing.laneMode"),
        ({"tags": {"headers": []}}, "spec.tags.headers"),
        ({"tags": {"headers": ["bad header"]}}, "spec.tags.headers[0]"),
        ({"lanes": [{"name": "a"}]}, "spec.lanes[0].tag"),
        ({"lanes": [{"name": "a", "tag": "t", "percentage": 101}]}, "spec.lanes[0].percentage"),
        ({"lanes": [{"name": "a", "tag": "t", "hashKey": "query:x"}]}, "spec.lanes[0].hashKey"),
        (
            {
                "lanes": [
                    {"name": "a", "tag": "t", "match": [{"header": "x", "cookie": "y", "values": ["1"]}]}
                ]
            },
            "spec.lanes[0].match[0]",
        ),
        ({"selector": {}}, "spec.selector.apps"),
        ({"lossless": {"ignorePaths": ["healthz"]}}, "spec.lossless.ignorePaths[0]"),
    ],
)
def test_crd_schema_and_server_both_reject_a_bad_field(spec: Dict[str, Any], field: str) -> None:
    problems = schema.validate(spec)
    assert any(p.path == field for p in problems), problems
    if field != "spec.lossless.warmpu":  # unknown fields are pruned by the API server, not rejected
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(spec, _crd_spec_schema())


def _leaf_values(node: schema.Scalar) -> st.SearchStrategy[Any]:
    """Valid and invalid values for one field, near its edges."""
    if node.type == "boolean":
        return st.one_of(st.booleans(), st.sampled_from(["true", 1, None]))
    if node.type in ("number", "integer"):
        low = node.minimum if node.minimum is not None else -1e6
        high = node.maximum if node.maximum is not None else 1e6
        return st.one_of(
            st.floats(low - 5, high + 5, allow_nan=False),
            st.integers(int(low) - 5, int(high) + 5),
            st.sampled_from([low, high, "5", True]),
        )
    options = list(node.enum) + ["", "Bad Value", "x-ok", "/path", "header:x-id"]
    return st.sampled_from(options)


def _specs(node: schema.Node) -> st.SearchStrategy[Any]:
    if isinstance(node, schema.Scalar):
        return _leaf_values(node)
    if isinstance(node, schema.ListOf):
        return st.lists(_specs(node.items), max_size=3)
    fields = {key: _specs(child) for key, child in node.fields.items()}
    return st.fixed_dictionaries({}, optional=fields)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_specs(schema.SPEC))
def test_crd_schema_and_server_validation_agree_on_generated_policies(spec: Dict[str, Any]) -> None:
    server_ok = not schema.validate(spec)
    try:
        jsonschema.validate(spec, _crd_spec_schema())
        crd_ok = True
    except jsonschema.ValidationError:
        crd_ok = False
    if crd_ok and not server_ok:
        # The only checks the OpenAPI schema cannot express: documented in check_docs.
        problems = schema.validate(spec)
        assert all(
            "duplicate lane name" in p.message
            or "needs at least one value" in p.message
            or "regular expression" in p.message
            for p in problems
        ), problems
    else:
        assert crd_ok == server_ok, schema.validate(spec)


def test_every_central_agent_setting_can_be_set_by_a_policy() -> None:
    keys = {getattr(node, "agent_key", None) for _, node in schema.agent_leaves()}
    central = {f.name for f in agent_settings.FIELDS if f.central}
    assert central - keys == set()
    assert keys - central == {"lanes"}


@pytest.mark.parametrize(
    "path, node", schema.agent_leaves(), ids=lambda v: ".".join(v) if isinstance(v, tuple) else ""
)
def test_the_agent_accepts_every_value_the_schema_allows_and_no_more(path: Any, node: Any) -> None:
    if node.agent_key == "lanes":
        return
    parse = agent_settings.FIELDS_BY_NAME[node.agent_key].parse
    if isinstance(node, schema.Scalar) and node.minimum is not None:
        assert parse(node.minimum) == node.minimum
        assert parse(node.maximum) == node.maximum
        assert node.maximum is not None
        with pytest.raises(agent_settings.InvalidValue):
            parse(node.maximum + 1)
        with pytest.raises(agent_settings.InvalidValue):
            parse(node.minimum - 1)
    for choice in getattr(node, "enum", ()):
        assert parse(choice) == choice
    if getattr(node, "type", None) == "boolean":
        assert parse(True) is True and parse(False) is False


def test_the_config_services_rbac_is_valid_and_covers_what_the_code_calls() -> None:
    import kubernetes_validate

    docs = list(yaml.safe_load_all((ROOT / "deploy" / "base" / "rbac-config.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    rules = {
        (g, r): set(rule["verbs"])
        for rule in docs[0]["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert {"list", "watch"} <= rules[("pilotfish.io", "governancepolicies")]
    assert {"list", "watch", "patch"} <= rules[("", "pods")]
    assert {"list", "watch"} <= rules[("discovery.k8s.io", "endpointslices")]
    assert "create" in rules[("authentication.k8s.io", "tokenreviews")]
