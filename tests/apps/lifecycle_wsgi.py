"""A WSGI app for the lifecycle tests (gunicorn): slow and streaming requests, a switchable probe.

``/healthz`` answers 503 while the file named by ``APP_PROBE_FAIL_FILE`` exists, so a test
can make the app's own readiness probe fail and recover from the outside.
"""

import json
import os
import time
from urllib.parse import parse_qs


def _query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        failing = os.path.exists(os.environ.get("APP_PROBE_FAIL_FILE", "/nonexistent"))
        start_response("503 Service Unavailable" if failing else "200 OK", [("Content-Length", "0")])
        return [b""]
    if path == "/slow":
        time.sleep(float(_query(environ, "seconds", "1")))
    if path == "/stream":
        chunks, delay = int(_query(environ, "chunks", "5")), float(_query(environ, "delay", "0.2"))
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            for i in range(chunks):
                time.sleep(delay)
                yield ("chunk %d\n" % i).encode()

        return body()
    data = json.dumps({"path": path, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
