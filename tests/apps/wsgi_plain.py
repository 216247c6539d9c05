"""A framework-free WSGI app (waitress, wsgiref, gunicorn) with the endpoints tests use."""

import json
import os
import time
from urllib.parse import parse_qs


def _query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
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
    if path == "/headers":
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        data = json.dumps(headers, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
    data = json.dumps({"path": path, "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
