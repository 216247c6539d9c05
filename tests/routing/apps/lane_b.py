"""Service B (one baseline version only): FastAPI under uvicorn; calls Service ``c`` with httpx."""

import os

import httpx
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()
C = os.environ["LANE_C"]
client = httpx.AsyncClient(timeout=20)  # one keep-alive pool for every request, gray or not


@app.get("/b", response_class=PlainTextResponse)
async def b(id: str):
    try:
        response = await client.get(C + "/c", params={"id": id})
    except httpx.HTTPError as problem:
        return PlainTextResponse("b!%s: %s" % (type(problem).__name__, problem), status_code=502)
    return "b>" + response.text
