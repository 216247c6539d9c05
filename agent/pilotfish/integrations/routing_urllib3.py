"""Route urllib3 (1.26 and 2.x) and so ``requests`` calls to a Service's instances, per request.

Hook point: ``PoolManager.connection_from_context``, which every way in passes
through once per request (``urlopen``, ``connection_from_url`` /
``connection_from_host``, and requests' ``get_connection`` /
``get_connection_with_tls_context``). For a routed Service the pick happens
there and the answer is a connection pool **of that instance**:

- pools are kept per (urllib3's own pool key, instance address) in a
  container of the manager's own, so keep-alive reuse never crosses lanes or
  instances and the manager's LRU of ``num_pools`` never thrashes;
- the pool is created exactly as urllib3 would (``_new_pool`` with the
  Service's scheme, host and port), so the Host header, TLS SNI and
  certificate checks keep the Service's name; only its connection class
  differs: a subclass whose ``_new_conn`` connects to the instance (swapping
  ``_dns_host``/``port`` for the duration of that call only: ``host`` feeds the
  Host header and ``server_hostname``, so it must never keep the IP);
- a refused connect (nothing sent) leaves ``urlopen`` as an internal signal and
  is sent once more through the pool of another instance;
- ``strict`` lane mode with no instance of the lane answers with a pool whose
  connections fail with urllib3's own ``NewConnectionError`` naming the lane
  and the Service, so requests raises its ordinary ``ConnectionError``.

``ProxyManager`` is never routed. Pools of instances that left the registry
are closed at the next routed request.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional, Tuple

from .. import log
from ..routing import core

_original: Optional[Callable[..., Any]] = None
_patched_class: Any = None
_proxy_class: Any = None
_new_connection_error: Any = None
_classes: Dict[Tuple[Any, int, int], Any] = {}
_classes_lock = threading.Lock()


class _Redispatch(Exception):
    """A routed connect failed before anything was sent: try another instance (never seen by the app)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


_no_redispatch = threading.local()


def _connection_class(base: Any, instance: Any, port: int) -> Any:
    """A subclass of the pool's connection class that connects to ``instance``."""
    key = (base, id(instance), port)
    found = _classes.get(key)
    if found is not None and found._pf_instance is instance:
        return found
    target = (instance.ip, instance.ports[port])
    connect_errors: Any = _connect_errors()

    class RoutedConnection(base):  # type: ignore[misc]
        _pf_instance = instance
        _pf_target = target

        def _new_conn(self: Any) -> Any:
            saved = self._dns_host, self.port
            self._dns_host, self.port = self._pf_target
            try:
                sock = super()._new_conn()
            except connect_errors as problem:
                if getattr(_no_redispatch, "active", False):
                    raise
                raise _Redispatch(problem) from problem
            finally:
                self._dns_host, self.port = saved
            if instance.failures:
                core.connected(instance)
            return sock

    RoutedConnection.__name__ = RoutedConnection.__qualname__ = base.__name__  # as in urllib3's own messages
    RoutedConnection.__module__ = base.__module__
    with _classes_lock:
        if len(_classes) > 1024:
            _classes.clear()
        _classes[key] = RoutedConnection
    return RoutedConnection


def _connect_errors() -> Tuple[type, ...]:
    from urllib3 import exceptions

    return (exceptions.NewConnectionError, exceptions.ConnectTimeoutError)


def _failing_class(base: Any, message: str) -> Any:
    error = _new_connection_error

    class LaneUnavailable(base):  # type: ignore[misc]
        def _new_conn(self) -> Any:
            raise error(self, message)

    LaneUnavailable.__name__ = LaneUnavailable.__qualname__ = base.__name__  # as in urllib3's own messages
    LaneUnavailable.__module__ = base.__module__
    return LaneUnavailable


def _pools(manager: Any) -> Dict[Any, Any]:
    pools = manager.__dict__.get("_pf_pools")
    if pools is None:
        pools = manager.__dict__.setdefault("_pf_pools", {})
    found: Dict[Any, Any] = pools
    return found


def _prune(manager: Any, pools: Dict[Any, Any]) -> None:
    """Close the pools of instances that are no longer in the table."""
    table = core.current_table
    version = table.version if table is not None else ""
    if manager.__dict__.get("_pf_version") == version:
        return
    manager._pf_version = version
    live = set()
    for service in table.services if table is not None else ():
        for instance in service.instances:
            for target in instance.ports.values():
                live.add((instance.ip, target))
    for key in [k for k in pools if k[1] not in live]:
        pool = pools.pop(key, None)
        if pool is not None:
            try:
                pool.close()
            except Exception:
                pass


def _routed_pool(manager: Any, context: Dict[str, Any], service: Any, port: int, instance: Any) -> Any:
    pools = _pools(manager)
    scheme = context["scheme"].lower()
    pool_key = manager.key_fn_by_scheme[scheme](context)
    target = (instance.ip, instance.ports[port])
    key = (pool_key, target)
    with manager.pools.lock:
        _prune(manager, pools)
        pool = pools.get(key)
        if pool is not None and pool.ConnectionCls._pf_instance is instance:
            return pool
        if pool is None:
            pool = manager._new_pool(scheme, context["host"], port, request_context=dict(context))
            pools[key] = pool
            _wrap_urlopen(pool, manager, context, service, port)
        pool.ConnectionCls = _connection_class(pool.__class__.ConnectionCls, instance, port)
        pool._pf_instance = instance
        return pool


def _wrap_urlopen(pool: Any, manager: Any, context: Dict[str, Any], service: Any, port: int) -> None:
    original = pool.urlopen  # bound; redirects inside urlopen call self.urlopen: this wrapper again

    def urlopen(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except _Redispatch as failed:
            instance = pool._pf_instance
            core.connect_failed(service, instance)
            other = core.choose(service, port, exclude=instance)
            if other is None:
                _no_redispatch.active = True  # fail the way urllib3 fails, retries and all
                try:
                    return original(*args, **kwargs)
                finally:
                    _no_redispatch.active = False
            del failed
            return _routed_pool(manager, context, service, port, other).urlopen(*args, **kwargs)

    pool.urlopen = urlopen


def _lane_unavailable_pool(manager: Any, context: Dict[str, Any], port: int, message: str) -> Any:
    pool = manager._new_pool(context["scheme"].lower(), context["host"], port, request_context=dict(context))
    pool.ConnectionCls = _failing_class(pool.__class__.ConnectionCls, message)
    return pool


def _connection_from_context(self: Any, request_context: Dict[str, Any], *args: Any, **kwargs: Any) -> Any:
    original = _original
    assert original is not None
    try:
        host = request_context.get("host")
        service = core.find(host) if host else None
        if service is None or isinstance(self, _proxy_class):
            return original(self, request_context, *args, **kwargs)
        scheme = str(request_context.get("scheme") or "http").lower()
        port = request_context.get("port") or (443 if scheme == "https" else 80)
        if port not in service.ports:
            return original(self, request_context, *args, **kwargs)
        try:
            instance = core.choose(service, port)
        except core.NoInstanceInLane as problem:
            return _lane_unavailable_pool(self, dict(request_context, port=port), port, str(problem))
        if instance is None:
            return original(self, request_context, *args, **kwargs)
        return _routed_pool(self, dict(request_context, port=port), service, port, instance)
    except Exception:
        log.exception_once("routing:urllib3", "could not route a urllib3 call; sent the ordinary way")
        return original(self, request_context, *args, **kwargs)


def patch(module: Any = None) -> None:
    """Patch ``urllib3.poolmanager.PoolManager.connection_from_context`` (idempotent)."""
    global _original, _patched_class, _proxy_class, _new_connection_error
    if module is None:
        import urllib3.poolmanager as module
    if _original is not None:
        return
    from urllib3.exceptions import NewConnectionError

    cls = module.PoolManager
    _original, _patched_class = cls.connection_from_context, cls
    _proxy_class, _new_connection_error = module.ProxyManager, NewConnectionError
    cls.connection_from_context = _connection_from_context


def unpatch() -> None:
    global _original, _patched_class
    if _patched_class is not None and _patched_class.connection_from_context is _connection_from_context:
        _patched_class.connection_from_context = _original
    _original = _patched_class = None
