"""Entry tagging: the app's lane rules, in the config service's shape, tag untagged requests.

The lanes arrive as the config service's ``flat_lanes()`` output (docs/policies.md,
"What agents receive"): ``{name, tag, match: [{source, name, op, values}], percentage,
hash}``. Here they are applied with ``settings.apply_central`` as the config client does,
and every request goes through the real extractors of :mod:`pilotfish.tags.inbound`
(WSGI environ, ASGI header list, gRPC metadata).
"""

from __future__ import annotations

import functools
import random
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pilotfish import log
from pilotfish.tags import inbound
from pilotfish.tags.context import valid_tag
from pilotfish.tags.lanes import compile_lanes
from pilotfish_webhook.config.merge import flatten, parse_policy
from support.carriers import environ

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "deploy" / "examples" / "policies.yaml"


def cond(source: str, name: str, op: str = "exact", values: Optional[List[str]] = None) -> Dict[str, Any]:
    """One condition exactly as the config service sends it."""
    return {"source": source, "name": name, "op": op, "values": list(values or [])}


def lane(
    name: str = "beta",
    tag: str = "gray",
    match: Optional[List[Dict[str, Any]]] = None,
    percentage: float = 100.0,
    hash: Optional[Dict[str, str]] = None,  # the wire name
) -> Dict[str, Any]:
    """One lane exactly as the config service sends it."""
    return {"name": name, "tag": tag, "match": match or [], "percentage": percentage, "hash": hash}


GROUP_LANE = lane(match=[cond("header", "x-user-group", "in", ["beta", "staff"])])


# --- operators -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, values, sent, tagged",
    [
        ("exact", ["beta"], "beta", True),
        ("exact", ["beta"], "  beta\t", True),  # surrounding whitespace is not part of a value
        ("exact", ["beta"], "Beta", False),  # values compare case-sensitively
        ("exact", ["beta"], "beta2", False),
        ("exact", ["beta", "qa"], "qa", True),  # several values read as "any of them"
        ("in", ["beta", "staff"], "staff", True),
        ("in", ["beta", "staff"], "others", False),
        ("prefix", ["beta-"], "beta-eu", True),
        ("prefix", ["beta-"], "alpha-beta-eu", False),
        ("prefix", ["a", "b"], "bob", True),
        ("regex", ["^[0-9]+$"], "12345", True),
        ("regex", ["^[0-9]+$"], "12a45", False),
        ("regex", ["tester"], "qa-tester-7", True),  # re.search, not re.match
        ("regex", ["^x$", "^y$"], "y", True),
        ("present", [], "", True),  # exists, even empty
        ("present", [], "anything", True),
    ],
)
def test_each_operator_compares_the_header_value_as_documented(extract, central, op, values, sent, tagged):
    central(lanes=[lane(match=[cond("header", "x-user-group", op, values)])])
    assert extract(x_user_group=sent) == ("gray" if tagged else None)


@pytest.mark.parametrize(
    "op, values", [("exact", ["x"]), ("prefix", [""]), ("regex", [".*"]), ("present", [])]
)
def test_a_condition_on_a_header_the_request_lacks_is_false_for_every_operator(extract, central, op, values):
    central(lanes=[lane(match=[cond("header", "x-user-group", op, values)])])
    assert extract(accept="*/*") is None


def test_header_names_are_case_insensitive(extract, central) -> None:
    central(lanes=[lane(match=[cond("header", "X-User-Group", "exact", ["beta"])])])
    assert extract(x_user_group="beta") == "gray"


@pytest.mark.parametrize(
    "op, values", [("exact", ["gray"]), ("prefix", ["gr"]), ("regex", ["^g"]), ("present", [])]
)
def test_cookie_conditions_read_the_named_cookie_of_the_cookie_header(extract, central, op, values) -> None:
    central(lanes=[lane(tag="blue", match=[cond("cookie", "lane", op, values)])])
    assert extract(cookie='a=1; lane="gray"; b=2') == "blue"
    assert extract(cookie="lane=gray") == "blue"
    assert extract(cookie="mylane=gray; lanes=gray") is None
    assert extract() is None


def test_cookie_names_are_case_sensitive(central) -> None:
    central(lanes=[lane(match=[cond("cookie", "Lane", "present")])])
    assert inbound.tag_from_environ(environ(cookie="lane=1")) is None
    assert inbound.tag_from_environ(environ(cookie="Lane=1")) == "gray"


# --- AND, order, precedence ----------------------------------------------------------


def test_all_conditions_of_a_lane_must_hold(extract, central) -> None:
    central(
        lanes=[
            lane(
                match=[
                    cond("header", "x-user-group", "in", ["testers", "qa"]),
                    cond("cookie", "beta", "present"),
                    cond("header", "x-region", "prefix", ["cn-"]),
                ]
            )
        ]
    )
    assert extract(x_user_group="qa", cookie="beta=1", x_region="cn-hangzhou") == "gray"
    assert extract(x_user_group="qa", cookie="beta=1", x_region="us-east") is None
    assert extract(x_user_group="qa", x_region="cn-hangzhou") is None
    assert extract(x_user_group="dev", cookie="beta=1", x_region="cn-hangzhou") is None


def test_a_lane_without_conditions_tags_every_untagged_request(extract, central) -> None:
    central(lanes=[lane(match=[])])
    assert extract() == "gray"
    assert extract(x_pilotfish_tag="blue") == "blue"


def test_a_request_that_already_has_a_tag_keeps_it(extract, central) -> None:
    central(lanes=[GROUP_LANE])
    assert extract(x_user_group="beta", x_pilotfish_tag="blue") == "blue"
    assert extract(x_user_group="beta", baggage="pilotfish-tag=blue") == "blue"
    assert extract(x_user_group="beta") == "gray"


def test_the_first_matching_lane_wins(extract, central) -> None:
    central(
        lanes=[
            lane("by-cookie", "blue", [cond("cookie", "lane", "exact", ["blue"])]),
            lane("by-group", "gray", [cond("header", "x-user-group", "exact", ["beta"])]),
        ]
    )
    assert extract(cookie="lane=blue", x_user_group="beta") == "blue"
    assert extract(x_user_group="beta") == "gray"
    assert extract(cookie="lane=green") is None


def test_lanes_follow_live_config_changes(central) -> None:
    central(lanes=[GROUP_LANE])
    assert inbound.tag_from_environ(environ(x_user_group="beta")) == "gray"
    central(lanes=[dict(GROUP_LANE, tag="blue")])
    assert inbound.tag_from_environ(environ(x_user_group="beta")) == "blue"
    central(lanes=[])
    assert inbound.tag_from_environ(environ(x_user_group="beta")) is None


def test_lanes_are_compiled_once_per_change_not_per_request(central) -> None:
    central(lanes=[GROUP_LANE], log_level="warning")
    compiled = inbound.lanes()
    for _ in range(3):
        inbound.tag_from_environ(environ(x_user_group="beta"))
    central(lanes=[GROUP_LANE], log_level="info")  # another field changed: lanes untouched
    assert inbound.lanes() is compiled
    central(lanes=[dict(GROUP_LANE, tag="blue")])
    assert inbound.lanes() is not compiled


# --- percentage ----------------------------------------------------------------------


def _in_bucket(name: str, key: str, percentage: float) -> bool:
    """The documented formula, written out independently of the agent."""
    return zlib.crc32(("%s:%s" % (name, key)).encode()) % 10000 < percentage * 100


def test_a_hashed_percentage_tags_a_stable_share_of_keys(extract, central) -> None:
    central(lanes=[lane("ten", percentage=10, hash={"source": "header", "name": "x-user-id"})])
    tagged = [str(i) for i in range(2000) if extract(x_user_id=str(i)) == "gray"]
    assert 150 < len(tagged) < 250
    assert tagged == [str(i) for i in range(2000) if _in_bucket("ten", str(i), 10)]
    assert all(extract(x_user_id=key) == "gray" for key in tagged)  # the same on every call


def test_the_share_is_taken_among_requests_that_satisfy_the_conditions(central) -> None:
    central(
        lanes=[
            lane(
                "ids",
                match=[cond("header", "x-user-id", "regex", ["^[0-9]+$"])],
                percentage=50,
                hash={"source": "header", "name": "x-user-id"},
            )
        ]
    )
    keys = [str(i) for i in range(400)]
    tagged = {k for k in keys if inbound.tag_from_environ(environ(x_user_id=k)) == "gray"}
    assert tagged == {k for k in keys if _in_bucket("ids", k, 50)}
    # Keys that fail the condition are never tagged, whatever their bucket.
    assert all(inbound.tag_from_environ(environ(x_user_id="u" + k)) is None for k in keys)


def test_raising_the_percentage_only_adds_keys(central) -> None:
    def share(percentage: float) -> set:
        central(lanes=[lane("p", percentage=percentage, hash={"source": "cookie", "name": "uid"})])
        return {i for i in range(1000) if inbound.tag_from_environ(environ(cookie="uid=%d" % i)) == "gray"}

    shares = [share(p) for p in (0, 5, 5.5, 20, 60, 100)]
    assert shares[0] == set() and shares[-1] == set(range(1000))
    for smaller, larger in zip(shares, shares[1:]):
        assert smaller <= larger
    assert shares[1] < shares[3] < shares[4]


def test_a_request_without_the_hash_key_never_matches_below_100_percent(extract, central) -> None:
    central(lanes=[lane("most", percentage=99.99, hash={"source": "header", "name": "x-user-id"})])
    assert extract() is None
    assert extract(x_user_id="") is None  # an empty key is no key
    assert extract(cookie="x-user-id=1") is None


def test_at_100_percent_every_matching_request_is_tagged_with_or_without_a_key(extract, central) -> None:
    central(lanes=[lane("all", percentage=100, hash={"source": "header", "name": "x-user-id"})])
    assert extract() == "gray"
    central(lanes=[lane("all", percentage=100, hash=None)])
    assert extract() == "gray"


def test_at_0_percent_nothing_is_tagged(extract, central) -> None:
    central(lanes=[lane("none", percentage=0, hash={"source": "header", "name": "x-user-id"})])
    assert all(extract(x_user_id=str(i)) is None for i in range(200))
    central(lanes=[lane("none", percentage=0)])
    assert all(extract() is None for _ in range(200))


def test_without_a_hash_key_the_percentage_is_a_random_share_of_requests(central) -> None:
    """The schema's ``hashKey``: "absent = random"; the server accepts it with any percentage."""
    central(lanes=[lane("sample", match=[cond("header", "x-user-group", "present")], percentage=25)])
    random.seed(20261122)
    results = [inbound.tag_from_environ(environ(x_user_group="any")) for _ in range(4000)]
    assert 800 < results.count("gray") < 1200
    assert set(results) == {"gray", None}
    assert inbound.tag_from_environ(environ()) is None  # the conditions still apply


# --- invalid lanes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, field",
    [
        ("not an object", "lanes[0]: expected an object"),
        (dict(lane(), name=None), "lanes[0].name"),
        (dict(lane(), name="  "), "lanes[0].name"),
        (dict(lane(), tag="no spaces"), "lanes[0].tag"),
        (dict(lane(), match={"source": "header"}), "lanes[0].match: expected a list"),
        (lane(match=["x-user-group"]), "lanes[0].match[0]: expected an object"),  # type: ignore[list-item]
        (lane(match=[cond("query", "q")]), "lanes[0].match[0].source"),
        (lane(match=[cond("header", "")]), "lanes[0].match[0].name"),
        (lane(match=[cond("header", "h", "equals", ["v"])]), "lanes[0].match[0].op"),
        (lane(match=[cond("header", "h", "exact", [])]), "lanes[0].match[0].values: op 'exact'"),
        (lane(match=[cond("header", "h", "in", [])]), "lanes[0].match[0].values: op 'in'"),
        (lane(match=[dict(cond("header", "h"), values="v")]), "lanes[0].match[0].values: expected a list"),
        (lane(match=[dict(cond("header", "h"), values=["v", 7])]), "lanes[0].match[0].values[1]"),
        (
            lane(match=[cond("header", "h", "regex", ["(unclosed"])]),
            "lanes[0].match[0].values[0]: not a valid",
        ),
        (lane(match=[cond("header", "ok", "present"), cond("cookie", "c", "nope")]), "lanes[0].match[1].op"),
        (lane(percentage=101), "lanes[0].percentage"),
        (lane(percentage=-1), "lanes[0].percentage"),
        (dict(lane(), percentage=True), "lanes[0].percentage"),
        (dict(lane(), percentage="5"), "lanes[0].percentage"),
        (lane(hash="header:x-user-id"), "lanes[0].hash: expected an object"),  # type: ignore[arg-type]
        (lane(hash={"source": "query", "name": "u"}), "lanes[0].hash.source"),
        (lane(hash={"source": "header"}), "lanes[0].hash.name"),
    ],
)
def test_an_invalid_lane_is_skipped_with_a_warning_naming_the_field(bad, field, capsys) -> None:
    log.set_level("warning")
    lanes = compile_lanes([bad, dict(GROUP_LANE, name="good")])
    assert [valid.name for valid in lanes] == ["good"]
    err = capsys.readouterr().err
    assert field in err and "this lane is skipped" in err


def test_the_field_path_counts_the_lanes_position(capsys) -> None:
    log.set_level("warning")
    lanes = compile_lanes([GROUP_LANE, lane("second", match=[cond("header", "h", "between", ["1"])])])
    assert [valid.name for valid in lanes] == ["beta"]
    assert (
        "lanes[1].match[0].op: expected one of exact, prefix, regex, in, present" in capsys.readouterr().err
    )


def test_an_invalid_lane_is_warned_about_once_however_often_the_config_is_applied(central, capsys) -> None:
    log.set_level("warning")
    bad = lane("warned-once", percentage=250)
    for tag in ("gray", "blue", "green"):
        central(lanes=[bad, dict(GROUP_LANE, tag=tag)])
        assert inbound.tag_from_environ(environ(x_user_group="beta")) == tag
    assert capsys.readouterr().err.count("lanes[0].percentage") == 1


def test_a_duplicate_lane_name_is_rejected_and_the_first_kept(capsys) -> None:
    log.set_level("warning")
    lanes = compile_lanes([GROUP_LANE, dict(GROUP_LANE, tag="blue")])
    assert [lane.tag for lane in lanes] == ["gray"]
    assert "lanes[1].name: 'beta' is used by an earlier lane" in capsys.readouterr().err


def test_lanes_that_are_not_a_list_turn_entry_tagging_off(extract, central) -> None:
    central(lanes={"name": "oops"})
    assert extract(x_user_group="beta") is None


def test_omitted_op_percentage_and_hash_take_the_servers_defaults(extract, central) -> None:
    central(
        lanes=[
            {"name": "short", "tag": "gray", "match": [{"source": "header", "name": "x-g", "values": ["b"]}]}
        ]
    )
    assert extract(x_g="b") == "gray"
    assert inbound.lanes()[0].describe() == {
        "name": "short",
        "tag": "gray",
        "match": [{"source": "header", "name": "x-g", "op": "exact", "values": ["b"]}],
        "percentage": 100.0,
        "hash": None,
    }


# --- the contract with the config service ---------------------------------------------


@functools.lru_cache(maxsize=None)
def _example_lanes() -> List[Dict[str, Any]]:
    """The lanes of ``deploy/examples/policies.yaml`` as the server flattens them for the agent."""
    for document in yaml.safe_load_all(EXAMPLE.read_text()):
        if document and document["metadata"]["name"] == "shop-lanes":
            return flatten(parse_policy(document).spec)["lanes"]
    raise AssertionError("shop-lanes not in %s" % EXAMPLE)


def test_the_example_policys_lanes_as_the_server_sends_them_compile_without_a_warning(capsys) -> None:
    log.set_level("warning")
    flat = _example_lanes()
    assert [lane.describe() for lane in compile_lanes(flat)] == flat
    assert "lanes" not in capsys.readouterr().err


def test_the_example_policys_lanes_tag_requests_as_documented(extract, central) -> None:
    central(lanes=_example_lanes())
    # testers: x-user-group in [testers, qa] AND a cookie "beta".
    assert extract(x_user_group="qa", cookie="beta=yes") == "gray"
    assert extract(x_user_group="qa") is None
    # gray-5-percent: numeric x-user-id, 5 % sticky on it.
    ids = [str(i) for i in range(1000)]
    tagged = [i for i in ids if extract(x_user_id=i) == "gray"]
    assert tagged == [i for i in ids if _in_bucket("gray-5-percent", i, 5)]
    assert 20 < len(tagged) < 80
    assert extract(x_user_id="anonymous") is None


_NAMES = st.sampled_from([b"x-pilotfish-tag", b"cookie", b"x-user-group", b"x-user-id", b"baggage"])


@given(st.lists(st.tuples(_NAMES, st.binary(max_size=60)), max_size=8))
def test_any_headers_against_the_example_lanes_give_no_tag_or_a_valid_one_and_never_raise(headers) -> None:
    from pilotfish import settings

    settings.apply_central({"lanes": _example_lanes()}, "test")
    try:
        tag = inbound.tag_from_asgi_headers(headers)
        assert tag is None or valid_tag(tag) == tag
    finally:
        settings.load({})
        inbound.refresh()
