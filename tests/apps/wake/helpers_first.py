"""A WSGI app that starts a multiprocessing helper before its real server listens.

``manager``: ``multiprocessing.Manager()`` (its server process listens on a Unix
socket); ``forkserver``: a process started through the forkserver (which listens on
a Unix socket too). Then, after ``HOLD`` seconds (argv[2]), the real server listens
on a free TCP port and prints ``listening PID PORT``. ``GET /slow?S`` answers after
S seconds.
"""

import multiprocessing
import os
import sys
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def noop():
    pass


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ.get("QUERY_STRING") or "1"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


if __name__ == "__main__":
    helper = sys.argv[1]
    if helper == "manager":
        manager = multiprocessing.Manager()
        shared = manager.dict(started=time.time())
    else:
        context = multiprocessing.get_context("forkserver")
        process = context.Process(target=noop)
        process.start()
        process.join()
    print("helper-started", flush=True)
    time.sleep(float(sys.argv[2]))
    server = make_server("127.0.0.1", 0, app, server_class=Server, handler_class=QuietHandler)
    print("listening", os.getpid(), server.server_address[1], flush=True)
    server.serve_forever()
