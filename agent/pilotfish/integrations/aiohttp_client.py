"""Tag every request sent with an ``aiohttp.ClientSession`` (and ``aiohttp.request``).

``ClientSession._request`` is where every request method, ``ws_connect`` and
the module-level ``aiohttp.request`` end up, once per request (redirects
re-use the same headers). The wrapper is a plain function returning the
original coroutine, so with no tag in context it adds one ContextVar read and
no extra coroutine frame.

The caller's explicit headers include the session's default headers: a
``x-pilotfish-tag`` or baggage entry set on the session counts as set by the
caller. Proxy headers are not touched.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .. import log
from ..tags import outbound
from ..tags.context import CURRENT_TAG

_original: Optional[Callable[..., Any]] = None
_module: Any = None


def tagged_headers(session: Any, headers: Any, tag: str) -> Any:
    """The headers to send instead of ``headers``, or None when nothing is to be added."""
    effective = session._prepare_headers(headers)
    header, merged = outbound.additions(tag, effective.__contains__, effective.getall(outbound.BAGGAGE, []))
    if header is None and merged is None:
        return None
    if merged is not None:
        effective.popall(outbound.BAGGAGE, None)
        effective.add(outbound.BAGGAGE, merged)
    if header is not None:
        effective.add(header[0], header[1])
    return effective


def _request(self: Any, *args: Any, **kwargs: Any) -> Any:
    tag = CURRENT_TAG.get()
    if tag is not None:
        try:
            new = tagged_headers(self, kwargs.get("headers"), tag)
            if new is not None:
                kwargs["headers"] = new
        except Exception:
            log.exception_once("tags:aiohttp", "could not tag an aiohttp request; sent untagged")
    return _original(self, *args, **kwargs)  # type: ignore[misc]


def patch(module: Any = None) -> None:
    """Patch ``aiohttp.ClientSession._request`` (idempotent)."""
    global _original, _module
    if module is None:
        import aiohttp as module
    if _original is not None:
        return
    _module = module
    _original = module.ClientSession._request
    module.ClientSession._request = _request


def unpatch() -> None:
    global _original, _module
    if _module is not None and _module.ClientSession._request is _request:
        _module.ClientSession._request = _original
    _original = _module = None
