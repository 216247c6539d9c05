"""W3C baggage: read our entry from whatever arrives, add it to whatever the caller set."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pilotfish.tags import baggage


def test_a_plain_entry_is_found_among_others() -> None:
    assert baggage.lookup("userId=alice,pilotfish-tag=gray,isProduction=false", "pilotfish-tag") == "gray"


def test_whitespace_around_members_keys_and_values_is_ignored() -> None:
    assert baggage.lookup(" a=1 ,\t pilotfish-tag \t=\t gray ; prop=x , b=2", "pilotfish-tag") == "gray"


def test_properties_after_the_value_are_not_part_of_it() -> None:
    assert baggage.lookup("pilotfish-tag=gray;ttl=30;flag", "pilotfish-tag") == "gray"


def test_values_are_percent_decoded_and_plus_stays_a_plus() -> None:
    assert baggage.lookup("k=a%20b%2Cc+d", "k") == "a b,c+d"


def test_values_may_contain_equals_signs() -> None:
    assert baggage.lookup("k=a=b", "k") == "a=b"


def test_a_key_that_only_appears_inside_another_key_does_not_match() -> None:
    assert baggage.lookup("my-pilotfish-tag=blue", "pilotfish-tag") is None


def test_malformed_members_are_skipped_and_the_rest_still_counts() -> None:
    header = 'no-equals-sign,bad key=1,k="quoted",=empty-key,pilotfish-tag=gray'
    assert baggage.parse([header]) == [("pilotfish-tag", "gray")]


def test_a_value_with_invalid_percent_encoding_is_dropped() -> None:
    assert baggage.lookup("k=%ff%fe", "k") is None


def test_an_oversized_header_is_ignored_entirely() -> None:
    header = "pilotfish-tag=gray," + ",".join("k%d=%s" % (i, "v" * 100) for i in range(100))
    assert len(header) > baggage.MAX_HEADER_LENGTH
    assert baggage.lookup(header, "pilotfish-tag") is None
    assert baggage.parse([header]) == []


def test_members_past_the_limit_are_not_read() -> None:
    header = ",".join("k%d=v" % i for i in range(baggage.MAX_MEMBERS)) + ",late=1"
    assert baggage.lookup(header, "late") is None
    assert len(baggage.parse([header])) == baggage.MAX_MEMBERS


def test_several_baggage_headers_are_one_list_in_order() -> None:
    assert baggage.parse(["a=1", "b=2,a=3"]) == [("a", "1"), ("b", "2"), ("a", "3")]


def test_our_entry_alone_when_the_caller_set_no_baggage() -> None:
    assert baggage.with_entry([], "pilotfish-tag", "gray") == "pilotfish-tag=gray"


def test_our_entry_is_appended_to_the_callers_baggage_which_is_kept_byte_for_byte() -> None:
    merged = baggage.with_entry(["userId=alice;p=1 ,  junk"], "pilotfish-tag", "gray")
    assert merged == "userId=alice;p=1 ,  junk,pilotfish-tag=gray"


def test_several_caller_headers_become_one() -> None:
    assert baggage.with_entry(["a=1", "b=2"], "k", "v") == "a=1,b=2,k=v"


def test_a_caller_entry_with_our_key_wins_and_nothing_is_written() -> None:
    assert baggage.with_entry(["a=1, pilotfish-tag = blue"], "pilotfish-tag", "gray") is None


def test_nothing_is_written_when_the_result_would_exceed_the_size_limit() -> None:
    big = "k=" + "v" * (baggage.MAX_HEADER_LENGTH - 5)
    assert baggage.with_entry([big], "pilotfish-tag", "gray") is None


def test_nothing_is_written_when_the_result_would_exceed_the_member_limit() -> None:
    many = ",".join("k%d=v" % i for i in range(baggage.MAX_MEMBERS))
    assert baggage.with_entry([many], "pilotfish-tag", "gray") is None


def test_values_are_encoded_with_percent_20_not_plus() -> None:
    assert baggage.encode_value("a b,c;d%e") == "a%20b%2Cc%3Bd%25e"


@given(st.text(max_size=40))
def test_any_value_survives_encoding_and_decoding(value: str) -> None:
    header = "x=1," + "k=" + baggage.encode_value(value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates cannot be sent at all
    assert baggage.lookup(header, "k") == value


@given(st.text(max_size=300))
def test_arbitrary_input_never_raises(header: str) -> None:
    baggage.lookup(header, "pilotfish-tag")
    baggage.parse([header, header])
    baggage.with_entry([header], "pilotfish-tag", "gray")
