"""The hand-written JSON-patch diff (admission/patch.py) agrees with ``jsonpatch`` on any JSON."""

from __future__ import annotations

from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st
from pilotfish_webhook.admission.patch import clone, diff, escape

KEYS = st.sampled_from(["a", "b", "pilotfish.io/status", "x~y", "", "0", "-"])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(JSON, JSON)
def test_applying_the_diff_with_jsonpatch_turns_old_into_new(old: Any, new: Any) -> None:
    assert jsonpatch.apply_patch(old, diff(old, new)) == new


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_equal_documents_give_an_empty_patch_and_clone_is_deep(doc: Any) -> None:
    copy = clone(doc)
    assert copy == doc and diff(doc, copy) == []
    if isinstance(doc, (dict, list)) and doc:
        assert copy is not doc


def test_insertions_at_the_front_and_back_are_adds_not_a_whole_list_replace() -> None:
    assert diff({"l": [2, 3]}, {"l": [1, 2, 3]}) == [{"op": "add", "path": "/l/0", "value": 1}]
    assert diff({"l": [1]}, {"l": [1, 2]}) == [{"op": "add", "path": "/l/1", "value": 2}]


def test_json_pointer_tokens_are_escaped() -> None:
    assert escape("pilotfish.io/status") == "pilotfish.io~1status"
    assert escape("a~/b") == "a~0~1b"
