"""Tag every request sent with httpx, sync (``Client``) and async (``AsyncClient``).

``Client.send`` / ``AsyncClient.send`` is the one method every httpx request
goes through (``client.get``, ``client.stream``, ``httpx.get``...) whatever
the transport, including custom and mounted transports. Redirects re-use the
original request's headers, so they stay tagged. Patched at the class, so the
per-call cost with no tag is one ContextVar read.

Named ``httpx_client`` (not ``httpx``) so that the module never shadows the
library inside this package.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from pilotfish import log
from pilotfish.tags import outbound
from pilotfish.tags.context import CURRENT_TAG

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


def _tag(request: Any, tag: str) -> None:
    try:
        tag_request(request, tag)
    except Exception:
        log.exception_once("tags:httpx", "could not tag an httpx request; sent untagged")


def _send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    tag = CURRENT_TAG.get()
    if tag is not None:
        _tag(request, tag)
    return _originals["Client"](self, request, *args, **kwargs)


async def _send_async(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    tag = CURRENT_TAG.get()
    if tag is not None:
        _tag(request, tag)
    return await _originals["AsyncClient"](self, request, *args, **kwargs)


def patch(module: Any = None) -> None:
    """Patch ``httpx.Client.send`` and ``httpx.AsyncClient.send`` (idempotent)."""
    global _module
    if module is None:
        import httpx as module
    if _originals:
        return
    _module = module
    _originals["Client"] = module.Client.send
    _originals["AsyncClient"] = module.AsyncClient.send
    module.Client.send = _send
    module.AsyncClient.send = _send_async


def unpatch() -> None:
    global _module
    module: Optional[Any] = _module
    if module is not None:
        if module.Client.send is _send:
            module.Client.send = _originals["Client"]
        if module.AsyncClient.send is _send_async:
            module.AsyncClient.send = _originals["AsyncClient"]
    _originals.clear()
    _module = None
