"""Route ``http.client`` (and so ``urllib.request``) calls to a Service's instances.

Hook points, all on ``http.client.HTTPConnection`` (class attributes, so a
wrapper another instrumentation puts around them before or after us still
reaches us):

- ``connect``: when ``self.host`` is a routed Service and ``self.port`` one of
  its ports, the pick happens here and only the address handed to
  ``self._create_connection`` changes (for the duration of this call). The
  Host header, ``sys.audit`` event and, for ``HTTPSConnection`` (whose
  ``connect`` calls this one, then wraps the socket with
  ``server_hostname=self.host``), SNI and certificate verification all keep the
  Service name. A refused / unreachable / timed-out TCP connect (nothing sent)
  ejects the instance and tries one other.
- ``putrequest``: a connection the app keeps alive across requests is re-checked
  against the request's lane and closed (so ``send`` reconnects through the
  pick) when its instance no longer fits; routed requests get
  ``X-Pilotfish-Consumer``.
- ``getresponse``: an answer with ``X-Pilotfish-Offline: 1`` evicts the
  instance at once.

urllib3 (and requests) connections are ``http.client`` subclasses with their
own ``connect``: they are routed by :mod:`.routing_urllib3` and only share the
``putrequest`` / ``getresponse`` parts here. Anything not routed costs one
``dict.get`` and goes through exactly the original code.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Callable, Dict

from .. import log
from ..routing import core
from ..routing.table import NEVER
from ..tags.context import CURRENT_TAG

CONNECT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "EHOSTDOWN", "ECONNRESET")
    if hasattr(errno, name)
)

_originals: Dict[str, Callable[..., Any]] = {}
_original_putrequest: Any = None
_patched_class: Any = None


def is_connect_failure(problem: BaseException) -> bool:
    """Nothing reached the server: safe to try another instance whatever the method."""
    if isinstance(problem, (ConnectionRefusedError, socket.timeout)):
        return True
    return isinstance(problem, OSError) and problem.errno in CONNECT_ERRNOS


def _routed_create(conn: Any, service: Any, instance: Any, create: Callable[..., Any]) -> Callable[..., Any]:
    port = conn.port

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            sock = create((instance.ip, instance.ports[port]), *args, **kwargs)
            conn._pf_instance, conn._pf_service, conn._pf_raw = instance, service, True
            if instance.failures:
                core.connected(instance)
            return sock
        except OSError as problem:
            if not is_connect_failure(problem):
                raise
            core.connect_failed(service, instance)
            other = core.choose(service, port, exclude=instance)
            if other is None:
                raise
            sock = create((other.ip, other.ports[port]), *args, **kwargs)
            conn._pf_instance, conn._pf_service, conn._pf_raw = other, service, True
            return sock

    return create_connection


def _connect(self: Any) -> Any:
    original = _originals["connect"]
    route = None
    try:
        if getattr(self, "_tunnel_host", None) is None:  # through a proxy: the ordinary path
            service = core.find(self.host)
            if service is not None and self.port in service.ports:
                instance = core.choose(service, self.port)  # strict lane mode may raise here
                if instance is not None:
                    route = (service, instance)
    except core.NoInstanceInLane:
        raise
    except Exception:
        log.exception_once(
            "routing:http.client", "could not route an http.client call; sent the ordinary way"
        )
        route = None
    if route is None:
        return original(self)
    had_own = "_create_connection" in self.__dict__
    create = self._create_connection
    self._create_connection = _routed_create(self, route[0], route[1], create)
    try:
        return original(self)
    finally:
        if had_own:
            self._create_connection = create
        else:
            del self._create_connection


def _putrequest(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
    marked = False
    try:
        instance = self._pf_instance
        if instance is not None:
            marked = True
            # A connection kept alive by the app: may it carry this request's lane?
            if (
                self.sock is not None
                and self._pf_raw
                and not (
                    instance.tag == (CURRENT_TAG.get() or "")
                    and instance.evicted_until == NEVER
                    and instance.ejected_until == NEVER
                )
                and not self._pf_service.fits(instance, self.port, CURRENT_TAG.get(), core.strict_lanes)
            ):
                self.close()  # the next send() reconnects through the pick
        elif self._tunnel_host is None and not type(self).__module__.startswith("urllib3"):
            service = core.find(self.host)
            marked = service is not None and self.port in service.ports
    except Exception:
        log.exception_once("routing:http.client-put", "could not check an http.client connection's lane")
    result = _original_putrequest(self, method, url, *args, **kwargs)
    if marked:
        try:
            self._buffer.append(core.consumer_line)  # what putheader appends, minus re-validating our own
        except Exception:
            log.exception_once("routing:consumer-header", "could not mark a routed request")
    return result


def _getresponse(self: Any, *args: Any, **kwargs: Any) -> Any:
    response = _originals["getresponse"](self, *args, **kwargs)
    instance = self._pf_instance
    if instance is not None:
        try:
            if core.is_offline_marker(response.getheader(core.OFFLINE_HEADER)):
                core.offline_seen(instance)
        except Exception:
            log.exception_once("routing:http.client-offline", "could not read an offline marker")
    return response


def patch(module: Any = None) -> None:
    """Patch ``http.client.HTTPConnection`` (idempotent)."""
    global _patched_class, _original_putrequest
    if module is None:
        import http.client as module
    if _originals:
        return
    cls = module.HTTPConnection
    _originals.update(connect=cls.connect, putrequest=cls.putrequest, getresponse=cls.getresponse)
    _original_putrequest = cls.putrequest
    cls._pf_instance = None
    cls._pf_service = None
    cls._pf_raw = False  # True on a connection this module routed (the app holds it, not urllib3)
    cls.connect = _connect
    cls.putrequest = _putrequest
    cls.getresponse = _getresponse
    _patched_class = cls


def unpatch() -> None:
    global _patched_class
    cls = _patched_class
    if cls is not None:
        for name, original in _originals.items():
            if getattr(cls, name) in (_connect, _putrequest, _getresponse):
                setattr(cls, name, original)
    _originals.clear()
    _patched_class = None
