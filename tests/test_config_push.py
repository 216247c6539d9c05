"""The push path of the config service: what one policy change costs, kept honest.

- over a real server, a long-poll answer written in one piece (``config/router.py:
  _write_whole``) is the HTTP uvicorn itself would send: status line, uvicorn's ``date``
  and ``server`` headers, content type and length (no body after a ``HEAD``); the keep-alive
  connection then carries the next poll, and a parked poll still answers ``304`` at its
  timeout;
- ``Changes`` (in process): a change wakes every parked waiter at once, a change announced
  from another thread between the waiter's read and its wait is not lost, and waiters that
  time out or are cancelled leave nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
from pilotfish_webhook.config import router
from pilotfish_webhook.config.store import Changes
from support.config_server import ConfigServer, example_config_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ConfigServer]:
    with example_config_server(tmp_path) as running:
        yield running


class Connection:
    """One keep-alive TLS connection speaking HTTP/1.1 by hand, as the benchmark's agents do."""

    def __init__(self, server: ConfigServer) -> None:
        host, port = server.url.split("//")[1].split(":")
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = server.context().wrap_socket(raw, server_hostname=host)
        self.buffer = b""

    def get(self, query: str, method: str = "GET") -> Tuple[bytes, Dict[str, str], bytes]:
        request = "%s /v1/config?%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (method, query)
        self.sock.sendall(request.encode())
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers: Dict[str, str] = {}
        for line in lines:
            name, _, value = line.decode("latin-1").partition(":")
            assert name.lower() not in headers, "header %s sent twice" % name
            headers[name.lower()] = value.strip()
        length = 0 if method == "HEAD" else int(headers["content-length"])
        while len(self.buffer) < length:
            self.buffer += self._recv()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        assert data, "the server closed the connection"
        return data

    def close(self) -> None:
        self.sock.close()


def test_an_answer_is_plain_http_with_uvicorns_headers_and_the_connection_carries_the_next_poll(
    server: ConfigServer,
) -> None:
    assert router._UVICORN_CYCLE is not None, "uvicorn's httptools cycle moved: answers take two writes"
    connection = Connection(server)
    try:
        status, headers, body = connection.get("namespace=demo&app=shop")
        assert status == b"HTTP/1.1 200 OK"
        assert headers["content-type"] == "application/json"
        assert headers["server"] == "uvicorn" and headers["date"].endswith(" GMT")
        assert "connection" not in headers and "transfer-encoding" not in headers
        answer = json.loads(body)
        assert answer["config"]["warmup_seconds"] == 60
        version = answer["version"]
        started = time.monotonic()
        status, headers, body = connection.get("namespace=demo&app=shop&version=%s&timeout=0.5" % version)
        assert status == b"HTTP/1.1 304 Not Modified" and body == b""
        assert headers["content-length"] == "0" and "content-type" not in headers
        assert 0.45 <= time.monotonic() - started < 3
        status, _, body = connection.get("namespace=demo&app=shop&version=old")  # same connection again
        assert status == b"HTTP/1.1 200 OK" and json.loads(body)["version"] == version
        status, _, body = connection.get("namespace=demo&app=shop&version=%s&timeout=0" % version)
        assert status == b"HTTP/1.1 304 Not Modified"
        status, _, body = connection.get("namespace=d%65mo&app=shop&version=")  # quoted: parse_qs
        assert json.loads(body)["version"] == version
        status, _, body = connection.get("namespace=demo&app=shop", method="HEAD")  # no body follows
        assert status == b"HTTP/1.1 405 Method Not Allowed" and body == b""
        status, _, body = connection.get("namespace=demo&app=shop")
        assert status == b"HTTP/1.1 200 OK" and json.loads(body)["version"] == version
    finally:
        connection.close()


def test_a_change_wakes_every_parked_waiter_and_leaves_no_waiter_behind() -> None:
    async def scenario() -> None:
        changes = Changes()
        changes.bind(asyncio.get_running_loop())
        generation = changes.generation
        waiters = [asyncio.ensure_future(changes.wait(generation, 30)) for _ in range(1000)]
        await asyncio.sleep(0)
        assert len(changes._waiters) == 1000
        changes.notify()
        assert await asyncio.gather(*waiters) == [True] * 1000
        assert not changes._waiters

    asyncio.run(scenario())


def test_waiters_that_time_out_or_are_cancelled_leave_nothing_behind() -> None:
    async def scenario() -> None:
        changes = Changes()
        generation = changes.generation
        started = time.monotonic()
        assert await asyncio.gather(*(changes.wait(generation, 0.05) for _ in range(100))) == [False] * 100
        assert time.monotonic() - started < 5
        assert not changes._waiters
        parked = asyncio.ensure_future(changes.wait(generation, 30))
        await asyncio.sleep(0)
        parked.cancel()
        with pytest.raises(asyncio.CancelledError):
            await parked
        assert not changes._waiters

    asyncio.run(scenario())


def test_a_change_announced_from_another_thread_before_the_wait_is_not_lost() -> None:
    async def scenario() -> List[bool]:
        changes = Changes()
        changes.bind(asyncio.get_running_loop())
        results = []
        for _ in range(50):
            generation = changes.generation  # the waiter has read the state...
            other = threading.Thread(target=changes.notify)  # ...a publisher changes it...
            other.start()
            other.join()
            results.append(await changes.wait(generation, 5))  # ...and the wait returns at once
        return results

    started = time.monotonic()
    assert asyncio.run(scenario()) == [True] * 50
    assert time.monotonic() - started < 5
