#!/usr/bin/env python3
"""What traffic tags cost per outbound call and per inbound request, measured side by side.

For each case three variants run interleaved in one process, round after round:

- ``alone``:   the library as the app has it, no patch (what runs without the agent);
- ``no tag``:  patched, no tag in context (every baseline request pays this);
- ``tagged``:  patched, a tag in context (gray requests pay this).

Each round times ``--number`` calls of each variant with ``timeit``; the
report gives, per variant, the median time per call over ``--rounds`` rounds,
the spread (min..max of the rounds), and the median of the per-round
differences to ``alone``: the added cost. Budget (docs/benchmarks.md): <= 5 us per
outbound call with no tag; inbound extraction < 1 us with no tag headers.

What is timed, so that network noise (tens of us per loopback call) cannot
hide a sub-microsecond effect:
- http.client (also urllib, urllib3, requests): putrequest + putheader +
  endheaders on a connection whose socket discards the bytes;
- httpx sync / async: ``_transport_for_url`` + the transport call, around a stub transport;
- aiohttp: ``session._request(...)`` up to the coroutine it returns (the
  patched part), closed unawaited;
- grpc: the multi-callable wrapper around a no-op call with metadata;
- ThreadPoolExecutor.submit + result;
- inbound: ``tag_from_environ`` / ``tag_from_asgi_headers`` on a typical
  untagged request, with and without lane rules.

Usage: ``.venv/bin/python -m hack.bench_outbound [--rounds 15] [--number 20000]``
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import timeit
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

from pilotfish import settings
from pilotfish.integrations import aiohttp_client, grpc_client, http_client, httpx_client
from pilotfish.tags import inbound, outbound, propagation
from pilotfish.tags.context import CURRENT_TAG

Variant = Tuple[str, Callable[[], None], Callable[[], None], Optional[str]]  # name, setup, teardown, tag


_cleanups: List[Callable[[], object]] = []


class _NullSocket:
    def sendall(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def case_http_client() -> Callable[[], None]:
    conn = http.client.HTTPConnection("127.0.0.1", 9)
    conn.sock = _NullSocket()

    def call() -> None:
        conn._HTTPConnection__state = "Idle"  # type: ignore[attr-defined]
        conn.putrequest("GET", "/api/items?id=1", skip_accept_encoding=True)
        conn.putheader("Accept", "application/json")
        conn.putheader("User-Agent", "bench")
        conn.endheaders()

    return call


class _HttpxCase:
    """What the httpx patch adds per request: ``_transport_for_url`` plus the transport call.

    The client's transport is a stub that returns at once: httpx's own request
    handling (~70 us here, and very noisy on a shared machine) would drown the
    sub-microsecond difference. Timed: choosing the transport (patched: one
    ContextVar read; tagged: the wrapper) and handing it the request (tagged:
    the tagged copy of the request), as ``_send_single_request`` does.
    """

    def __init__(self, asynchronous: bool) -> None:
        import httpx

        class Stub(httpx.BaseTransport, httpx.AsyncBaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                return response

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                return response

        response = httpx.Response(200)
        self.asynchronous = asynchronous
        self.client = (httpx.AsyncClient if asynchronous else httpx.Client)(transport=Stub())
        self.request = self.client.build_request("GET", "http://svc/api/items")
        self.url = self.request.url

    def patch(self) -> None:
        httpx_client.patch()

    def unpatch(self) -> None:
        httpx_client.unpatch()

    def call(self) -> None:
        transport: Any = self.client._transport_for_url(self.url)
        if not self.asynchronous:
            transport.handle_request(self.request)
            return
        try:
            transport.handle_async_request(self.request).send(None)
        except StopIteration:
            pass


def case_aiohttp() -> Callable[[], None]:
    import aiohttp

    loop = asyncio.new_event_loop()

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    session = loop.run_until_complete(make())
    headers = {"Accept": "application/json"}
    _cleanups.append(lambda: loop.run_until_complete(session.close()))

    def call() -> None:
        session._request("GET", "http://svc/api/items", headers=headers).close()

    return call


class _GrpcCase:
    """The patched multi-callable method around a no-op stand-in for grpc's own."""

    def __init__(self) -> None:
        self.fn: Callable[..., None] = self._rpc
        self.metadata = (("k", "v"),)

    @staticmethod
    def _rpc(self: object, request: bytes, timeout: Optional[float] = None, metadata: object = None) -> None:
        return None

    def patch(self) -> None:
        self.fn = grpc_client._wrap(self._rpc)

    def unpatch(self) -> None:
        self.fn = self._rpc

    def call(self) -> None:
        self.fn(None, b"x", timeout=1.0, metadata=self.metadata)


def case_submit() -> Callable[[], None]:
    pool = ThreadPoolExecutor(1)
    pool.submit(int).result()
    return lambda: pool.submit(int).result()  # type: ignore[return-value]


ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/api/items",
    "QUERY_STRING": "id=1",
    "SERVER_NAME": "svc",
    "SERVER_PORT": "8000",
    "HTTP_HOST": "svc:8000",
    "HTTP_USER_AGENT": "python-requests/2.32",
    "HTTP_ACCEPT": "*/*",
    "HTTP_ACCEPT_ENCODING": "gzip, deflate",
    "HTTP_CONNECTION": "keep-alive",
    "HTTP_TRACEPARENT": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}
ASGI_HEADERS = [
    (k[5:].lower().replace("_", "-").encode(), v.encode())
    for k, v in ENVIRON.items()
    if k.startswith("HTTP_")
]
# One lane in the config service's shape (merge.flat_lanes): the bench's headers do not match it.
LANES = [
    {
        "name": "beta",
        "tag": "gray",
        "match": [{"source": "header", "name": "x-user-group", "op": "exact", "values": ["beta"]}],
        "percentage": 100.0,
        "hash": None,
    }
]


def case_inbound_wsgi() -> Callable[[], None]:
    return lambda: inbound.tag_from_environ(ENVIRON)  # type: ignore[return-value]


def case_inbound_asgi() -> Callable[[], None]:
    return lambda: inbound.tag_from_asgi_headers(ASGI_HEADERS)  # type: ignore[return-value]


def _use_lanes(lanes: object) -> Callable[[], None]:
    def setup() -> None:
        settings.apply_central({"lanes": lanes} if lanes else {}, "bench")

    return setup


def run(rounds: int, number: int) -> List[str]:
    def client_patch(module: object) -> Tuple[Callable[[], None], Callable[[], None]]:
        return module.patch, module.unpatch  # type: ignore[attr-defined]

    grpc_case = _GrpcCase()
    cases: List[Tuple[str, Callable[[], None], int, List[Variant]]] = []

    def outbound_case(
        name: str, call: Callable[[], None], per: int, patch: Callable[[], None], unpatch: Callable[[], None]
    ) -> None:
        nothing = lambda: None  # noqa: E731
        cases.append(
            (
                name,
                call,
                per,
                [
                    ("alone", nothing, nothing, "gray"),
                    ("no tag", patch, unpatch, None),
                    ("tagged", patch, unpatch, "gray"),
                ],
            )
        )

    outbound_case(
        "http.client request (urllib, urllib3, requests)", case_http_client(), 1, *client_patch(http_client)
    )
    for asynchronous in (False, True):
        hx = _HttpxCase(asynchronous)
        outbound_case(
            "httpx %s transport call (stub transport)" % ("AsyncClient" if asynchronous else "Client"),
            hx.call,
            1,
            hx.patch,
            hx.unpatch,
        )
    outbound_case(
        "aiohttp ClientSession._request (to the coroutine)", case_aiohttp(), 1, *client_patch(aiohttp_client)
    )
    outbound_case(
        "grpc multi-callable call (no-op channel)", grpc_case.call, 1, grpc_case.patch, grpc_case.unpatch
    )
    outbound_case(
        "ThreadPoolExecutor.submit + result",
        case_submit(),
        1,
        propagation.patch_futures,
        propagation.unpatch_futures,
    )
    nothing = lambda: None  # noqa: E731
    for name, call in (
        ("inbound tag_from_environ (WSGI)", case_inbound_wsgi()),
        ("inbound tag_from_asgi_headers (ASGI)", case_inbound_asgi()),
    ):
        cases.append(
            (
                name + ", untagged request",
                call,
                1,
                [
                    ("no lanes", _use_lanes(None), nothing, None),
                    ("1 header lane", _use_lanes(LANES), _use_lanes(None), None),
                ],
            )
        )

    lines = [
        "Python %s, %d rounds x %d calls per variant, interleaved."
        % (sys.version.split()[0], rounds, number),
        "",
        "| case | variant | median per call | spread (min..max) | added vs first variant (median) |",
        "|---|---|---|---|---|",
    ]
    for name, call, per, variants in cases:
        times: Dict[str, List[float]] = {v[0]: [] for v in variants}
        n = max(1, number // per)
        for _ in range(rounds):
            for vname, setup, teardown, tag in variants:
                setup()
                token = CURRENT_TAG.set(tag)
                try:
                    call()  # warm
                    times[vname].append(timeit.timeit(call, number=n) / (n * per) * 1e6)
                finally:
                    CURRENT_TAG.reset(token)
                    teardown()
        base = times[variants[0][0]]
        for vname, *_ in variants:
            ts = times[vname]
            delta = statistics.median(t - b for t, b in zip(ts, base))
            lines.append(
                "| %s | %s | %.3f us | %.3f..%.3f | %s |"
                % (
                    name,
                    vname,
                    statistics.median(ts),
                    min(ts),
                    max(ts),
                    "-" if vname == variants[0][0] else "%+.3f us" % delta,
                )
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_outbound", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    settings.load({})
    inbound.refresh()
    outbound.refresh()
    try:
        print("\n".join(run(args.rounds, args.number)))
    finally:
        for cleanup in _cleanups:
            cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
