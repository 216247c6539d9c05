"""A FastAPI app with the endpoints the tests use."""

import asyncio
import os
import sys

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/")
async def index():
    return {"path": "/", "pid": os.getpid()}


@app.get("/slow")
async def slow(seconds: float = 1.0):
    await asyncio.sleep(seconds)
    return {"path": "/slow", "pid": os.getpid()}


@app.get("/stream")
async def stream(chunks: int = 5, delay: float = 0.2):
    async def body():
        for i in range(chunks):
            await asyncio.sleep(delay)
            yield "chunk %d\n" % i

    return StreamingResponse(body(), media_type="text/plain")


@app.get("/headers")
async def headers(request: Request):
    return {k.lower(): v for k, v in request.headers.items()}


@app.get("/healthz")
async def healthz():
    return "ok"


@app.get("/subprocess")
def run_subprocess():
    from subprocess_probe import run_child

    return run_child()


@app.get("/agent-modules")
async def agent_modules():
    return {"modules": sorted(name for name in sys.modules if name.startswith("_pilotfish_agent"))}
