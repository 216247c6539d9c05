#!/usr/bin/env python3
"""What consumer-side routing adds per outbound call, per client library, measured side by side.

For each client three variants run interleaved in one process, round after round:

- ``alone``:   the library's own code path, no routing hook (what runs without the agent);
- ``unknown``: hooked, a host the registry does not know (every call to anything else pays this);
- ``routed``:  hooked, a host that is a routed Service (lane + weighted pick + the per-instance
  pool/sub-channel/request rewrite).

What is timed is the part a hook adds to each request, with the library's network I/O
replaced by a stub that returns at once (a loopback round trip is tens of microseconds of
noise on a shared machine and would hide a microsecond):

- http.client (also urllib): ``putrequest`` + two headers + ``endheaders`` on a connection
  whose socket discards the bytes; routed = a connection already open to an instance
  (the per-request work: lane re-check, consumer marker). The pick itself happens at
  ``connect``, once per connection, and is timed under "pick".
- urllib3 (also requests): ``PoolManager.connection_from_host`` (the per-request pool
  choice; routed = the pick and the per-instance pool lookup).
- httpx sync: ``ConnectionPool.handle_request`` with httpcore's own body stubbed.
- aiohttp: ``BaseConnector.connect`` with aiohttp's own body stubbed, plus the
  ``connection_key`` read aiohttp makes in it.
- grpc: a call through a channel's multi-callable, the real one stubbed.
- pick: ``core.choose`` alone (lane + weighted random among three instances).

Usage: ``.venv/bin/python -m hack.bench_routing [--rounds 9] [--number 20000]``
Budget: <= 5 us per routed call over ``alone``; <= 1 us for an unknown host.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import time
import timeit
from typing import Any, Callable, Dict, List, Tuple

from pilotfish.integrations import (
    routing_aiohttp,
    routing_grpc,
    routing_http_client,
    routing_httpx,
    routing_urllib3,
)
from pilotfish.routing import core

PORT = 8080
TABLE = {
    "version": "bench",
    "namespace": "default",
    "now": time.time(),
    "services": [
        {
            "name": "stock",
            "cluster_ips": ["10.96.7.7"],
            "ports": [{"name": "http", "port": PORT, "target_port": PORT}],
            "instances": [
                {"pod": "stock-%d" % i, "ip": "127.0.0.%d" % (i + 2), "ports": {str(PORT): PORT}, "tag": tag}
                for i, tag in enumerate(["", "", "gray"])
            ],
        }
    ],
}

Case = Dict[str, Callable[[], None]]


class _NullSocket:
    def sendall(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def case_http_client() -> Case:
    def make(host: str) -> Callable[[], None]:
        conn = http.client.HTTPConnection(host, PORT)
        conn.sock = _NullSocket()
        if host == "stock":
            service = core.find("stock")
            assert service is not None
            conn._pf_instance, conn._pf_service = service.baseline[0], service  # type: ignore[attr-defined]

        def call() -> None:
            conn._HTTPConnection__state = "Idle"  # type: ignore[attr-defined]
            conn.putrequest("GET", "/api/items?id=1", skip_accept_encoding=True)
            conn.putheader("Accept", "application/json")
            conn.putheader("User-Agent", "bench")
            conn.endheaders()

        return call

    alone, unknown, routed = make("127.0.0.1"), make("127.0.0.1"), make("stock")
    return {
        "alone": _unhooked(alone, routing_http_client.unpatch, routing_http_client.patch),
        "unknown": unknown,
        "routed": routed,
    }


def _unhooked(
    call: Callable[[], None], off: Callable[[], None], on: Callable[[], None]
) -> Callable[[], None]:
    """Run ``call`` with the hook removed (timed as one block by the caller)."""

    def run() -> None:
        call()

    run.off, run.on = off, on  # type: ignore[attr-defined]
    return run


def case_urllib3() -> Case:
    import urllib3

    manager = urllib3.PoolManager()

    def make(host: str) -> Callable[[], None]:
        def call() -> None:
            manager.connection_from_host(host, PORT, "http")

        return call

    return {
        "alone": _unhooked(make("127.0.0.2"), routing_urllib3.unpatch, routing_urllib3.patch),
        "unknown": make("127.0.0.2"),
        "routed": make("stock"),
    }


def case_httpx() -> Case:
    import httpcore

    pool = httpcore.ConnectionPool()
    response = httpcore.Response(200, headers=[(b"content-type", b"text/plain")])

    def stub(self: Any, request: Any) -> Any:
        return response

    cls, real = routing_httpx._originals["sync"]
    routing_httpx._originals["sync"] = (cls, stub)
    headers = [(b"Host", b"stock:8080"), (b"Accept", b"*/*")]
    unknown_request = httpcore.Request("GET", "http://127.0.0.1:8080/api/items", headers=headers)
    routed_request = httpcore.Request("GET", "http://stock:8080/api/items", headers=headers)
    return {
        "alone": lambda: stub(pool, unknown_request),
        "unknown": lambda: routing_httpx._handle_request(pool, unknown_request),
        "routed": lambda: routing_httpx._handle_request(pool, routed_request),
    }


def case_aiohttp() -> Case:
    import aiohttp
    from aiohttp.client_reqrep import ClientRequest
    from yarl import URL

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def make() -> Any:
        return (
            aiohttp.TCPConnector(),
            ClientRequest("GET", URL("http://127.0.0.1:8080/a"), loop=loop),
            ClientRequest("GET", URL("http://stock:8080/a"), loop=loop),
        )

    connector, unknown_req, routed_req = loop.run_until_complete(make())
    connection = type("Connection", (), {})()

    async def stub(self: Any, req: Any, traces: Any, timeout: Any) -> Any:
        return connection if req.connection_key else None  # aiohttp reads it to find a pooled connection

    routing_aiohttp._originals["connect"] = stub

    def drive(coroutine: Any) -> None:
        try:
            coroutine.send(None)
        except StopIteration:
            pass

    return {
        "alone": lambda: drive(stub(connector, unknown_req, [], None)),
        "unknown": lambda: drive(routing_aiohttp._connect(connector, unknown_req, [], None)),
        "routed": lambda: drive(routing_aiohttp._connect(connector, routed_req, [], None)),
    }


def case_grpc() -> Case:
    class Stub:
        def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
            return lambda request, timeout=None, metadata=None: request

    base = Stub()
    routed = routing_grpc.RoutedChannel(
        base, "stock:8080", "stock", PORT, lambda address, options: Stub(), ()
    )
    unknown = routing_grpc.RoutedChannel(
        base, "other:8080", "other", PORT, lambda address, options: Stub(), ()
    )
    direct = base.unary_unary("/s.S/M")
    via_unknown, via_routed = unknown.unary_unary("/s.S/M"), routed.unary_unary("/s.S/M")
    return {
        "alone": lambda: direct(b"x", timeout=5),
        "unknown": lambda: via_unknown(b"x", timeout=5),
        "routed": lambda: via_routed(b"x", timeout=5),
    }


def case_pick() -> Case:
    service = core.find("stock")
    assert service is not None

    def pick() -> None:
        core.choose(service, PORT)

    return {"routed": pick}


CASES: List[Tuple[str, Callable[[], Case]]] = [
    ("http.client", case_http_client),
    ("urllib3", case_urllib3),
    ("httpx", case_httpx),
    ("aiohttp", case_aiohttp),
    ("grpc", case_grpc),
    ("pick", case_pick),
]


def time_one(call: Callable[[], None], number: int) -> float:
    off, on = getattr(call, "off", None), getattr(call, "on", None)
    if off is not None:
        off()
    try:
        return timeit.timeit(call, number=number) / number * 1e6
    finally:
        if on is not None:
            on()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m hack.bench_routing", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    routing_http_client.patch()
    routing_urllib3.patch()
    routing_httpx.patch()
    routing_aiohttp.patch()
    core.started = True  # no long-poll: the table below is the registry's answer
    core.install_table(TABLE)
    print("routing: added cost per call (us), median of %d rounds x %d calls" % (args.rounds, args.number))
    print(
        "%-12s %9s %9s %9s %12s %12s" % ("client", "alone", "unknown", "routed", "unknown-add", "routed-add")
    )
    for name, build in CASES:
        variants = build()
        times: Dict[str, List[float]] = {key: [] for key in variants}
        for _ in range(args.rounds):
            for key, call in variants.items():
                times[key].append(time_one(call, args.number))
        med = {key: statistics.median(values) for key, values in times.items()}
        print(
            "%-12s %9s %9s %9.2f %12s %12s"
            % (
                name,
                "%.2f" % med["alone"] if "alone" in med else "-",
                "%.2f" % med["unknown"] if "unknown" in med else "-",
                med["routed"],
                _added(times, "unknown"),
                _added(times, "routed"),
            )
        )


def _added(times: Dict[str, List[float]], key: str) -> str:
    """Median over rounds of (variant - alone) in the same round: drift between rounds cancels."""
    alone = times.get("alone")
    if alone is None or key not in times:
        return "-"
    return "%+.2f" % statistics.median(a - b for a, b in zip(times[key], alone))


if __name__ == "__main__":
    main()
