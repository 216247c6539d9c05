"""Tag every request sent with httpx, sync (``Client``) and async (``AsyncClient``).

Where the tag goes in: at the transport, on a copy. ``Client._transport_for_url``
(and the async twin) is called once per request actually put on the wire, by
``_send_single_request``, after httpx has done everything it does to the
request itself: auth (Basic, Digest, custom ``Auth`` flows), cookies, each
redirect hop. With a tag in context the patched method hands back a thin
wrapper of the transport it chose (pool, proxy, mounted or custom transport)
whose ``handle_request`` sends a *copy* of the request carrying the tag.

So the app's ``Request`` object is never touched: ``response.request`` is the
app's request with everything httpx added to it (an ``Authorization`` header
from auth, a ``Cookie`` header) and no tag; a ``Request`` re-sent later,
untagged, sends no stale tag; Digest auth's challenge/nonce bookkeeping works
on the app's request as without the agent. Tag decisions see every header
httpx itself added, so an ``x-pilotfish-tag`` set as a client default or by an
auth flow counts as set by the caller.

With no tag in context the patched method is one ContextVar read and a call of
the original: the transport, and the bytes on the wire, are exactly the app's.

Named ``httpx_client`` (not ``httpx``) so that the module never shadows the
library inside this package.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from .. import log
from ..tags import outbound
from ..tags.context import CURRENT_TAG

_originals: Dict[str, Callable[..., Any]] = {}
_module: Any = None


def tag_request(request: Any, tag: str) -> None:
    """Write the tag into an ``httpx.Request``'s headers (in place, before it is sent)."""
    headers = request.headers
    header, merged = outbound.additions(tag, headers.__contains__, headers.get_list(outbound.BAGGAGE))
    if merged is not None:
        headers[outbound.BAGGAGE] = merged  # replaces every earlier baggage value
    if header is not None:
        headers[header[0]] = header[1]


def tagged_copy(request: Any, tag: str) -> Any:
    """A shallow copy of ``request`` (same stream, URL, extensions) with its own, tagged headers.

    Not ``copy.copy``: ``Request.__getstate__`` drops the stream (it is for pickling).
    """
    clone = object.__new__(type(request))
    clone.__dict__.update(request.__dict__)
    clone.headers = request.headers.copy()
    tag_request(clone, tag)
    return clone


def _on_the_wire(request: Any, tag: str) -> Any:
    """The request to hand to the transport: a tagged copy, or the app's own if tagging fails."""
    try:
        return tagged_copy(request, tag)
    except Exception:
        log.exception_once("tags:httpx", "could not tag an httpx request; sent untagged")
        return request


class _Transport:
    """Delegates to the transport httpx chose; only ``handle_request`` sends a tagged copy."""

    __slots__ = ("_transport", "_tag")

    def __init__(self, transport: Any, tag: str) -> None:
        self._transport = transport
        self._tag = tag

    def handle_request(self, request: Any) -> Any:
        return self._transport.handle_request(_on_the_wire(request, self._tag))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _AsyncTransport(_Transport):
    __slots__ = ()

    async def handle_async_request(self, request: Any) -> Any:
        return await self._transport.handle_async_request(_on_the_wire(request, self._tag))


def _transport_for_url(self: Any, url: Any) -> Any:
    tag = CURRENT_TAG.get()
    transport = _originals["Client"](self, url)
    return transport if tag is None else _Transport(transport, tag)


def _transport_for_url_async(self: Any, url: Any) -> Any:
    tag = CURRENT_TAG.get()
    transport = _originals["AsyncClient"](self, url)
    return transport if tag is None else _AsyncTransport(transport, tag)


def patch(module: Any = None) -> None:
    """Patch ``httpx.Client._transport_for_url`` and ``AsyncClient._transport_for_url`` (idempotent)."""
    global _module
    if module is None:
        import httpx as module
    if _originals:
        return
    if not all(hasattr(cls, "_transport_for_url") for cls in (module.Client, module.AsyncClient)):
        log.once(
            "tags:httpx-version",
            "warning",
            "httpx %s has no Client._transport_for_url; its calls are sent untagged"
            % getattr(module, "__version__", "?"),
        )
        return
    _module = module
    _originals["Client"] = module.Client._transport_for_url
    _originals["AsyncClient"] = module.AsyncClient._transport_for_url
    module.Client._transport_for_url = _transport_for_url
    module.AsyncClient._transport_for_url = _transport_for_url_async


def unpatch() -> None:
    global _module
    module: Optional[Any] = _module
    if module is not None:
        if module.Client._transport_for_url is _transport_for_url:
            module.Client._transport_for_url = _originals["Client"]
        if module.AsyncClient._transport_for_url is _transport_for_url_async:
            module.AsyncClient._transport_for_url = _originals["AsyncClient"]
    _originals.clear()
    _module = None
