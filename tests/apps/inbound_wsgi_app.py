"""A framework-free WSGI app for the tests of counting in gunicorn's worker (no layer around the app)."""

import json
import os
import sys
import tempfile
import time
from urllib.parse import parse_qs


def _query(environ, name, default):
    return parse_qs(environ.get("QUERY_STRING", "")).get(name, [default])[0]


def _json(start_response, data):
    body = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/frames":
        names = []
        frame = sys._getframe()
        while frame is not None:
            names.append(frame.f_code.co_name)
            frame = frame.f_back  # type: ignore[assignment]
        return _json(start_response, {"frames": names})
    if path == "/stream":
        chunks, delay = int(_query(environ, "chunks", "5")), float(_query(environ, "delay", "0.2"))
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            for i in range(chunks):
                time.sleep(delay)
                yield ("chunk %d\n" % i).encode()

        return body()
    if path == "/tag":
        context = sys.modules.get("_pilotfish_agent.tags.context")
        return _json(start_response, {"tag": context.current_tag() if context is not None else "no agent"})
    if path == "/fail":
        raise RuntimeError("the app failed")
    if path == "/file":
        handle = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the server through the file wrapper
        handle.write(b"from a file\n" * 100)
        handle.seek(0)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "1200")])
        return environ["wsgi.file_wrapper"](handle)
    return _json(start_response, {"path": path, "pid": os.getpid()})
