#!/usr/bin/env python3
"""Fallback HTTP load generator for machines without ``wrk``: asyncio, raw sockets, keep-alive.

Closed loop like wrk: ``--connections`` connections each send one ``GET``, read the
whole response (``Content-Length`` framed), and send the next; a response with
``Connection: close`` (gunicorn's sync worker) makes that connection reconnect.
Requests completed during the ``--warmup`` seconds are not counted. Prints one JSON
object: requests, seconds, rps, non_2xx, errors.

It is slower than wrk (pure Python on one core), so on a fast server it may be the
bottleneck; the report says which generator ran. Standard library only.

Usage: ``python -m hack.bench.loadgen --url http://127.0.0.1:8000/ --duration 5``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    requests: int
    seconds: float
    rps: float
    non_2xx: int
    errors: int


class _Counters:
    def __init__(self) -> None:
        self.ok = 0
        self.non_2xx = 0
        self.errors = 0
        self.counting = False


async def _read_response(reader: asyncio.StreamReader) -> Tuple[int, bool]:
    """Read one response; return (status, server_closes)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: Optional[int] = None
    closes = lines[0].startswith("HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        if key == "content-length":
            length = int(value.strip())
        elif key == "connection":
            closes = value.strip().lower() == "close"
        elif key == "transfer-encoding":
            raise ValueError("chunked responses are not supported by this generator")
    if length is None:
        raise ValueError("response without Content-Length")
    if length:
        await reader.readexactly(length)
    return status, closes


async def _connection(host: str, port: int, request: bytes, stop_at: float, counters: _Counters) -> None:
    writer: Optional[asyncio.StreamWriter] = None
    reader: Optional[asyncio.StreamReader] = None
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, closes = await _read_response(reader)
            if counters.counting:
                if 200 <= status < 300:
                    counters.ok += 1
                else:
                    counters.non_2xx += 1
            if closes:
                writer.close()
                writer = reader = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            if counters.counting:
                counters.errors += 1
            if writer is not None:
                writer.close()
            writer = reader = None
            await asyncio.sleep(0.001)
    if writer is not None:
        writer.close()


async def run(url: str, duration: float, connections: int, warmup: float) -> LoadResult:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    request = (
        "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: pilotfish-bench\r\n\r\n" % (path, host, port)
    ).encode()
    counters = _Counters()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    stop_at = begin + warmup + duration
    tasks: List[asyncio.Task[None]] = [
        asyncio.ensure_future(_connection(host, port, request, stop_at, counters)) for _ in range(connections)
    ]
    await asyncio.sleep(warmup)
    counters.counting = True
    started = time.perf_counter()
    await asyncio.sleep(max(0.0, stop_at - loop.time()))
    counters.counting = False
    seconds = time.perf_counter() - started
    await asyncio.gather(*tasks)
    return LoadResult(
        requests=counters.ok,
        seconds=seconds,
        rps=counters.ok / seconds if seconds > 0 else 0.0,
        non_2xx=counters.non_2xx,
        errors=counters.errors,
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.bench.loadgen", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.url, args.duration, args.connections, args.warmup))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
