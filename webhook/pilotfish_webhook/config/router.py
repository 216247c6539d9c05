"""The agents' API, ``/v1/...``: long-poll config and instances, register, deregister, status.

Long-poll contract (config and instances alike): the caller sends the version it
has (``version=``, empty at first) and how long it is willing to wait
(``timeout=`` seconds, at most 60). The answer is ``200`` with the new version
and body as soon as the version differs, or ``304`` with no body when
``timeout`` passes with nothing new. Versions are content hashes, so a change to
some other app's policy does not wake this app's agents with a no-op.

The long-poll handlers avoid per-request model validation and re-serialisation:
the effective config body is built once per (namespace, app, version) and sent
as bytes — 1,000 agents answered after one policy change is the budget case.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from types import FrameType
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Optional,
    Tuple,
    TypeVar,
)
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from pilotfish_webhook import kube
from pilotfish_webhook.asgi import ASGIApp, Receive, Scope, Send
from pilotfish_webhook.config.auth import AnonymousAuth, Authenticator, TokenReviewAuth, Unauthorized, bearer
from pilotfish_webhook.config.registry import (
    Caller,
    KubeRegistry,
    MemoryRegistry,
    RegistrationError,
    Registry,
)
from pilotfish_webhook.config.routing import RoutingView
from pilotfish_webhook.config.sources import DEFAULT_SETTLE_SECONDS, FileSource, KubeSource
from pilotfish_webhook.config.store import Changes, PolicyStore

if TYPE_CHECKING:
    from pilotfish_webhook.kube import ApiClient

log = logging.getLogger("pilotfish_webhook.config")

MAX_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 30.0
T = TypeVar("T")


class ConfigService:
    """Everything the router needs, wired for one of two modes (embedded file or in cluster)."""

    def __init__(
        self,
        store: PolicyStore,
        registry: Registry,
        auth: Authenticator,
        file_source: Optional[FileSource] = None,
        kube_source: Optional[KubeSource] = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.auth = auth
        self.file_source = file_source
        self.kube_source = kube_source
        self.routing = RoutingView(registry, store)
        self._tasks: List[asyncio.Task[None]] = []
        self.started_at = time.time()
        self.closing = False

    @classmethod
    def embedded(
        cls,
        policies: Optional[Any],
        system_namespace: str = "pilotfish-system",
        lease_seconds: float = 15.0,
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    ) -> ConfigService:
        from pathlib import Path

        store = PolicyStore(system_namespace)
        registry = MemoryRegistry(lease_seconds)
        source = (
            FileSource(Path(policies), store, on_services=registry.declare_services, settle=settle_seconds)
            if policies
            else None
        )
        if source is not None:
            source.load_initial()  # serve the file's policies from the first request on
        return cls(store, registry, AnonymousAuth(), file_source=source)

    @classmethod
    def in_cluster(cls, system_namespace: str, api_client: Optional[ApiClient] = None) -> ConfigService:
        if api_client is None:
            api_client = kube.make_api_client()
        store = PolicyStore(system_namespace)
        return cls(
            store,
            KubeRegistry(api_client),
            TokenReviewAuth(api_client),
            kube_source=KubeSource(store, api_client),
        )

    @property
    def mode(self) -> str:
        return "cluster" if self.kube_source is not None else "embedded"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.store.changes.bind(loop)
        self.registry.changes.bind(loop)
        self.routing.changes.bind(loop)
        self._release_polls_on_exit_signals()
        if self.file_source is not None:
            self._tasks.append(asyncio.create_task(self.file_source.run()))
        if isinstance(self.registry, MemoryRegistry):
            self._tasks.append(asyncio.create_task(self._expire_leases(self.registry)))
        if self.kube_source is not None:
            self.kube_source.start()
        if isinstance(self.registry, KubeRegistry):
            self.registry.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.kube_source is not None:
            self.kube_source.stop()
        if isinstance(self.registry, KubeRegistry):
            self.registry.stop()

    def begin_shutdown(self) -> None:
        """Answer every parked long-poll now (304), so a graceful shutdown is not held by them."""
        self.closing = True
        self.store.changes.notify()
        self.registry.changes.notify()

    def _release_polls_on_exit_signals(self) -> None:
        # uvicorn waits for open requests before it runs the lifespan shutdown, so
        # the shutdown hook comes too late for long-polls: chain its signal handlers.
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous = signal.getsignal(signum)
                if not callable(previous):
                    continue

                def handler(
                    number: int, frame: Optional[FrameType], previous: Callable[..., Any] = previous
                ) -> None:
                    self.begin_shutdown()
                    previous(number, frame)

                signal.signal(signum, handler)
            except ValueError:  # not the main thread (e.g. a test client): nothing to chain
                return

    async def _expire_leases(self, registry: MemoryRegistry) -> None:
        interval = max(0.05, min(1.0, registry.lease_seconds / 5))
        while True:
            await asyncio.sleep(interval)
            try:
                registry.expire()
            except Exception:
                log.exception("lease expiry failed")

    async def caller(self, request: Request) -> Caller:
        return await self.authenticate(bearer(request.headers.get("authorization")))

    async def authenticate(self, token: str) -> Caller:
        if isinstance(self.auth, TokenReviewAuth):
            return await asyncio.to_thread(self.auth.authenticate, token)
        return self.auth.authenticate(token)

    def status(self) -> Dict[str, Any]:
        source: Dict[str, Any] = {"mode": self.mode}
        if self.file_source is not None:
            source.update(
                path=str(self.file_source.path),
                reloads=self.file_source.reloads,
                watch=self.file_source.watch,
            )
        return {
            "source": source,
            **self.store.status(),
            "registry": self.registry.status(),
            "auth": self.auth.mode,
            "started_at": self.started_at,
        }


async def long_poll(
    changes: Changes,
    current: Callable[[], Tuple[str, T]],
    version: str,
    timeout: float,
    closing: Callable[[], bool] = lambda: False,
) -> Optional[Tuple[str, T]]:
    """Wait until ``current()``'s version differs from ``version``; None on timeout or shutdown."""
    deadline = time.monotonic() + timeout
    while True:
        generation = changes.generation  # taken before reading: no lost wake-up
        found = current()
        if found[0] != version:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0 or closing():
            return None
        if not await changes.wait(generation, remaining):
            return None


def _query(raw: bytes) -> Dict[str, str]:
    """The query string's parameters, last one wins, blank ones dropped (as ``parse_qs``).

    An agent's query has nothing to unquote: split it directly, ``parse_qs`` otherwise.
    """
    text = raw.decode("latin-1")
    if "%" in text or "+" in text:
        return {k: v[-1] for k, v in parse_qs(text).items()}
    query: Dict[str, str] = {}
    for part in text.split("&"):
        name, _, value = part.partition("=")
        if value:
            query[name] = value
    return query


def _timeout(raw: Optional[str]) -> float:
    try:
        value = float(raw) if raw is not None else DEFAULT_TIMEOUT
    except ValueError:
        raise _BadRequest("timeout: expected seconds (got %r)" % raw)
    return max(0.0, min(MAX_TIMEOUT, value))


class _BadRequest(Exception):
    pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _namespace(caller: Caller, requested: Optional[str]) -> str:
    if caller.authenticated:
        if requested and requested != caller.namespace:
            raise Unauthorized(
                "namespace %r: a token of namespace %r may only read its own" % (requested, caller.namespace),
                403,
            )
        return str(caller.namespace)
    return requested or "default"


def build_router(service: ConfigService) -> APIRouter:
    router = APIRouter()

    async def guarded(request: Request, handler: Callable[[Caller], Awaitable[Response]]) -> Response:
        try:
            caller = await service.caller(request)
            return await handler(caller)
        except Unauthorized as problem:
            return _error(problem.status, str(problem))
        except RegistrationError as problem:
            return _error(problem.status, str(problem))
        except _BadRequest as problem:
            return _error(400, str(problem))

    async def _json_body(request: Request) -> Dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise _BadRequest("body: expected a JSON object")
        if not isinstance(body, dict):
            raise _BadRequest("body: expected a JSON object")
        return body

    async def register(request: Request) -> Response:
        """Register (or renew, or change the state of) the calling instance."""

        async def handle(caller: Caller) -> Response:
            body = await _json_body(request)
            result = await asyncio.to_thread(service.registry.register, caller, body)
            return JSONResponse(result)

        return await guarded(request, handle)

    async def deregister(request: Request) -> Response:
        async def handle(caller: Caller) -> Response:
            body = await _json_body(request)
            result = await asyncio.to_thread(service.registry.deregister, caller, body)
            return JSONResponse(result)

        return await guarded(request, handle)

    async def status(request: Request) -> Response:
        """The server's view: policies in force, rejected policies and why, registry size."""

        async def handle(caller: Caller) -> Response:
            return JSONResponse(service.status())

        return await guarded(request, handle)

    # Plain Starlette routes (request in, response out): no FastAPI dependency solving.
    # The two long-polls are not here: see LongPolls.
    router.add_route("/v1/register", register, methods=["POST"])
    router.add_route("/v1/deregister", deregister, methods=["POST"])
    router.add_route("/v1/status", status, methods=["GET"])
    return router


class LongPolls:
    """Pure ASGI handling of the long-polls (config, instances, routing), in front of the router.

    Why not routes: after a policy change every parked poll wakes at once, and
    each then re-polls. With 1,000 agents the per-request cost of the framework
    (Request/Response objects, routing, exception layers) *is* the push latency
    on a busy node; here a wake-up is one dict lookup and one write of pre-serialised
    bytes (:func:`_write_whole`; two ASGI ``send`` calls under another server).
    :func:`attach` adds it as the FastAPI app's middleware; the server also puts it
    in front of every other layer (:func:`in_front`), where it answers first.
    """

    def __init__(self, app: ASGIApp, service: ConfigService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or path not in ("/v1/config", "/v1/instances", "/v1/routing"):
            await self.app(scope, receive, send)
            return
        if scope.get("method") != "GET":
            await _send(send, 405, json.dumps({"error": "use GET"}).encode())
            return
        query = _query(scope.get("query_string", b""))
        token = ""
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                token = bearer(value.decode("latin-1"))
        try:
            caller = await self.service.authenticate(token)
            if path == "/v1/config":
                status, body = await self._config(caller, query)
            elif path == "/v1/routing":
                status, body = await self._routing(caller, query)
            else:
                status, body = await self._instances(caller, query)
        except (Unauthorized, RegistrationError) as problem:
            status, body = problem.status, json.dumps({"error": str(problem)}).encode()
        except _BadRequest as problem:
            status, body = 400, json.dumps({"error": str(problem)}).encode()
        await _send(send, status, body)

    async def _config(self, caller: Caller, query: Dict[str, str]) -> Tuple[int, bytes]:
        service = self.service
        namespace = _namespace(caller, query.get("namespace"))
        app = query.get("app", "")

        def current() -> Tuple[str, Any]:
            effective = service.store.snapshot.effective(namespace, app)
            return effective.version, effective

        found = await long_poll(
            service.store.changes,
            current,
            query.get("version", ""),
            _timeout(query.get("timeout")),
            lambda: service.closing,
        )
        return (304, b"") if found is None else (200, found[1].body)

    async def _instances(self, caller: Caller, query: Dict[str, str]) -> Tuple[int, bytes]:
        service = self.service
        namespace = _namespace(caller, query.get("namespace"))
        name = query.get("service", "")
        if not name:
            raise _BadRequest("service: required")
        found = await long_poll(
            service.registry.changes,
            lambda: service.registry.instances(namespace, name),
            query.get("version", ""),
            _timeout(query.get("timeout")),
            lambda: service.closing,
        )
        if found is None:
            return 304, b""
        body = {"version": found[0], "service": name, "namespace": namespace, "instances": found[1]}
        return 200, json.dumps(body, separators=(",", ":")).encode()

    async def _routing(self, caller: Caller, query: Dict[str, str]) -> Tuple[int, bytes]:
        """The namespace's Services and instances for consumer-side routing, with this server's ``now``."""
        service = self.service
        namespace = _namespace(caller, query.get("namespace"))
        view = service.routing
        found = await long_poll(
            view.changes,
            lambda: view.current(namespace),
            query.get("version", ""),
            _timeout(query.get("timeout")),
            lambda: service.closing,
        )
        if found is None:
            return 304, b""
        body = dict(found[1], version=found[0], now=time.time())
        return 200, json.dumps(body, separators=(",", ":")).encode()


async def _send(send: Send, status: int, body: bytes) -> None:
    if _write_whole(send, status, body):
        return
    headers = [(b"content-type", b"application/json")] if body else []
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _uvicorn_httptools() -> Tuple[Any, Dict[int, bytes]]:
    """uvicorn's request cycle type and status lines (httptools, the webhook extra), if installed."""
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # another server: ASGI messages only
        return None, {}
    return httptools_impl.RequestResponseCycle, httptools_impl.STATUS_LINE


_UVICORN_CYCLE, _STATUS_LINE = _uvicorn_httptools()


def _write_whole(send: Any, status: int, body: bytes) -> bool:
    """Write the whole answer in one ``transport.write`` when ``send`` is uvicorn's (httptools).

    ASGI's two messages are two writes there: two TLS records and two ``send`` system
    calls per answer, after uvicorn's header checks in Python; a thousand answers per
    policy change. Same bytes as uvicorn's own path (its default headers, then ours). False
    (nothing written) in any state that path would treat specially: the caller then
    sends the ASGI messages.
    """
    cycle: Any = getattr(send, "__self__", None)
    if _UVICORN_CYCLE is None or type(cycle) is not _UVICORN_CYCLE:
        return False
    if (
        cycle.response_started
        or cycle.disconnected
        or cycle.access_log
        or not cycle.keep_alive
        or cycle.flow.write_paused
        or cycle.transport.is_closing()
        or cycle.scope["method"] != "GET"  # HEAD: uvicorn sends no body
        or status not in _STATUS_LINE
    ):
        return False
    content = [_STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        content.extend((name, b": ", value, b"\r\n"))
    if body:
        content.append(b"content-type: application/json\r\n")
    content.extend((b"content-length: %d\r\n\r\n" % len(body), body))
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    cycle.on_response()
    return True


def in_front(app: ASGIApp, service: ConfigService) -> ASGIApp:
    """``app`` (the whole ASGI stack) with the long-polls answered before any of its layers.

    A long-poll has no body, so the body gate, the admission fast path and the framework's
    middleware have nothing to do for it but cost: about a fifth of the server's Python time
    per policy change (profiled under hack/bench_config_push.py), a thousand answers each.
    A request that announces a body anyway goes through the stack, so the body gate bounds
    it (408 when it stops arriving, 413 when too large) before the app's own
    :class:`LongPolls` (:func:`attach`) answers it.
    """
    polls = LongPolls(app, service)

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _announces_body(scope):
            await app(scope, receive, send)
        else:
            await polls(scope, receive, send)

    return front


def _announces_body(scope: Scope) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def attach(app: FastAPI, service: ConfigService) -> None:
    """Mount the config API on ``app`` and run the service for the app's lifetime.

    Wraps whatever lifespan the app already has, so the admission router and this
    one stay independent.
    """
    app.include_router(build_router(service))
    app.add_middleware(LongPolls, service=service)
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(the_app: FastAPI) -> AsyncIterator[Any]:
        async with previous(the_app) as state:
            await service.start()
            try:
                yield state
            finally:
                await service.stop()

    app.router.lifespan_context = lifespan
    app.state.config_service = service
