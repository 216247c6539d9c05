"""A FastAPI app for the tests of counting inside the server (no ASGI layer around the app)."""

import asyncio
import sys

from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import StreamingResponse

app = FastAPI()
done = {"background": 0}


@app.get("/")
async def index():
    return {"path": "/"}


@app.get("/frames")
async def frames():
    """The functions on the stack under this handler: shows whether a wrapper runs around the app."""
    names = []
    frame = sys._getframe()
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back  # type: ignore[assignment]
    return {"frames": names}


@app.get("/background")
async def background(tasks: BackgroundTasks, seconds: float = 1.0):
    async def later():
        await asyncio.sleep(seconds)
        done["background"] += 1

    tasks.add_task(later)
    return {"scheduled": seconds}


@app.get("/done")
async def finished():
    return done


@app.get("/slow")
async def slow(seconds: float = 1.0):
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/stream")
async def stream(chunks: int = 5, delay: float = 0.2):
    async def body():
        for i in range(chunks):
            await asyncio.sleep(delay)
            yield "chunk %d\n" % i

    return StreamingResponse(body(), media_type="text/plain")


def _h11_subclass():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class OwnProtocol(H11Protocol):
        """A protocol class of the app's own: uvicorn serves it, the agent wraps the app instead."""

    return OwnProtocol


OwnProtocol = _h11_subclass()
