"""Hop 2 of the tag chain: FastAPI under uvicorn; in asyncio tasks it calls the capture server
with httpx.AsyncClient and hop 3 with a grpc.aio channel."""

import asyncio
import os

import grpc
import grpc.aio
import httpx
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()
NEXT = os.environ["CHAIN_NEXT"]
CAPTURE = os.environ["CHAIN_CAPTURE"]
_channel = None


def channel():
    global _channel
    if _channel is None:
        _channel = grpc.aio.insecure_channel(NEXT)
    return _channel


async def call_c(rid):
    reply = await channel().unary_unary("/chain.C/Call")(rid.encode(), timeout=20)
    return reply.decode()


async def call_capture(rid):
    async with httpx.AsyncClient() as client:
        await client.get(CAPTURE + "/b-httpx-task", params={"id": rid}, timeout=20)


@app.get("/b", response_class=PlainTextResponse)
async def b(id: str):
    to_c = asyncio.create_task(call_c(id))
    await asyncio.gather(asyncio.create_task(call_capture(id)), to_c)
    return "b>" + to_c.result()
