"""Fixtures for the traffic-tag tests: settings as central config would set them."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from pilotfish import settings
from pilotfish.tags import inbound, outbound
from pilotfish.tags.context import CURRENT_TAG
from support.carriers import ALL_CARRIERS


def _reset() -> None:
    settings.load({})
    inbound.refresh()
    outbound.refresh()


@pytest.fixture
def central() -> Iterator[Callable[..., Any]]:
    """``central(tag_headers=[...], lanes=[...])`` applies a central config; undone after the test."""
    _reset()

    def apply(**config: Any) -> Any:
        return settings.apply_central(dict(config), "test")

    yield apply
    _reset()


@pytest.fixture(autouse=True)
def untagged() -> Iterator[None]:
    """Every test starts and ends with no tag in its context and default settings."""
    _reset()
    token = CURRENT_TAG.set(None)
    yield
    CURRENT_TAG.reset(token)
    _reset()


@pytest.fixture(params=ALL_CARRIERS, ids=[c[0] for c in ALL_CARRIERS])
def extract(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """The tag extractor of each carrier (WSGI environ, ASGI headers, gRPC metadata), called with headers."""
    return request.param[1]
