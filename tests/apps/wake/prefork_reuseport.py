"""A prefork server that forks before anyone listens: every worker binds the same port
with SO_REUSEPORT and listens on its own (as servers built on SO_REUSEPORT do).

argv: port, number of workers. Prints ``forked PID...`` (the workers).
"""

import os
import socket
import sys
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class ReusePortServer(WSGIServer):
    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


port, workers = int(sys.argv[1]), int(sys.argv[2])
children = []
for _ in range(workers):
    pid = os.fork()
    if pid == 0:
        make_server(
            "127.0.0.1", port, app, server_class=ReusePortServer, handler_class=QuietHandler
        ).serve_forever()
        os._exit(0)
    children.append(pid)
print("forked", *children, flush=True)
while True:
    time.sleep(3600)
