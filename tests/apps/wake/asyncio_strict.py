"""An asyncio app that fails every blocking file or network call made on its event loop.

Like the blocking-call detectors of aiohttp's test suite (blockbuster) and Home
Assistant: the calls below raise when the thread that runs the loop makes them. The
app listens several times (one server per argv port count), then prints
``listening PID PORT...``; ``GET /flagged`` answers the blocking calls it caught.

Argument: how many servers to start. With ``FAULT=status-thread`` in the environment,
the agent's status server thread cannot start (after its socket is bound): a wake
that fails. (No room for shared memory is no failure: the agent counts privately.)
"""

import asyncio
import builtins
import io
import json
import mmap
import os
import socket
import sys
import threading
import time

flagged: list = []
fault_calls: list = []
_loop_thread: list = [None]


def _on_the_loop():
    if threading.get_ident() != _loop_thread[0]:
        return False
    try:
        return asyncio.events._get_running_loop() is not None
    except Exception:
        return False


def _guard(owner, name):
    original = getattr(owner, name)

    def guarded(*args, **kwargs):
        if _on_the_loop():
            flagged.append("%s.%s" % (getattr(owner, "__name__", owner), name))
            raise RuntimeError("blocking call to %s on the event loop" % name)
        return original(*args, **kwargs)

    setattr(owner, name, guarded)


for _owner, _name in (
    (os.path, "isdir"),
    (os.path, "exists"),
    (os, "access"),
    (os, "stat"),
    (os, "open"),
    (os, "mkdir"),
    (os, "makedirs"),
    (os, "replace"),
    (os, "readlink"),
    (builtins, "open"),
    (io, "open"),
    (time, "sleep"),
    (socket, "getaddrinfo"),
    (mmap, "mmap"),
):
    _guard(_owner, _name)

if os.environ.get("FAULT") == "status-thread":
    _thread_start = threading.Thread.start

    def _broken_start(self):
        if self.name == "pilotfish-status":
            fault_calls.append(1)
            raise RuntimeError("injected fault: the status server thread cannot start")
        return _thread_start(self)

    threading.Thread.start = _broken_start  # type: ignore[method-assign]


async def handle(reader, writer):
    request = await reader.readline()
    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
        pass
    path = request.split()[1].decode() if len(request.split()) > 1 else "/"
    if path == "/flagged":
        body = json.dumps({"flagged": flagged, "fault_calls": len(fault_calls)}).encode()
    else:
        body = b"ok"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


async def main(count):
    _loop_thread[0] = threading.get_ident()
    servers = []
    for _ in range(count):
        servers.append(await asyncio.start_server(handle, "127.0.0.1", 0))
        await asyncio.sleep(0.05)
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print("listening", os.getpid(), *ports, flush=True)
    await asyncio.sleep(3600)


asyncio.run(main(int(sys.argv[1])))
