"""Where a request's tag comes from: tag headers, then baggage, then the app's lane rules."""

from __future__ import annotations

import zlib
from typing import Dict

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pilotfish.tags import inbound
from pilotfish.tags.context import valid_tag
from pilotfish.tags.lanes import compile_lanes


def environ(**headers: str) -> Dict[str, str]:
    """A WSGI environ with the given headers (``x_user_id="7"`` -> ``HTTP_X_USER_ID``)."""
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in headers.items():
        env["HTTP_" + name.upper()] = value
    return env


def asgi(**headers: str):
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def grpc_md(**headers: str):
    return tuple((k.replace("_", "-"), v) for k, v in headers.items())


ALL_CARRIERS = [
    ("wsgi", lambda **h: inbound.tag_from_environ(environ(**h))),
    ("asgi", lambda **h: inbound.tag_from_asgi_headers(asgi(**h))),
    ("grpc", lambda **h: inbound.tag_from_grpc_metadata(grpc_md(**h))),
]


@pytest.fixture(params=ALL_CARRIERS, ids=[c[0] for c in ALL_CARRIERS])
def extract(request):
    return request.param[1]


def test_an_untagged_request_has_no_tag(extract) -> None:
    assert extract(accept="*/*", user_agent="curl") is None


def test_the_default_tag_header_gives_the_tag(extract) -> None:
    assert extract(x_pilotfish_tag="gray") == "gray"


def test_surrounding_whitespace_is_trimmed(extract) -> None:
    assert extract(x_pilotfish_tag="  gray\t") == "gray"


def test_a_value_that_cannot_be_a_tag_is_ignored(extract) -> None:
    for bad in ("gr ay", "gray!", "-gray", "x" * 64, "", "gräy"):
        assert extract(x_pilotfish_tag=bad) is None, bad


def test_a_repeated_tag_header_joined_by_a_proxy_counts_once(extract) -> None:
    assert extract(x_pilotfish_tag="gray, blue") == "gray"


def test_mse_tag_header_is_read_when_configured(extract, central) -> None:
    assert extract(x_mse_tag="gray") is None
    central(tag_headers=["x-pilotfish-tag", "x-mse-tag"])
    assert extract(x_mse_tag="gray") == "gray"


def test_configured_tag_headers_are_tried_in_order(extract, central) -> None:
    central(tag_headers=["x-mse-tag", "x-pilotfish-tag"])
    assert extract(x_pilotfish_tag="blue", x_mse_tag="gray") == "gray"


def test_the_baggage_entry_gives_the_tag(extract) -> None:
    assert extract(baggage="userId=7,pilotfish-tag=gray") == "gray"


def test_the_baggage_key_is_configurable(extract, central) -> None:
    central(baggage_key="lane")
    assert extract(baggage="pilotfish-tag=blue,lane=gray") == "gray"


def test_a_tag_header_wins_over_baggage(extract) -> None:
    assert extract(x_pilotfish_tag="gray", baggage="pilotfish-tag=blue") == "gray"


def test_malformed_baggage_is_ignored_not_fatal(extract) -> None:
    assert extract(baggage=";;,,=,pilotfish-tag=%zz,\x00") is None
    assert extract(baggage=",,garbage,pilotfish-tag=gray") == "gray"


def test_oversized_baggage_is_ignored(extract) -> None:
    assert extract(baggage="pilotfish-tag=gray," + "k=" + "v" * 9000) is None


def test_several_baggage_headers_are_read_as_one_list() -> None:
    headers = [(b"baggage", b"a=1"), (b"baggage", b"pilotfish-tag=gray")]
    assert inbound.tag_from_asgi_headers(headers) == "gray"
    assert inbound.tag_from_grpc_metadata((("baggage", "a=1"), ("baggage", "pilotfish-tag=gray"))) == "gray"


def test_grpc_metadata_may_be_empty_or_none() -> None:
    assert inbound.tag_from_grpc_metadata(None) is None
    assert inbound.tag_from_grpc_metadata(()) is None


def test_broken_input_never_raises() -> None:
    assert inbound.tag_from_environ(None) is None  # type: ignore[arg-type]
    assert inbound.tag_from_asgi_headers([(b"x-pilotfish-tag",)]) is None  # type: ignore[list-item]
    assert inbound.tag_from_grpc_metadata(object()) is None  # type: ignore[arg-type]


# --- entry tagging -----------------------------------------------------------

HEADER_LANE = {
    "name": "beta",
    "tag": "gray",
    "match": {"header": "X-User-Group", "values": ["beta", "staff"]},
}
COOKIE_LANE = {"name": "cookie", "tag": "blue", "match": {"cookie": "lane", "value": "blue"}}


def test_an_untagged_request_matching_a_header_lane_gets_its_tag(extract, central) -> None:
    central(lanes=[HEADER_LANE])
    assert extract(x_user_group="staff") == "gray"
    assert extract(x_user_group="others") is None
    assert extract() is None


def test_a_request_that_already_has_a_tag_keeps_it(extract, central) -> None:
    central(lanes=[HEADER_LANE])
    assert extract(x_user_group="beta", x_pilotfish_tag="blue") == "blue"
    assert extract(x_user_group="beta", baggage="pilotfish-tag=blue") == "blue"


def test_a_cookie_lane_matches_on_the_named_cookie(central) -> None:
    central(lanes=[COOKIE_LANE])
    assert inbound.tag_from_environ(environ(cookie='a=1; lane="blue"; b=2')) == "blue"
    assert inbound.tag_from_asgi_headers(asgi(cookie="lane=blue")) == "blue"
    assert inbound.tag_from_environ(environ(cookie="mylane=blue")) is None


def test_the_first_matching_lane_wins(central) -> None:
    central(lanes=[COOKIE_LANE, dict(HEADER_LANE, match={"header": "x-user-group", "value": "beta"})])
    assert inbound.tag_from_environ(environ(cookie="lane=blue", x_user_group="beta")) == "blue"
    assert inbound.tag_from_environ(environ(x_user_group="beta")) == "gray"


def _in_bucket(name: str, key: str, percent: float) -> bool:
    return zlib.crc32(("%s:%s" % (name, key)).encode()) % 10000 < percent * 100


def test_a_percentage_lane_tags_a_stable_share_of_keys(extract, central) -> None:
    central(
        lanes=[{"name": "ten", "tag": "gray", "match": {"percent": 10, "hash_on": {"header": "x-user-id"}}}]
    )
    tagged = [str(i) for i in range(2000) if extract(x_user_id=str(i)) == "gray"]
    assert 150 < len(tagged) < 250
    assert tagged == [str(i) for i in range(2000) if _in_bucket("ten", str(i), 10)]
    assert all(extract(x_user_id=key) == "gray" for key in tagged)  # stable on every call


def test_raising_a_percentage_only_adds_keys(central) -> None:
    def share(percent: float) -> set:
        central(
            lanes=[{"name": "p", "tag": "gray", "match": {"percent": percent, "hash_on": {"cookie": "uid"}}}]
        )
        return {i for i in range(1000) if inbound.tag_from_environ(environ(cookie="uid=%d" % i)) == "gray"}

    five, twenty = share(5), share(20)
    assert five < twenty


def test_a_percentage_lane_never_matches_a_request_without_the_key(central) -> None:
    central(
        lanes=[{"name": "all", "tag": "gray", "match": {"percent": 100, "hash_on": {"header": "x-user-id"}}}]
    )
    assert inbound.tag_from_environ(environ()) is None
    assert inbound.tag_from_environ(environ(x_user_id="1")) == "gray"


def test_lanes_follow_live_config_changes(central) -> None:
    central(lanes=[HEADER_LANE])
    assert inbound.tag_from_environ(environ(x_user_group="beta")) == "gray"
    central(lanes=[])
    assert inbound.tag_from_environ(environ(x_user_group="beta")) is None


@pytest.mark.parametrize(
    "lane, field",
    [
        ("not an object", "lanes[0]: expected an object"),
        ({"tag": "gray", "match": {"header": "h", "value": "v"}}, "lanes[0].name"),
        ({"name": "n", "tag": "no spaces", "match": {"header": "h", "value": "v"}}, "lanes[0].tag"),
        ({"name": "n", "tag": "gray"}, "lanes[0].match"),
        ({"name": "n", "tag": "gray", "match": {"header": "h"}}, "lanes[0].match: expected 'values'"),
        ({"name": "n", "tag": "gray", "match": {"header": "h", "values": []}}, "lanes[0].match.values"),
        (
            {"name": "n", "tag": "gray", "match": {"header": "h", "cookie": "c", "value": "v"}},
            "lanes[0].match",
        ),
        (
            {"name": "n", "tag": "gray", "match": {"percent": 101, "hash_on": {"header": "h"}}},
            "match.percent",
        ),
        (
            {"name": "n", "tag": "gray", "match": {"percent": True, "hash_on": {"header": "h"}}},
            "match.percent",
        ),
        ({"name": "n", "tag": "gray", "match": {"percent": 5}}, "lanes[0].match.hash_on"),
    ],
)
def test_an_invalid_lane_is_skipped_with_a_warning_naming_the_field(lane, field, capsys) -> None:
    from pilotfish import log

    log.set_level("warning")
    lanes = compile_lanes([lane, HEADER_LANE])
    assert [valid.name for valid in lanes] == ["beta"]
    assert field in capsys.readouterr().err


def test_a_duplicate_lane_name_is_rejected_and_the_first_kept(capsys) -> None:
    lanes = compile_lanes([HEADER_LANE, dict(COOKIE_LANE, name="beta")])
    assert [lane.tag for lane in lanes] == ["gray"]


def test_lanes_that_are_not_a_list_turn_entry_tagging_off(extract, central) -> None:
    central(lanes={"name": "oops"})
    assert extract(x_user_group="beta") is None


_HEADER_NAMES = st.sampled_from([b"x-pilotfish-tag", b"baggage", b"cookie", b"x-user-group", b"accept"])


@given(st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=80)), max_size=8))
def test_any_asgi_headers_give_no_tag_or_a_valid_one_and_never_raise(headers) -> None:
    tag = inbound.tag_from_asgi_headers(headers)
    assert tag is None or valid_tag(tag) == tag


@given(
    st.dictionaries(
        st.sampled_from(["HTTP_X_PILOTFISH_TAG", "HTTP_BAGGAGE", "HTTP_COOKIE"]), st.text(max_size=80)
    )
)
def test_any_wsgi_environ_gives_no_tag_or_a_valid_one_and_never_raises(environ_) -> None:
    tag = inbound.tag_from_environ(environ_)
    assert tag is None or valid_tag(tag) == tag
