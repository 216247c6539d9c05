"""Where a request's tag comes from: tag headers, then baggage, then the app's lane rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pilotfish.tags import inbound
from pilotfish.tags.context import valid_tag


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


# Entry tagging (lane rules) has its own specification: tests/tags/test_lanes.py.


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
