"""A script that makes one call with each client library and concurrency style.

Usage: ``python outbound_app.py CAPTURE_URL [TAG]``. Under the agent, a TAG
argument plays the part of the inbound wrapper (it sets the request's tag);
then every call below must arrive tagged. Without TAG (or without the agent)
the calls must arrive exactly as the libraries send them on their own.
"""

import asyncio
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import httpx
import requests

URL = sys.argv[1]
TAG = sys.argv[2] if len(sys.argv) > 2 else None


def via_requests_in_pool():
    with ThreadPoolExecutor(2) as pool:
        pool.submit(requests.get, URL + "/requests-pool", timeout=5).result()


def via_urllib_in_thread():
    thread = threading.Thread(target=lambda: urllib.request.urlopen(URL + "/urllib-thread", timeout=5).read())
    thread.start()
    thread.join(10)


async def via_async_clients():
    async with httpx.AsyncClient() as client:
        await asyncio.gather(asyncio.create_task(client.get(URL + "/httpx-task", timeout=5)))
    async with aiohttp.ClientSession() as session:

        async def get():
            async with session.get(URL + "/aiohttp-task") as response:
                await response.read()

        await asyncio.ensure_future(get())
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: httpx.get(URL + "/httpx-executor", timeout=5))


def main():
    if TAG is not None:
        from _pilotfish_agent.tags.context import CURRENT_TAG

        CURRENT_TAG.set(TAG)
    via_requests_in_pool()
    via_urllib_in_thread()
    asyncio.run(via_async_clients())
    print("done")


main()
