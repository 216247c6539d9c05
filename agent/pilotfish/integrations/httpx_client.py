"""Tag every request sent with httpx, sync (``Client``) and async (``AsyncClient``).

``Client.send`` / ``AsyncClient.send`` is the one method every httpx request
goes through (``client.get``, ``client.stream``, ``httpx.get``...) whatever
the transport, including custom and mounted transports. Redirects are built
inside ``send`` from the request's headers, so they stay tagged. Patched at the
class, so the per-call cost with no tag is one ContextVar read.

The app's own ``Request`` object is left as the app built it: the tag goes into
a copy of its headers for the duration of ``send``, and the app's headers are
put back afterwards, so re-sending the same ``Request`` later, untagged, sends
no stale tag.

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


def _tag(request: Any, tag: str) -> Any:
    """Tag a copy of the request's headers; return the caller's headers to put back, or None."""
    try:
        saved = request.headers
        request.headers = saved.copy()
        tag_request(request, tag)
        return saved
    except Exception:
        log.exception_once("tags:httpx", "could not tag an httpx request; sent untagged")
        return None


def _restore(request: Any, saved: Any) -> None:
    try:
        request.headers = saved
    except Exception:
        log.exception_once("tags:httpx-restore", "could not restore an httpx request's headers")


def _send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    tag = CURRENT_TAG.get()
    if tag is None:
        return _originals["Client"](self, request, *args, **kwargs)
    saved = _tag(request, tag)
    try:
        return _originals["Client"](self, request, *args, **kwargs)
    finally:
        if saved is not None:
            _restore(request, saved)


async def _send_async(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
    tag = CURRENT_TAG.get()
    if tag is None:
        return await _originals["AsyncClient"](self, request, *args, **kwargs)
    saved = _tag(request, tag)
    try:
        return await _originals["AsyncClient"](self, request, *args, **kwargs)
    finally:
        if saved is not None:
            _restore(request, saved)


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
