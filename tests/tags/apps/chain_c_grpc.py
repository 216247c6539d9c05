"""Hop 3 of the tag chain: a sync grpc server; each call reaches the capture server
with urllib in a new thread and with aiohttp in an asyncio task."""

import asyncio
import os
import threading
import urllib.request
from concurrent import futures

import aiohttp
import grpc

CAPTURE = os.environ["CHAIN_CAPTURE"]


def with_urllib_in_thread(rid):
    def get():
        urllib.request.urlopen(CAPTURE + "/c-urllib-thread?id=" + rid, timeout=20).read()

    thread = threading.Thread(target=get)
    thread.start()
    thread.join(30)


async def with_aiohttp_in_task(rid):
    async with aiohttp.ClientSession() as session:

        async def get():
            async with session.get(CAPTURE + "/c-aiohttp-task?id=" + rid) as response:
                await response.read()

        await asyncio.ensure_future(get())


def call(request, context):
    rid = request.decode()
    with_urllib_in_thread(rid)
    asyncio.run(with_aiohttp_in_task(rid))
    return b"c"


def main():
    server = grpc.server(futures.ThreadPoolExecutor(8))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "chain.C", {"Call": grpc.unary_unary_rpc_method_handler(call)}
            ),
        )
    )
    server.add_insecure_port("127.0.0.1:%s" % os.environ["CHAIN_PORT"])
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
