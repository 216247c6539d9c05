"""Route aiohttp client calls to a Service's instances, per request.

Hook points (class attributes, so a connector wrapped in a proxy object by
another instrumentation still reaches them):

- ``BaseConnector.connect``: for a ``TCPConnector`` without a proxy, the pick
  happens here and is kept on the request; the request gets
  ``X-Pilotfish-Consumer`` (it is sent after ``connect`` returns).
- ``ClientRequest.connection_key``: a routed request's key carries the
  instance's address as one more element, so the connector's keep-alive pool
  (and ``limit_per_host``) is per instance and never crosses lanes; the key's
  named fields (host, port ... used in error messages) stay the Service's.
- ``TCPConnector._create_direct_connection`` / ``_resolve_host``: while a routed
  request connects, "resolving" the Service's name answers the instance's
  address; ``server_hostname`` (SNI, certificate check) and the Host header
  stay the Service's name.
- ``ClientResponse.start``: ``X-Pilotfish-Offline: 1`` evicts the instance.

A connect failure (``ClientConnectorError`` that is not a TLS or DNS error:
nothing sent) ejects the instance and the request goes once to another;
strict lane mode without an instance of the lane raises aiohttp's own
``ClientConnectorError`` naming the lane and the Service.
"""

from __future__ import annotations

import contextvars
import errno
import socket
from typing import Any, Dict, Optional, Tuple

from .. import log
from ..routing import core

_originals: Dict[str, Any] = {}
_types: Dict[str, Any] = {}
_resolving: contextvars.ContextVar[Optional[Tuple[str, int]]] = contextvars.ContextVar(
    "pilotfish_routing_resolving", default=None
)


def _routed_key_class(base: Any) -> Any:
    class RoutedConnectionKey(base):  # type: ignore[misc]
        """A ConnectionKey plus the instance address (not a named field: messages keep the Service)."""

        __slots__ = ()

        def __repr__(self) -> str:
            return "%s -> %s:%s" % (base.__repr__(tuple.__new__(base, self[: len(base._fields)])), *self[-1])

    return RoutedConnectionKey


def _connection_key(self: Any) -> Any:
    key = _originals["connection_key"](self)
    route = self.__dict__.get("_pf_route")
    if route is None:
        return key
    return tuple.__new__(_types["RoutedKey"], tuple(key) + (route[1],))


def _pick(connector: Any, req: Any, exclude: Any = None) -> Optional[Tuple[Any, Any, Tuple[str, int]]]:
    if not isinstance(connector, _types["TCPConnector"]) or req.proxy:
        return None
    host = req.url.raw_host
    service = core.find(host) if host else None
    if service is None:
        return None
    port = req.port
    if port not in service.ports:
        return None
    try:
        instance = core.choose(service, port, exclude)
    except core.NoInstanceInLane as problem:
        req.__dict__.pop("_pf_route", None)
        raise _types["ClientConnectorError"](
            req.connection_key, ConnectionRefusedError(errno.ECONNREFUSED, str(problem))
        ) from None
    if instance is None:
        return None
    return service, instance, (instance.ip, instance.ports[port])


async def _connect(self: Any, req: Any, traces: Any, timeout: Any) -> Any:
    original = _originals["connect"]
    route = None
    try:
        route = _pick(self, req)
    except _types["ClientConnectorError"]:
        raise
    except Exception:
        log.exception_once("routing:aiohttp", "could not route an aiohttp call; sent the ordinary way")
    if route is None:
        return await original(self, req, traces, timeout)
    service, instance, target = route
    req._pf_route = (instance, target)
    try:
        req.headers[core.CONSUMER_HEADER] = core.consumer_value
    except Exception:
        log.exception_once("routing:aiohttp-consumer", "could not mark a routed aiohttp request")
    try:
        conn = await original(self, req, traces, timeout)
    except _types["ClientConnectorError"] as problem:
        if isinstance(problem, _types["not_connect_failures"]):
            raise
        core.connect_failed(service, instance)
        retry = _pick(self, req, exclude=instance)
        if retry is None:
            raise
        service, instance, target = retry
        req._pf_route = (instance, target)
        conn = await original(self, req, traces, timeout)
    if instance.failures:
        core.connected(instance)
    conn._pf_instance = instance
    return conn


async def _create_direct_connection(self: Any, req: Any, *args: Any, **kwargs: Any) -> Any:
    route = req.__dict__.get("_pf_route")
    if route is None:
        return await _originals["_create_direct_connection"](self, req, *args, **kwargs)
    token = _resolving.set(route[1])
    try:
        return await _originals["_create_direct_connection"](self, req, *args, **kwargs)
    finally:
        _resolving.reset(token)


async def _resolve_host(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
    target = _resolving.get()
    if target is None:
        return await _originals["_resolve_host"](self, host, port, *args, **kwargs)
    ip, pod_port = target
    return [
        {
            "hostname": host,
            "host": ip,
            "port": pod_port,
            "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
            "proto": 0,
            "flags": socket.AI_NUMERICHOST,
        }
    ]


async def _start(self: Any, connection: Any, *args: Any, **kwargs: Any) -> Any:
    result = await _originals["start"](self, connection, *args, **kwargs)
    instance = getattr(connection, "_pf_instance", None)
    if instance is not None:
        try:
            if core.is_offline_marker(self.headers.get(core.OFFLINE_HEADER)):
                core.offline_seen(instance)
        except Exception:
            log.exception_once("routing:aiohttp-offline", "could not read an offline marker")
    return result


def patch(module: Any = None) -> None:
    """Patch aiohttp's connector, request key and response start (idempotent)."""
    if _originals:
        return
    from aiohttp import client_exceptions
    from aiohttp import client_reqrep as reqrep_module
    from aiohttp import connector as connector_module

    client_reqrep: Any = reqrep_module
    connector: Any = connector_module

    _types.update(
        TCPConnector=connector.TCPConnector,
        ClientConnectorError=client_exceptions.ClientConnectorError,
        not_connect_failures=tuple(
            getattr(client_exceptions, name)
            for name in (
                "ClientConnectorCertificateError",
                "ClientConnectorSSLError",
                "ClientConnectorDNSError",
            )
            if hasattr(client_exceptions, name)
        ),
        RoutedKey=_routed_key_class(client_reqrep.ConnectionKey),
    )
    _originals.update(
        connect=connector.BaseConnector.connect,
        _create_direct_connection=connector.TCPConnector._create_direct_connection,
        _resolve_host=connector.TCPConnector._resolve_host,
        start=client_reqrep.ClientResponse.start,
        connection_key=client_reqrep.ClientRequest.connection_key.fget,
    )
    connector.BaseConnector.connect = _connect
    connector.TCPConnector._create_direct_connection = _create_direct_connection
    connector.TCPConnector._resolve_host = _resolve_host
    client_reqrep.ClientResponse.start = _start
    client_reqrep.ClientRequest.connection_key = property(_connection_key)
