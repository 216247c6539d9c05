"""The shop's checkout: FastAPI under uvicorn (2 workers). It calls inventory with httpx, by Service name."""

from __future__ import annotations

import os
from typing import Any, Dict

import httpx
from fastapi import FastAPI

app = FastAPI()
INVENTORY = os.environ.get("INVENTORY_URL", "http://inventory/stock")


@app.get("/checkout")
async def checkout() -> Dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(INVENTORY)
    answer.raise_for_status()
    return {"chain": [os.environ.get("POD_NAME", "checkout")] + answer.json()["chain"]}
