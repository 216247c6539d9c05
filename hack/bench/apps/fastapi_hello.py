"""Hello-world FastAPI app for the requests/s benchmark (served by uvicorn, one process).

``/`` is the measured route (FastAPI's own first example). ``/_bench/agents`` lets
the harness check, before it measures, that the configuration it thinks it runs is
the one loaded in the server process.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def root() -> dict:
    return {"message": "Hello World"}


@app.get("/_bench/agents")
async def agents() -> dict:
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from agents_probe import loaded_agents

    return loaded_agents(app)
