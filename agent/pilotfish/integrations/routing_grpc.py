"""Route gRPC calls (``grpc`` and ``grpc.aio``) to a Service's instances, per call.

A gRPC channel opens one HTTP/2 connection and keeps it: on Kubernetes every
call of a long-lived channel goes to the one pod kube-proxy chose when it
connected, and neither lanes nor warm-up can work. Python has no resolver or
load-balancing API to plug into, so the channel constructors
(``grpc.insecure_channel`` / ``grpc.secure_channel`` and their ``grpc.aio``
twins) return a :class:`RoutedChannel` when the target is ``host:port`` (a
``dns:`` target too). It holds the channel the app asked for and, lazily, one
sub-channel per instance (``ip:port``) with ``grpc.default_authority`` set to
the target, so ``:authority`` stays the Service's name, and, for TLS,
``grpc.ssl_target_name_override`` = the Service's host, so the certificate is
checked against the Service's name.

Each call (``stub.Method(...)``, ``.with_call``, ``.future``, streams) picks an
instance when the host is a routed Service at *call* time (the table usually
arrives after the app built its channels), else uses the app's own channel
exactly as before. A sync unary call that fails with ``UNAVAILABLE`` before
connecting ("failed to connect") ejects the instance and goes once to another;
strict lane mode without an instance of the lane fails the call with
``UNAVAILABLE`` and a message naming the lane and the Service.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any, Callable, Dict, Optional, Tuple

from .. import log
from ..routing import core

_originals: Dict[str, Callable[..., Any]] = {}
_grpc: Any = None
_CONNECT_FAILURE = ("failed to connect", "connection refused", "connect failed")


def _split(target: str) -> Optional[Tuple[str, int]]:
    if target.startswith("dns:///"):
        target = target[len("dns:///") :]
    elif target.startswith("dns:"):
        target = target[len("dns:") :]
    if "/" in target or target.startswith(("unix:", "ipv4:", "ipv6:", "[")):
        return None
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.lower(), int(port)


def _unavailable(message: str) -> Exception:
    grpc = _grpc

    class LaneUnavailable(grpc.RpcError, grpc.Call):  # type: ignore[misc, name-defined]
        def code(self) -> Any:
            return grpc.StatusCode.UNAVAILABLE

        def details(self) -> str:
            return message

        def initial_metadata(self) -> Any:
            return ()

        def trailing_metadata(self) -> Any:
            return ()

        def is_active(self) -> bool:
            return False

        def time_remaining(self) -> Any:
            return None

        def cancel(self) -> bool:
            return False

        def add_callback(self, callback: Any) -> bool:
            return False

        def __str__(self) -> str:
            return (
                "<RpcError of RPC that terminated with:\n\tstatus = StatusCode.UNAVAILABLE\n\tdetails = %r\n>"
                % (message)
            )

    return LaneUnavailable(message)


class RoutedChannel:
    """The app's channel, plus per-instance sub-channels used whenever its host is a routed Service."""

    def __init__(
        self, base: Any, target: str, host: str, port: int, make: Callable[[str, Any], Any], options: Any
    ):
        self._base = base
        self._target = target
        self._host = host
        self._port = port
        self._make = make  # (address, options) -> channel, with the app's credentials
        self._options = list(options or ())
        self._subs: Dict[Tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        self.aio = False

    def _sub(self, instance: Any) -> Any:
        address = (instance.ip, instance.ports[self._port])
        channel = self._subs.get(address)
        if channel is None:
            with self._lock:
                channel = self._subs.get(address)
                if channel is None:
                    names = {name for name, _ in self._options}
                    options = list(self._options)
                    if "grpc.default_authority" not in names:
                        options.append(("grpc.default_authority", self._target.split("///")[-1]))
                    options.append(("grpc.ssl_target_name_override", self._host))
                    host = "[%s]" % address[0] if ":" in address[0] else address[0]
                    channel = self._make("%s:%d" % (host, address[1]), options)
                    self._subs[address] = channel
        return channel

    def route(self) -> Tuple[Any, Any, Any]:
        """(channel, service, instance) for one call; (the app's channel, None, None) when not routed."""
        try:
            service = core.find(self._host)
            if service is not None and self._port in service.ports:
                try:
                    instance = core.choose(service, self._port)
                except core.NoInstanceInLane as problem:
                    raise _unavailable(str(problem))
                if instance is not None:
                    return self._sub(instance), service, instance
        except Exception as problem:
            if _grpc is not None and isinstance(problem, _grpc.RpcError):
                raise
            log.exception_once("routing:grpc", "could not route a gRPC call; sent the ordinary way")
        return self._base, None, None

    def reroute(self, service: Any, failed: Any) -> Optional[Any]:
        core.connect_failed(service, failed)
        other = core.choose(service, self._port, exclude=failed)
        return self._sub(other) if other is not None else None

    # -- grpc.Channel

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _MultiCallable(self, "stream_stream", method, args, kwargs)

    def subscribe(self, *args: Any, **kwargs: Any) -> Any:
        return self._base.subscribe(*args, **kwargs)

    def unsubscribe(self, *args: Any, **kwargs: Any) -> Any:
        return self._base.unsubscribe(*args, **kwargs)

    def close(self, *args: Any) -> Any:
        for channel in list(self._subs.values()):
            try:
                result = channel.close(*args)
                if hasattr(result, "__await__"):
                    result.close()  # aio: closing the coroutine unawaited is fine at exit
            except Exception:
                pass
        return self._base.close(*args)

    def __enter__(self) -> Any:
        self._base.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._base.__exit__(*exc)

    async def __aenter__(self) -> Any:
        await self._base.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._base.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:  # channel_ready, get_state, wait_for_state_change ...
        return getattr(self._base, name)


class _MultiCallable:
    """``stub.Method``: picks the channel at each call, then behaves as that channel's own."""

    __slots__ = ("_channel", "_kind", "_method", "_args", "_kwargs", "_cache", "_host", "_plain")

    def __init__(self, channel: RoutedChannel, kind: str, method: str, args: Any, kwargs: Any) -> None:
        self._channel, self._kind, self._method = channel, kind, method
        self._args, self._kwargs = args, kwargs
        self._cache: Dict[int, Any] = {}
        self._host = channel._host
        self._plain = self._on(channel._base)  # the app's own multi-callable, for hosts not routed

    def _on(self, channel: Any) -> Any:
        found = self._cache.get(id(channel))
        if found is None:
            found = getattr(channel, self._kind)(self._method, *self._args, **self._kwargs)
            self._cache[id(channel)] = found
        return found

    def _invoke(self, attribute: str, args: Any, kwargs: Any) -> Any:
        channel, service, instance = self._channel.route()
        target = getattr(self._on(channel), attribute)
        if service is None or self._kind != "unary_unary" or attribute == "future" or _grpc is None:
            return target(*args, **kwargs)

        def again() -> Optional[Any]:
            other = self._channel.reroute(service, instance)
            return None if other is None else getattr(self._on(other), attribute)(*args, **kwargs)

        if self._channel.aio:
            return _AioRetry(target(*args, **kwargs), again)
        try:
            return target(*args, **kwargs)
        except _grpc.RpcError as problem:
            if not _connect_failure(problem):
                raise
            result = again()
            if result is None:
                raise
            return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if core.find(self._host) is None:  # not a routed Service (now): the app's channel, as is
            return self._plain(*args, **kwargs)
        return self._invoke("__call__", args, kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        if core.find(self._host) is None:
            return self._plain.with_call(*args, **kwargs)
        return self._invoke("with_call", args, kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        if core.find(self._host) is None:
            return self._plain.future(*args, **kwargs)
        return self._invoke("future", args, kwargs)


def _connect_failure(problem: Any) -> bool:
    """UNAVAILABLE because no connection could be made: nothing reached the server."""
    try:
        details = (problem.details() or "").lower()
        return bool(
            problem.code() == _grpc.StatusCode.UNAVAILABLE and any(m in details for m in _CONNECT_FAILURE)
        )
    except Exception:
        return False


class _AioRetry:
    """A ``grpc.aio`` unary call that, awaited, goes once to another instance after a refused connect."""

    def __init__(self, call: Any, again: Callable[[], Optional[Any]]) -> None:
        self._call = call
        self._again = again

    def __await__(self) -> Any:
        return self._run().__await__()

    async def _run(self) -> Any:
        try:
            return await self._call
        except _grpc.RpcError as problem:
            if not _connect_failure(problem):
                raise
            other = self._again()
            if other is None:
                raise
            self._call = other
            return await other

    def __getattr__(self, name: str) -> Any:  # initial_metadata(), code(), cancel() ... of the call in flight
        return getattr(self._call, name)


def _wrap(name: str, secure: bool, aio: bool) -> Callable[..., Any]:
    def channel(target: str, *args: Any, **kwargs: Any) -> Any:
        original = _originals[name]
        base = original(target, *args, **kwargs)
        try:
            split = _split(target) if isinstance(target, str) else None
            if split is None:
                return base
            if secure:
                credentials = args[0] if args else kwargs.get("credentials")
                rest = args[1:]
            else:
                credentials, rest = None, args
            options = rest[0] if rest else kwargs.get("options")
            compression = rest[1] if len(rest) > 1 else kwargs.get("compression")
            extra = {k: v for k, v in kwargs.items() if k not in ("credentials", "options", "compression")}

            def make(address: str, sub_options: Any) -> Any:
                if secure:
                    return original(address, credentials, sub_options, compression, **extra)
                return original(address, sub_options, compression, **extra)

            routed = RoutedChannel(base, target, split[0], split[1], make, options)
            routed.aio = aio
            return routed
        except Exception:
            log.exception_once("routing:grpc-channel", "gRPC channel not routed")
            return base

    channel.__name__ = channel.__qualname__ = name.split(".")[-1]
    channel.__doc__ = getattr(_originals.get(name), "__doc__", None)
    return channel


def patch(module: Any = None) -> None:
    """Wrap ``grpc.insecure_channel`` / ``secure_channel`` (idempotent); ``grpc.aio`` too once imported."""
    global _grpc
    if "grpc.insecure_channel" in _originals:
        return
    import grpc

    _grpc = grpc
    for name, secure in (("insecure_channel", False), ("secure_channel", True)):
        _originals["grpc." + name] = getattr(grpc, name)
        setattr(grpc, name, _wrap("grpc." + name, secure, aio=False))


def patch_aio(module: Any = None) -> None:
    global _grpc
    if "grpc.aio.insecure_channel" in _originals:
        return
    if module is None:
        module = importlib.import_module("grpc.aio")
    # grpc's own __init__ imports grpc.aio: the hook may run while ``grpc`` is half
    # initialised, so use the module handed over and the (later complete) grpc module object.
    _grpc = sys.modules["grpc"]
    for name, secure in (("insecure_channel", False), ("secure_channel", True)):
        _originals["grpc.aio." + name] = getattr(module, name)
        setattr(module, name, _wrap("grpc.aio." + name, secure, aio=True))
