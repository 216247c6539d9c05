"""A gRPC server with generic (protobuf-free) handlers: unary Echo and streaming Count.

Usage: python grpc_app.py PORT
"""

import sys
import time
from concurrent import futures

import grpc


def echo(request, context):
    delay = dict(context.invocation_metadata()).get("x-delay")
    if delay:
        time.sleep(float(delay))
    return request


def count(request, context):
    for i in range(int(request or b"3")):
        time.sleep(0.1)
        yield b"%d" % i


def main():
    handler = grpc.method_handlers_generic_handler(
        "demo.Demo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Count": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:%s" % sys.argv[1])
    server.start()
    print("grpc serving on %d" % port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
