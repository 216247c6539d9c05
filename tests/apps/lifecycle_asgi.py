"""The ASGI twin of lifecycle_wsgi.py (uvicorn), framework-free so it starts fast."""

import asyncio
import json
import os
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print("lifecycle_asgi: lifespan shutdown ran", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    if path == "/healthz":
        failing = os.path.exists(os.environ.get("APP_PROBE_FAIL_FILE", "/nonexistent"))
        await send(
            {
                "type": "http.response.start",
                "status": 503 if failing else 200,
                "headers": [(b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/slow":
        await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
    if path == "/stream":
        chunks, delay = int(query.get("chunks", ["5"])[0]), float(query.get("delay", ["0.2"])[0])
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for i in range(chunks):
            await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": ("chunk %d\n" % i).encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    data = json.dumps({"path": path, "pid": os.getpid()}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
