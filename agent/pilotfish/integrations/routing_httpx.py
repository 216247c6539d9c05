"""Route httpx calls (sync and async) to a Service's instances, per request, at the httpcore pool.

Hook points: ``httpcore.ConnectionPool.handle_request`` and
``httpcore.AsyncConnectionPool.handle_async_request`` (what httpx's default
transports call once per request), only for plain pools: never an
``HTTPProxy``/``SOCKSProxy`` pool, never a Unix-socket one.

For a routed Service the request handed to the pool is a copy whose URL
*origin* is the instance (``ip:port``) — the pool keys connections by origin,
so keep-alive reuse never crosses instances — while everything the server or
the app sees stays the Service's: the headers are the same objects (httpx
already wrote ``Host``, which HTTP/2 turns into ``:authority``), the TLS name
goes in the ``sni_hostname`` extension that httpcore documents for exactly
this (certificate verification included), and the response httpx builds keeps
the app's own request and URL. Added: ``X-Pilotfish-Consumer``.

A connect failure (``httpcore.ConnectError`` / ``ConnectTimeout``: nothing was
sent) ejects the instance and the request goes once to another; strict lane
mode without an instance of the lane raises ``httpcore.ConnectError``, which
httpx turns into its own ``httpx.ConnectError``. An answer with
``X-Pilotfish-Offline: 1`` evicts the instance at once.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from .. import log
from ..routing import core

_originals: Dict[str, Tuple[Any, Callable[..., Any]]] = {}
_types: Dict[str, Any] = {}
_OFFLINE = core.OFFLINE_HEADER.encode("ascii")


def _route(pool: Any, request: Any, exclude: Any = None) -> Optional[Tuple[Any, Any, Any]]:
    """(service, instance, routed request) or None for the ordinary path."""
    if type(pool) is not _types["pool_classes"].get(type(pool).__name__) or pool._uds is not None:
        return None
    if getattr(pool, "_proxy", None) is not None:
        return None
    url = request.url
    host = url.host.decode("ascii").lower()
    service = core.find(host)
    if service is None:
        return None
    port = url.port or (443 if url.scheme in (b"https", b"wss") else 80)
    if port not in service.ports:
        return None
    try:
        instance = core.choose(service, port, exclude)
    except core.NoInstanceInLane as problem:
        raise _types["ConnectError"](str(problem))
    if instance is None:
        return None
    return service, instance, _rewrite(request, instance, port, host)


def _rewrite(request: Any, instance: Any, port: int, host: str) -> Any:
    """A copy of ``request`` addressed to the instance.

    Built field by field (``object.__new__``) rather than through the constructors:
    httpx already validated every field, and re-validating would be most of the cost.
    """
    url = request.url
    routed_url = object.__new__(_types["URL"])
    routed_url.scheme, routed_url.host = url.scheme, instance.ip.encode("ascii")
    routed_url.port, routed_url.target = instance.ports[port], url.target
    extensions = dict(request.extensions)
    extensions.setdefault("sni_hostname", host)
    routed = object.__new__(_types["Request"])
    routed.method, routed.url, routed.stream, routed.extensions = (
        request.method,
        routed_url,
        request.stream,
        extensions,
    )
    routed.headers = request.headers + [(b"X-Pilotfish-Consumer", core.consumer_bytes)]
    return routed


def _check_offline(response: Any, instance: Any) -> None:
    for name, value in response.headers:
        if name.lower() == _OFFLINE and value.strip() == b"1":
            core.offline_seen(instance)
            return


def _handle_request(self: Any, request: Any) -> Any:
    original = _originals["sync"][1]
    try:
        route = _route(self, request)
    except _types["ConnectError"]:
        raise
    except Exception:
        log.exception_once("routing:httpx", "could not route an httpx call; sent the ordinary way")
        route = None
    if route is None:
        return original(self, request)
    service, instance, routed = route
    try:
        response = original(self, routed)
    except _types["connect_errors"]:
        core.connect_failed(service, instance)
        retry = _route(self, request, exclude=instance)
        if retry is None:
            raise
        service, instance, routed = retry
        response = original(self, routed)
    try:
        _check_offline(response, instance)
    except Exception:
        log.exception_once("routing:httpx-offline", "could not read an offline marker")
    return response


async def _handle_async_request(self: Any, request: Any) -> Any:
    original = _originals["async"][1]
    try:
        route = _route(self, request)
    except _types["ConnectError"]:
        raise
    except Exception:
        log.exception_once("routing:httpx", "could not route an httpx call; sent the ordinary way")
        route = None
    if route is None:
        return await original(self, request)
    service, instance, routed = route
    try:
        response = await original(self, routed)
    except _types["connect_errors"]:
        core.connect_failed(service, instance)
        retry = _route(self, request, exclude=instance)
        if retry is None:
            raise
        service, instance, routed = retry
        response = await original(self, routed)
    try:
        _check_offline(response, instance)
    except Exception:
        log.exception_once("routing:httpx-offline", "could not read an offline marker")
    return response


def patch(module: Any = None) -> None:
    """Patch httpcore's two pools (idempotent)."""
    if _originals:
        return
    import httpcore

    sync_pool: Any
    async_pool: Any
    sync_pool, async_pool = httpcore.ConnectionPool, httpcore.AsyncConnectionPool
    _types.update(
        Request=httpcore.Request,
        URL=httpcore.URL,
        ConnectError=httpcore.ConnectError,
        connect_errors=(httpcore.ConnectError, httpcore.ConnectTimeout),
        pool_classes={sync_pool.__name__: sync_pool, async_pool.__name__: async_pool},
    )
    _originals["sync"] = (sync_pool, sync_pool.handle_request)
    _originals["async"] = (async_pool, async_pool.handle_async_request)
    sync_pool.handle_request = _handle_request
    async_pool.handle_async_request = _handle_async_request


def unpatch() -> None:
    for key, name, ours in (
        ("sync", "handle_request", _handle_request),
        ("async", "handle_async_request", _handle_async_request),
    ):
        found = _originals.get(key)
        if found is not None and getattr(found[0], name) is ours:
            setattr(found[0], name, found[1])
    _originals.clear()
